"""Dashboard test kit: page paths, and seeding a control-plane database with bulk inserts.

Rows go straight into the tables (SQLAlchemy Core executemany), so a database with 1,000 jobs
and 1,000,000 metric points is written in seconds. The numbers are generated from a seeded
RNG and returned in `Seeded`, so tests can compare what a page shows with what was written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from backend.campaigns import DEMO_CONFIG, validate_config
from backend.db import (
    Attempt,
    Campaign,
    FitResult,
    Job,
    MetricPoint,
    ResourceSample,
    get_engine,
    init_db,
)

REPO = Path(__file__).resolve().parents[2]


# the fit job's CLs limit as `sbi_engine.fit_jobs.limits_result` writes it (asymptotic, with the
# warning an interference model gets: `sbi_engine.fit.limits.yield_turning_points`)
LIMITS = {
    "poi": "mu",
    "cl": 0.95,
    "method": "asymptotic",
    "observed": 0.8142,
    "expected": {"-2": 0.0492, "-1": 0.1263, "0": 0.8142, "1": 1.1997, "2": 1.5525},
    "extra": {
        "yield_turning_points": [0.411],
        "asymptotic_warning": "the expected event count is not monotonic in mu on [0, 1.55]",
    },
    "discovery": {"q0": 0.0, "significance": 0.0, "p0": 0.5},
}


def page(name: str) -> str:
    """Absolute path of a page script (AppTest resolves relative paths against the caller)."""
    return str(REPO / "dashboard" / "pages" / f"{name}.py")


PAGE_TIMEOUT = 60  # seconds an AppTest run may take (first runs import plotly and pandas)


def run_page(name: str):
    """Run one dashboard page in Streamlit's AppTest; fail on any exception it raised."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(page(name), default_timeout=PAGE_TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


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


def engine_diagnostics() -> dict:
    """A diagnostics dict built with the engine's own dataclasses, so the keys are the real ones."""
    from sbi_engine.ratio.diagnostics import CalibrationCurve, Closure, Diagnostics, MemberLosses

    edges = (0.0, 0.5, 1.0)
    curves = (
        CalibrationCurve(None, edges, (0.25, 0.75), (0.27, 0.70), (0.01, 0.02), (1.0, 1.0), 2.5),
        CalibrationCurve(0, edges, (0.25, 0.75), (0.26, 0.74), (0.01, 0.02), (1.0, 1.0), 1.0),
    )
    closures = (
        Closure(
            "m4l",
            (0.0, 1.0, 2.0),
            (0.5, 0.5),
            (0.01, 0.01),
            (0.49, 0.51),
            (0.01, 0.01),
            (0.6, 0.4),
            2.0,
            1,
        ),
        Closure(
            "pt",
            (0.0, 1.0, 2.0, 3.0),
            (0.3, 0.3, 0.4),
            (0.01,) * 3,
            (0.3, 0.3, 0.4),
            (0.01,) * 3,
            (0.3, 0.3, 0.4),
            1.0,
            2,
        ),
    )
    losses = (MemberLosses(0, 0.60, 0.62, 0.61), MemberLosses(1, 0.60, 0.66, 0.65))
    d = Diagnostics(
        members=2,
        aggregate="mean_ratio",
        n_numerator=100,
        n_reference=100,
        normalization=1.03,
        normalization_error=0.01,
        member_normalization=(1.0, 1.1),
        auc=0.71,
        member_auc=(0.70, 0.72),
        roc_fpr=(0.0, 0.5, 1.0),
        roc_tpr=(0.0, 0.8, 1.0),
        calibration=curves,
        closure=closures,
        losses=losses,
        saturated_fraction=0.002,
        member_saturated_fraction=(0.0, 0.004),
    )
    return d.to_dict()


