"""Seed a control-plane database for dashboard tests with bulk inserts.

Rows go straight into the tables (SQLAlchemy Core executemany), so a database with 1,000 jobs
and 1,000,000 metric points is written in seconds. The numbers are generated from a seeded
RNG and returned in `Seeded`, so tests can compare what a page shows with what was written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import sqlalchemy as sa

from backend.campaigns import DEMO_CONFIG, validate_config
from backend.db import Attempt, Campaign, FitResult, Job, MetricPoint, ResourceSample, get_engine, init_db

STATES = ("SUCCEEDED", "RUNNING", "PENDING", "FAILED", "PREEMPTED", "CANCELLED", "LAUNCHING")
NPS = ("m4l_scale", "bkg_norm", "gg_scale", "lumi", "jes")


@dataclass(frozen=True)
class Seeded:
    campaign_id: int
    job_ids: list[int]
    train_job_ids: list[int]
    n_metric_points: int
    mu_hat: float
    sigma: float
    state_counts: dict[str, int] = field(default_factory=dict)
    cost: float = 0.0
    gpu_hours: float = 0.0


def fit_payloads(rng: np.random.Generator, mu_hat: float = 1.05, sigma: float = 0.21) -> dict[str, dict]:
    """Results of fit, impacts, scan and toys jobs in the shape the fit engine writes."""
    pulls = {n: float(rng.normal(0, 0.5)) for n in NPS}
    errors = {n: float(rng.uniform(0.6, 1.0)) for n in NPS}
    names = ["mu", *NPS]
    a = rng.normal(size=(len(names), len(names)))
    cov = a @ a.T + len(names) * np.eye(len(names))
    d = np.sqrt(np.diag(cov))
    corr = cov / np.outer(d, d)
    mus = np.linspace(0.0, 2.0, 21)
    return {
        "fit": {"poi": "mu", "data": "asimov", "bestfit": {"mu": mu_hat, **pulls},
                "errors": {"mu": sigma, **errors}, "correlation": {"names": names, "matrix": corr.tolist()}},
        "impacts": {"impacts": [{"name": n, "prefit_up": 0.1 * (i + 1), "prefit_down": -0.09 * (i + 1),
                                 "postfit_up": 0.08 * (i + 1), "postfit_down": -0.07 * (i + 1)}
                                for i, n in enumerate(NPS)]},
        "scan": {"scan": {"values": mus.tolist(), "q": (((mus - mu_hat) / sigma) ** 2).tolist()}},
        "toys": {"toys": {"pulls": rng.normal(0, 1, 200).tolist()}},
    }


def seed(url: str, *, n_jobs: int = 12, members_per_job: int = 2, steps: int = 50,
         metric_names: tuple[str, ...] = ("train_loss", "val_loss"), resource_points: int = 20,
         with_fit: bool = True, name: str = "seeded", seed_value: int = 0,
         train_states: tuple[str, ...] = STATES, fit_states: dict[str, str] | None = None) -> Seeded:
    """Write one campaign with `n_jobs` train jobs (plus fit jobs) and their metrics.

    Train job i gets state train_states[i % len]; fit-like jobs are SUCCEEDED with results
    unless `fit_states` names another state (PENDING ones are held, without results).
    """
    fit_states = fit_states or {}
    rng = np.random.default_rng(seed_value)
    engine = get_engine(url)
    init_db(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        cid = conn.execute(sa.insert(Campaign.__table__).values(
            name=name, config=validate_config({**DEMO_CONFIG, "name": name}).data, config_hash="0" * 64, status="ACTIVE", budget_usd=100.0,
            launcher="local", created_at=now - timedelta(days=2), updated_at=now,
        )).inserted_primary_key[0]
        jobs = []
        for i in range(n_jobs):
            state = train_states[i % len(train_states)]
            jobs.append({"campaign_id": cid, "name": f"train-{i:04d}", "kind": "train", "task": f"task{i % 3}",
                         "members": list(range(members_per_job)), "status": state, "desired_state": "RUN",
                         "current_attempt": 1 + (i % 2), "retries": i % 2, "recoveries": i % 3,
                         "machine_type": "g2-standard-4" if i % 2 else "n1-standard-8",
                         "gpu_type": "nvidia-l4" if i % 2 else "nvidia-tesla-t4", "gpu_count": 1,
                         "spot": bool(i % 2), "created_at": now, "updated_at": now})
        fit_kinds = ("fit", "impacts", "scan", "toys") if with_fit else ()
        for kind in fit_kinds:
            jobs.append({"campaign_id": cid, "name": kind, "kind": kind, "task": None, "members": [],
                         "status": fit_states.get(kind, "SUCCEEDED"),
                         "desired_state": "HOLD" if fit_states.get(kind) == "PENDING" else "RUN",
                         "current_attempt": 0 if fit_states.get(kind) == "PENDING" else 1, "retries": 0,
                         "recoveries": 0, "machine_type": "local", "gpu_type": None, "gpu_count": 0,
                         "spot": False, "created_at": now, "updated_at": now})
        jobs = [{"np_subset": [], "seeds": [], "depends_on": [], "spec": {}, "zones": [], **j} for j in jobs]
        conn.execute(sa.insert(Job.__table__), jobs)
        rows = conn.execute(sa.select(Job.__table__.c.id, Job.__table__.c.kind, Job.__table__.c.status)
                            .where(Job.__table__.c.campaign_id == cid).order_by(Job.__table__.c.id)).all()
        job_ids = [r.id for r in rows]
        train_ids = [r.id for r in rows if r.kind == "train"]
        attempts, cost, gpu_hours = [], 0.0, 0.0
        for k, r in enumerate(rows):
            if r.status == "PENDING" and r.kind != "train":
                continue
            hours = 0.5 + (k % 4) * 0.25
            price = 0.7 if k % 2 else 0.38
            launched = now - timedelta(days=k % 2, hours=hours)
            attempts.append({"job_id": r.id, "attempt_no": 1, "status": r.status, "launcher": "local",
                             "machine_type": "g2-standard-4" if k % 2 else "n1-standard-8",
                             "gpu_type": "nvidia-l4", "gpu_count": 1, "spot": bool(k % 2),
                             "created_at": launched, "launched_at": launched, "ended_at": launched + timedelta(hours=hours),
                             "price_per_hour": price, "cost_usd": price * hours, "gpu_hours": hours})
            cost += price * hours
            gpu_hours += hours
        conn.execute(sa.insert(Attempt.__table__), attempts)
        n_points = 0
        batch: list[dict] = []
        step_grid = np.arange(steps)
        for j in train_ids:
            for m in range(members_per_job):
                for name_i, metric in enumerate(metric_names):
                    values = (1.0 + 0.1 * name_i) / (1.0 + 0.05 * step_grid) + 0.02 * rng.random(steps)
                    batch.extend({"job_id": j, "name": metric, "member": m, "step": int(s), "attempt_no": 1,
                                  "value": float(v)} for s, v in zip(step_grid, values))
                    if len(batch) >= 100_000:
                        conn.execute(sa.insert(MetricPoint.__table__), batch)
                        n_points += len(batch)
                        batch = []
        if batch:
            conn.execute(sa.insert(MetricPoint.__table__), batch)
            n_points += len(batch)
        samples = []
        for j in train_ids[: min(len(train_ids), 50)]:
            for t in range(resource_points):
                samples.append({"job_id": j, "attempt_no": 1, "time": now - timedelta(seconds=30 * (resource_points - t)),
                                "cpu_percent": float(rng.uniform(50, 100)), "rss_bytes": int(rng.uniform(1e9, 2e9)),
                                "gpus": [{"index": 0, "util_percent": float(rng.uniform(60, 100)),
                                          "memory_bytes": int(8e9), "memory_total_bytes": int(24e9),
                                          "power_w": float(rng.uniform(50, 70))}]})
        if samples:
            conn.execute(sa.insert(ResourceSample.__table__), samples)
        mu_hat, sigma = 1.05, 0.21
        if with_fit:
            payloads = fit_payloads(rng, mu_hat, sigma)
            fit_rows = [{"job_id": r.id, "campaign_id": cid, "kind": r.kind, "payload": payloads[r.kind],
                         "mu_hat": mu_hat if r.kind == "fit" else None, "sigma": sigma if r.kind == "fit" else None,
                         "created_at": now}
                        for r in rows if r.kind in payloads and r.status == "SUCCEEDED"]
            conn.execute(sa.insert(FitResult.__table__), fit_rows)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    return Seeded(campaign_id=cid, job_ids=job_ids, train_job_ids=train_ids, n_metric_points=n_points,
                  mu_hat=mu_hat, sigma=sigma, state_counts=counts, cost=cost, gpu_hours=gpu_hours)