def fit_payloads(
    rng: np.random.Generator, mu_hat: float = 1.05, sigma: float = 0.21
) -> dict[str, dict]:
    """Result summaries of fit, impacts, scan and toys jobs, built with the engine's own result
    classes in the layout of `sbi_engine.fit_jobs.run_fit_job`, so the keys are the real ones."""
    from sbi_engine.fit.impacts import Impact
    from sbi_engine.fit.results import FitResult, to_jsonable
    from sbi_engine.fit.scan import Scan

    names = ("mu", *NPS)
    a = rng.normal(size=(len(names), len(names)))
    corr = np.corrcoef(a @ a.T + len(names) * np.eye(len(names)))
    errs = np.array([sigma, *rng.uniform(0.6, 1.0, len(NPS))])
    cov = corr * np.outer(errs, errs)
    theta = np.array([mu_hat, *rng.normal(0, 0.5, len(NPS))])
    fr = FitResult(
        names=names,
        theta=theta,
        covariance=cov,
        hessian=2 * np.linalg.inv(cov),
        q_min=123.4,
        edm=1e-9,
        converged=True,
        status=0,
        message="converged",
        n_iter=7,
    )
    pulls = {
        n: {
            "value": float(theta[i + 1]),
            "aux": 0.0,
            "pull": float(theta[i + 1]),
            "constraint": float(errs[i + 1]),
        }
        for i, n in enumerate(NPS)
    }
    cov_impacts = [
        Impact(
            "mu", n, 0.1 * (i + 1), -0.09 * (i + 1), 0.08 * (i + 1), -0.07 * (i + 1), "covariance"
        )
        for i, n in enumerate(NPS)
    ]
    refit = [
        Impact("mu", n, 0.11 * (i + 1), -0.1 * (i + 1), 0.085 * (i + 1), -0.075 * (i + 1), "refit")
        for i, n in enumerate(NPS[:2])
    ]
    base = {
        "mu_true": 1.0,
        "mu_hat": mu_hat,
        "sigma": sigma,
        "converged": True,
        "fit": fr.to_dict(),
        "pulls": pulls,
        "impacts_covariance": [i.to_dict() for i in cov_impacts],
        "breakdown": {"mu": {"total": sigma, "stat": 0.8 * sigma, "syst": 0.6 * sigma}},
        "uncertainty": {
            "hesse": sigma,
            "nn": 0.3 * sigma,
            "nn_se": 0.1 * sigma,
            "sim": 0.4 * sigma,
            "sim_se": 0.05 * sigma,
            "total": sigma * float(np.sqrt(1.25)),
            "included": ["nn", "sim"],
        },
        "noise_shrinkage": [
            {"task": "SBI_vs_B", "lambda": 0.636, "noise": 0.0072, "residual": 0.0119},
            {"task": "S_vs_B", "lambda": 1.0, "noise": 0.001, "residual": 0.5},
        ],
        "limits": LIMITS,
        "expected": {
            "mu": 1.0,
            "data": "asimov at mu=1 (model expectation, nuisances at nominal)",
            "mu_hat": 1.0,
            "mu_err_lo": -0.25,
            "mu_err_hi": 0.3,
            "discovery": {"significance": 4.1},
        },
    }
    mus = np.linspace(0.0, 2.0, 21)
    scan = Scan(
        "mu",
        mus,
        ((mus - mu_hat) / sigma) ** 2,
        np.ones(21, bool),
        mu_hat,
        {"68": (None, None), "95": (None, None)},
    )
    toy_pulls = rng.normal(0, 1, 200)
    toys = {
        "poi": "mu",
        "truth": 1.0,
        "n_toys": 200,
        "n_converged": 200,
        "pull_mean": float(toy_pulls.mean()),
        "pull_width": float(toy_pulls.std(ddof=1)),
        "coverage_hesse_68": float(np.mean(np.abs(toy_pulls) < 1)),
        "coverage_profile_68": 0.69,
        "coverage_profile_95": 0.95,
        "pulls": toy_pulls.tolist(),
    }
    return to_jsonable(
        {
            "fit": {"kind": "fit", **base},
            "impacts": {"kind": "impacts", **base, "impacts_refit": [i.to_dict() for i in refit]},
            "scan": {"kind": "scan", **base, "scan": scan.to_dict()},
            "toys": {"kind": "toys", **base, "toys": toys},
        }
    )


def seed(
    url: str,
    *,
    n_jobs: int = 12,
    members_per_job: int = 2,
    steps: int = 50,
    metric_names: tuple[str, ...] = ("train_loss", "val_loss"),
    resource_points: int = 20,
    with_fit: bool = True,
    name: str = "seeded",
    seed_value: int = 0,
    train_states: tuple[str, ...] = STATES,
    fit_states: dict[str, str] | None = None,
    with_diagnostics: bool = False,
    jobs_per_ensemble: int | None = None,
) -> Seeded:
    """Write one campaign with `n_jobs` train jobs (plus fit jobs) and their metrics.

    Train job i gets state train_states[i % len]; fit-like jobs are SUCCEEDED with results
    unless `fit_states` names another state (PENDING ones are held, without results).
    With `with_diagnostics`, every SUCCEEDED train job records `engine_diagnostics()`.
    With `jobs_per_ensemble`, train jobs are named and specified as the campaign expansion
    does (`train-<task>-g<grid>-m<first>-<last>`, spec params with the grid point and the train
    settings): ensemble e (jobs e*k .. e*k+k-1) is task e % 3 at grid point e // 3, whose
    width and learning rate differ.
    """
    fit_states = fit_states or {}
    rng = np.random.default_rng(seed_value)
    engine = get_engine(url)
    init_db(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        cid = conn.execute(
            sa.insert(Campaign.__table__).values(
                name=name,
                config=validate_config({**DEMO_CONFIG, "name": name}).data,
                config_hash="0" * 64,
                status="ACTIVE",
                budget_usd=100.0,
                launcher="local",
                created_at=now - timedelta(days=2),
                updated_at=now,
                launch_requested_at=now,
            )
        ).inserted_primary_key[0]
        jobs = []
        for i in range(n_jobs):
            state = train_states[i % len(train_states)]
            name_i, task_i, spec_i = f"train-{i:04d}", f"task{i % 3}", {}
            if jobs_per_ensemble:
                e, k = divmod(i, jobs_per_ensemble)
                task_i, gi = f"task{e % 3}", e // 3
                first = k * members_per_job
                name_i = f"train-{task_i}-g{gi}-m{first}-{first + members_per_job - 1}"
                point = {"width": 32 * (1 + gi % 4), "learning_rate": 1e-3 * (1 + gi // 4)}
                spec_i = {
                    "kind": "train",
                    "params": {
                        "task": task_i,
                        "grid_index": gi,
                        "grid_point": point,
                        "train": {
                            "hidden_layers": 2,
                            "batch_size": 512,
                            "max_steps": steps,
                            **point,
                            "seed": i,
                            "members": members_per_job,
                        },
                    },
                }
            jobs.append(
                {
                    "campaign_id": cid,
                    "name": name_i,
                    "kind": "train",
                    "task": task_i,
                    "spec": spec_i,
                    "members": list(range(members_per_job)),
                    "status": state,
                    "desired_state": "RUN",
                    "current_attempt": 1 + (i % 2),
                    "retries": i % 2,
                    "recoveries": i % 3,
                    "machine_type": "g2-standard-4" if i % 2 else "n1-standard-8",
                    "gpu_type": "nvidia-l4" if i % 2 else "nvidia-tesla-t4",
                    "gpu_count": 1,
                    "spot": bool(i % 2),
                    "created_at": now,
                    "updated_at": now,
                }
            )
        fit_kinds = ("fit", "impacts", "scan", "toys") if with_fit else ()
        for kind in fit_kinds:
            jobs.append(
                {
                    "campaign_id": cid,
                    "name": kind,
                    "kind": kind,
                    "task": None,
                    "members": [],
                    "status": fit_states.get(kind, "SUCCEEDED"),
                    "desired_state": "HOLD" if fit_states.get(kind) == "PENDING" else "RUN",
                    "current_attempt": 0 if fit_states.get(kind) == "PENDING" else 1,
                    "retries": 0,
                    "recoveries": 0,
                    "machine_type": "local",
                    "gpu_type": None,
                    "gpu_count": 0,
                    "spot": False,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        jobs = [
            {"np_subset": [], "seeds": [], "depends_on": [], "zones": [], "spec": {}, **j}
            for j in jobs
        ]
        conn.execute(sa.insert(Job.__table__), jobs)
        rows = conn.execute(
            sa.select(Job.__table__.c.id, Job.__table__.c.kind, Job.__table__.c.status)
            .where(Job.__table__.c.campaign_id == cid)
            .order_by(Job.__table__.c.id)
        ).all()
        job_ids = [r.id for r in rows]
        train_ids = [r.id for r in rows if r.kind == "train"]
        attempts, cost, gpu_hours = [], 0.0, 0.0
        for k, r in enumerate(rows):
            if r.status == "PENDING" and r.kind != "train":
                continue
            hours = 0.5 + (k % 4) * 0.25
            price = 0.7 if k % 2 else 0.38
            launched = now - timedelta(days=k % 2, hours=hours)
            attempts.append(
                {
                    "job_id": r.id,
                    "attempt_no": 1,
                    "status": r.status,
                    "launcher": "local",
                    "machine_type": "g2-standard-4" if k % 2 else "n1-standard-8",
                    "gpu_type": "nvidia-l4",
                    "gpu_count": 1,
                    "spot": bool(k % 2),
                    "created_at": launched,
                    "launched_at": launched,
                    "ended_at": launched + timedelta(hours=hours),
                    "price_per_hour": price,
                    "cost_usd": price * hours,
                    "gpu_hours": hours,
                }
            )
            cost += price * hours
            gpu_hours += hours
        conn.execute(sa.insert(Attempt.__table__), attempts)
        n_points = 0
        batch: list[dict] = []
        step_grid = np.arange(steps)
        for j in train_ids:
            for m in range(members_per_job):
                for name_i, metric in enumerate(metric_names):
                    values = (1.0 + 0.1 * name_i) / (1.0 + 0.05 * step_grid) + 0.02 * rng.random(
                        steps
                    )
                    batch.extend(
                        {
                            "job_id": j,
                            "name": metric,
                            "member": m,
                            "step": int(s),
                            "attempt_no": 1,
                            "value": float(v),
                        }
                        for s, v in zip(step_grid, values)
                    )
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
                samples.append(
                    {
                        "job_id": j,
                        "attempt_no": 1,
                        "time": now - timedelta(seconds=30 * (resource_points - t)),
                        "cpu_percent": float(rng.uniform(50, 100)),
                        "rss_bytes": int(rng.uniform(1e9, 2e9)),
                        "gpus": [
                            {
                                "index": 0,
                                "util_percent": float(rng.uniform(60, 100)),
                                "memory_bytes": int(8e9),
                                "memory_total_bytes": int(24e9),
                                "power_w": float(rng.uniform(50, 70)),
                            }
                        ],
                    }
                )
        if samples:
            conn.execute(sa.insert(ResourceSample.__table__), samples)
        mu_hat, sigma = 1.05, 0.21
        if with_fit:
            payloads = fit_payloads(rng, mu_hat, sigma)
            fit_rows = [
                {
                    "job_id": r.id,
                    "campaign_id": cid,
                    "kind": r.kind,
                    "payload": payloads[r.kind],
                    "mu_hat": mu_hat if r.kind == "fit" else None,
                    "sigma": sigma if r.kind == "fit" else None,
                    "created_at": now,
                }
                for r in rows
                if r.kind in payloads and r.status == "SUCCEEDED"
            ]
            conn.execute(sa.insert(FitResult.__table__), fit_rows)
        if with_diagnostics:
            diag = engine_diagnostics()
            tasks = dict(
                conn.execute(
                    sa.select(Job.__table__.c.id, Job.__table__.c.task).where(
                        Job.__table__.c.campaign_id == cid
                    )
                ).all()
            )
            conn.execute(
                sa.insert(FitResult.__table__),
                [
                    {
                        "job_id": r.id,
                        "campaign_id": cid,
                        "kind": "train",
                        "payload": {"task": tasks[r.id], "diagnostics": diag},
                        "mu_hat": None,
                        "sigma": None,
                        "created_at": now,
                    }
                    for r in rows
                    if r.kind == "train" and r.status == "SUCCEEDED"
                ],
            )
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    return Seeded(
        campaign_id=cid,
        job_ids=job_ids,
        train_job_ids=train_ids,
        n_metric_points=n_points,
        mu_hat=mu_hat,
        sigma=sigma,
        state_counts=counts,
        cost=cost,
        gpu_hours=gpu_hours,
    )


def failed_attempt_with_log(
    url: str, job_id: int, folder: Path, instance_id: str, log: str, failure_reason: str
) -> None:
    """Make the job's attempt a local run whose launcher log (``<folder>/logs/<instance>.log``
    on this host) holds ``log`` and whose failure reason is ``failure_reason``: what the job
    view shows as the attempt's output and traceback."""
    import socket

    (folder / "logs").mkdir(parents=True, exist_ok=True)
    (folder / "logs" / f"{instance_id}.log").write_text(log)
    with get_engine(url).begin() as conn:
        conn.execute(
            sa.update(Attempt.__table__)
            .where(Attempt.__table__.c.job_id == job_id)
            .values(
                launcher="local",
                instance_id=instance_id,
                launched_from=f"{socket.gethostname()}:{folder}",
                failure_reason=failure_reason,
            )
        )
