"""`nsbi bench controlplane`: the database side of the control plane at campaign scale.

For each database (a fresh SQLite file in WAL mode; a fresh schema in PostgreSQL) it:

1. creates one campaign of ~10,000 jobs through `service.create_campaign` (the real path:
   validation, expansion, bulk insert of jobs and DAG edges) and gives the jobs a realistic
   mix of states with attempts, costs and events (bulk inserts);
2. ingests ~1,000,000 metric points segment by segment through `jobs_repo.insert_metric_rows`
   (the controller's idempotent ingest; COPY + INSERT ... ON CONFLICT on PostgreSQL) and
   reports points per second, then re-ingests one segment to check it adds nothing;
3. times reconcile passes of `backend.controller.Controller.tick()` with a launcher that
   accepts launches without starting processes: ``reconcile_s`` is the first pass of a new
   controller, a single busy pass (it launches, requeues preempted jobs and cancels jobs that
   can never run, and polls the running ones); ``reconcile_followup`` lists the passes after
   it while the launcher reports no free slot, until one has nothing to do; and
   ``reconcile_idle_s`` is the median of 3 such idle passes (polling only); finally
   ``reconcile_warm_s`` times one more busy pass of the first one's shape (as many jobs marked
   PREEMPTED as it requeued, one cancel requested, launches allowed again) on the now warm
   controller. If the controller cannot be built, an equivalent pass over `jobs_repo` is
   timed instead (the JSON says which);
4. times the dashboard's main queries (median of several runs after a warm-up).

JSON: {"sqlite": {...}, "postgresql": {...}, "meta": {...}} where each database object has
jobs, metric_points, reconcile_s (with reconcile_stat saying how it was taken),
reconcile_idle_s, ingest_points_per_s and query_ms (named queries, ms).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col

QUERY_TARGET_MS = 200.0
DEFAULT_PG_URLS = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="FILE", help="write the report here (default: print it)")
    parser.add_argument(
        "--jobs", type=int, default=10_000, help="jobs in the campaign (default 10000)"
    )
    parser.add_argument(
        "--points", type=int, default=1_000_000, help="metric points to ingest (default 1000000)"
    )
    parser.add_argument(
        "--databases", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql"
    )
    parser.add_argument(
        "--pg-url",
        help="PostgreSQL URL (default: DATABASE_URL if PostgreSQL, else 127.0.0.1:5432/test)",
    )
    parser.add_argument(
        "--segment",
        type=int,
        default=5000,
        help="metric points per ingested segment (default 5000)",
    )
    parser.add_argument(
        "--running", type=int, default=64, help="jobs seeded as RUNNING (default 64)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per query (default 5)")
    parser.add_argument(
        "--no-controller", action="store_true", help="time the jobs_repo pass, not Controller.tick"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the state mix")


# --------------------------------------------------------------------------- config + seeding


def bench_config(n_jobs: int) -> dict[str, Any]:
    """A campaign config that expands into exactly `n_jobs` jobs (n_jobs >= 20): ratio tasks x
    grid x member packs for ~96% of them, one fit, impacts over each NP, and toy jobs filling
    the rest."""
    if n_jobs < 20:
        raise ValueError(f"--jobs must be >= 20, got {n_jobs}")
    n_syst = max(1, round(math.sqrt(n_jobs) / 2))
    n_tasks = 2 + 2 * n_syst
    grid = {"width": [32, 64], "learning_rate": [1e-3, 3e-4]} if n_jobs >= 1000 else {}
    n_grid = 4 if grid else 1
    fixed = 1 + n_syst
    packs = max(1, int(0.96 * n_jobs) // (n_tasks * n_grid))
    while n_tasks * n_grid * packs + fixed >= n_jobs and packs > 1:
        packs -= 1
    n_toy_jobs = n_jobs - n_tasks * n_grid * packs - fixed
    if n_toy_jobs < 1:
        raise ValueError(f"cannot build a campaign of exactly {n_jobs} jobs")

    def demo(process: str, seed: int, **alpha: float) -> dict[str, Any]:
        spec: dict[str, Any] = {"process": process, "n": 100_000, "seed": seed}
        if alpha:
            spec["alpha"] = alpha
        return {"demo": spec}

    return {
        "name": "bench",
        "description": "nsbi bench controlplane",
        "backend": {
            "launcher": "local",
            "machine_type": "local",
            "max_concurrency": 1000,
            "retry_limit": 2,
        },
        "processes": {"S": demo("S", 1), "SBI": demo("SBI", 2), "B": demo("B", 3)},
        "reference": "B",
        "systematics": [
            {
                "name": f"np{k:03d}",
                "process": "B",
                "up": demo("B", 10 + 2 * k, **{f"np{k:03d}": 1.0}),
                "down": demo("B", 11 + 2 * k, **{f"np{k:03d}": -1.0}),
            }
            for k in range(n_syst)
        ],
        "training": {"ensemble_size": 2 * packs, "members_per_job": 2, "grid": grid},
        "fit": {"enabled": True},
        "impacts": {"enabled": True, "nps_per_job": 1},
        "toys": {"enabled": True, "n_toys": 10 * n_toy_jobs, "toys_per_job": 10},
    }


@dataclass(frozen=True)
class Seeded:
    campaign_id: int
    n_jobs: int
    create_s: float
    seed_s: float
    train_job_ids: list[int]
    states: dict[str, int]


def _now() -> datetime:
    return datetime.now(UTC)


def seed_campaign(
    engine: Engine, n_jobs: int, n_running: int, rng: random.Random, store_uri: str
) -> Seeded:
    """Create the campaign (real path) and give its jobs a mix of states with attempts and events."""
    from backend import service
    from backend.db.models import Attempt, Event, Job
    from backend.states import JobStatus

    t0 = time.perf_counter()
    cid = service.create_campaign(bench_config(n_jobs), owner="bench", engine=engine)
    create_s = time.perf_counter() - t0
    service.request_launch(cid, engine=engine)
    t0 = time.perf_counter()
    with engine.begin() as conn:
        rows = conn.execute(
            sa.select(col(Job.id), col(Job.kind), col(Job.name))
            .where(col(Job.campaign_id) == cid)
            .order_by(col(Job.id))
        ).all()
        train = [r.id for r in rows if r.kind == "train"]
        n_train = len(train)
        # trainings: 45% succeeded, n_running running, 3% failed (retries used up), 1% preempted,
        # the rest pending; everything after the trainings stays pending (waits for the fit).
        order = list(train)
        rng.shuffle(order)
        n_succ, n_fail, n_pre = int(0.45 * n_train), int(0.03 * n_train), int(0.01 * n_train)
        groups = {
            JobStatus.SUCCEEDED: order[:n_succ],
            JobStatus.RUNNING: order[n_succ : n_succ + n_running],
            JobStatus.FAILED: order[n_succ + n_running : n_succ + n_running + n_fail],
            JobStatus.PREEMPTED: order[
                n_succ + n_running + n_fail : n_succ + n_running + n_fail + n_pre
            ],
        }
        now = _now()
        base = now - timedelta(days=2)
        attempts, events, job_updates = [], [], []
        name_of = {r.id: r.name for r in rows}
        for status, ids in groups.items():
            for jid in ids:
                n_att = {JobStatus.SUCCEEDED: rng.choice([1, 1, 1, 2]), JobStatus.FAILED: 3}.get(
                    status, 1
                )
                t = base + timedelta(seconds=rng.uniform(0, 36 * 3600))
                for no in range(1, n_att + 1):
                    last = no == n_att
                    st = status if last else JobStatus.PREEMPTED
                    if status is JobStatus.FAILED and not last:
                        st = JobStatus.FAILED
                    hours = rng.uniform(0.05, 0.5)
                    open_ = last and status is JobStatus.RUNNING
                    launched = now - timedelta(seconds=60) if open_ else t
                    ended = None if open_ else t + timedelta(hours=hours)
                    price = 0.35 if st is JobStatus.PREEMPTED or rng.random() < 0.5 else 0.85
                    attempts.append(
                        {
                            "job_id": jid,
                            "attempt_no": no,
                            "status": st.value,
                            "launcher": "local",
                            "instance_id": f"bench-{jid}-{no}",
                            "machine_type": "local",
                            "gpu_type": None,
                            "gpu_count": 1,
                            "spot": st is JobStatus.PREEMPTED,
                            "zone": None,
                            "region": None,
                            "created_at": launched,
                            "launched_at": launched,
                            "ended_at": ended,
                            "last_heartbeat": now - timedelta(seconds=5) if open_ else ended,
                            "exit_code": None if open_ else (0 if st is JobStatus.SUCCEEDED else 1),
                            "failure_reason": None
                            if st in (JobStatus.SUCCEEDED, JobStatus.RUNNING)
                            else f"bench {st.value.lower()}",
                            "price_per_hour": price,
                            "cost_usd": 0.0 if open_ else price * hours,
                            "gpu_hours": 0.0 if open_ else hours,
                            "ingest_cursor": {},
                        }
                    )
                    for frm, to in (
                        (JobStatus.PENDING, JobStatus.LAUNCHING),
                        (JobStatus.LAUNCHING, JobStatus.RUNNING),
                        *([(JobStatus.RUNNING, st)] if not open_ else []),
                    ):
                        events.append(
                            {
                                "campaign_id": cid,
                                "job_id": jid,
                                "attempt_no": no,
                                "time": launched,
                                "from_state": frm.value,
                                "to_state": to.value,
                                "reason": "bench",
                                "actor": "bench",
                                "detail": {},
                            }
                        )
                    if not last:
                        events.append(
                            {
                                "campaign_id": cid,
                                "job_id": jid,
                                "attempt_no": no,
                                "time": ended,
                                "from_state": st.value,
                                "to_state": JobStatus.PENDING.value,
                                "reason": "bench retry",
                                "actor": "bench",
                                "detail": {},
                            }
                        )
                    t = (ended or now) + timedelta(minutes=1)
                job_updates.append(
                    {
                        "_id": jid,
                        "_status": status.value,
                        "_cur": n_att,
                        "_rec": n_att - 1,
                        "_ret": n_att - 1 if status is JobStatus.FAILED else 0,
                        "_hb": now - timedelta(seconds=5) if status is JobStatus.RUNNING else None,
                        "_uri": f"{store_uri}/campaigns/bench-{cid}/jobs/{name_of[jid]}",
                    }
                )
        conn.execute(sa.insert(Attempt.__table__), attempts)
        conn.execute(sa.insert(Event.__table__), events)
        jt = Job.__table__
        conn.execute(
            sa.update(jt)
            .where(jt.c.id == sa.bindparam("_id"))
            .values(
                status=sa.bindparam("_status"),
                current_attempt=sa.bindparam("_cur"),
                recoveries=sa.bindparam("_rec"),
                retries=sa.bindparam("_ret"),
                last_heartbeat=sa.bindparam("_hb", type_=jt.c.last_heartbeat.type),
                uri=sa.bindparam("_uri"),
            ),
            job_updates,
        )
        states: dict[str, int] = dict(
            conn.execute(
                sa.select(col(Job.status), sa.func.count())
                .where(col(Job.campaign_id) == cid)
                .group_by(col(Job.status))
            ).all()
        )
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("ANALYZE"))
    return Seeded(cid, len(rows), create_s, time.perf_counter() - t0, train, states)


def metric_segments(
    job_ids: Sequence[int], n_points: int, segment: int, rng: random.Random
) -> list[tuple[int, list[dict]]]:
    """(job_id, rows) segments totalling n_points: one long job with 10% of the points (the
    worst case for the curves query), the rest spread over up to 900 jobs; 2 members x
    (train_loss, val_loss) per step, as a 2-member training job reports them."""
    from backend.jobs_repo import metric_rows

    long_job, others = job_ids[0], list(job_ids[1:901]) or [job_ids[0]]
    plan = [(long_job, n_points // 10)]
    rest = n_points - plan[0][1]
    per = rest // len(others)
    plan += [(j, per) for j in others]
    plan[-1] = (plan[-1][0], plan[-1][1] + rest - per * len(others))
    out = []
    for jid, n in plan:
        records = []
        for i in range(n):
            step, k = divmod(i, 4)
            member, name = divmod(k, 2)
            records.append(
                {
                    "member": member,
                    "step": step,
                    "epoch": step // 100,
                    "name": ("train_loss", "val_loss")[name],
                    "value": 1.0 / (1 + step) + 0.01 * rng.random(),
                }
            )
        rows = metric_rows(jid, 1, records)
        out += [(jid, rows[i : i + segment]) for i in range(0, len(rows), segment)]
    return out


# --------------------------------------------------------------------------- reconcile


class AcceptingLauncher:
    """A launcher that accepts every launch and reports every instance RUNNING; starts nothing.

    ``slots`` is what ``free_slots`` answers (None: no limit; 0 holds every launch back)."""

    def __init__(self, name: str = "local", slots: int | None = None) -> None:
        self.name = name
        self.slots = slots
        self.launched: list[str] = []

    def launch(self, request):
        from backend.launchers import LaunchHandle

        self.launched.append(request.instance_id)
        return LaunchHandle(instance_id=request.instance_id, launcher=self.name)

    def poll(self, instance_ids):
        from backend.launchers import InstanceState, InstanceStatus

        return {i: InstanceStatus(i, InstanceState.RUNNING) for i in instance_ids}

    def cancel(self, instance_id: str) -> None:
        return None

    def list_instances(self, campaign: str | None = None):
        return []

    def free_slots(self) -> int | None:
        return self.slots


def _detail(report: Any) -> dict[str, Any]:
    detail = {k: v for k, v in vars(report).items() if k != "errors"}
    detail["errors"] = list(report.errors)[:5]
    return detail


def _timed_tick(ctl: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    report = ctl.tick()
    return time.perf_counter() - t0, report


def _warm_busy_tick(
    engine: Engine, ctl: Any, launcher: AcceptingLauncher, first: Any
) -> tuple[float, dict[str, Any]]:
    """Give the campaign the first pass's work again (requeues and a cancel; the ready jobs
    are still there) and time one pass."""
    from backend.db.models import Job
    from backend.states import JobStatus

    with engine.begin() as conn:
        pending = (
            conn.execute(
                sa.select(col(Job.id))
                .where(col(Job.status) == JobStatus.PENDING, col(Job.kind) == "train")
                .order_by(col(Job.id).desc())
                .limit(first.retried + 1)
            )
            .scalars()
            .all()
        )
        conn.execute(
            sa.update(Job).where(col(Job.id).in_(pending[1:])).values(status=JobStatus.PREEMPTED)
        )
        conn.execute(
            sa.update(Job).where(col(Job.id).in_(pending[:1])).values(cancel_requested=True)
        )
    launcher.slots = None
    dt, rep = _timed_tick(ctl)
    return dt, _detail(rep)


IDLE_TICKS = 3
MAX_FOLLOWUP_TICKS = 5


def _controller_ticks(
    engine: Engine, store_dir: Path
) -> tuple[float, str, dict[str, Any], dict[str, Any]]:
    """The first (busy) pass of a new controller; then passes with no free launcher slot until
    one is idle, and the median of IDLE_TICKS idle passes. Returns (first pass seconds,
    implementation, its counts, extra JSON fields)."""
    from backend.controller import Controller

    store_dir.mkdir(parents=True, exist_ok=True)
    launcher = AcceptingLauncher("local")
    ctl = Controller(engine, f"file://{store_dir}", {"local": launcher})
    first_s, report = _timed_tick(ctl)
    launcher.slots = 0  # from here on nothing new launches: the queue drains to an idle pass
    followup = []
    for _ in range(MAX_FOLLOWUP_TICKS):
        dt, rep = _timed_tick(ctl)
        if not rep.busy() and not rep.errors:
            break
        followup.append({"s": round(dt, 4), **_detail(rep)})
    idle, idle_counts = [], None
    for _ in range(IDLE_TICKS):
        dt, rep = _timed_tick(ctl)
        idle.append(dt)
        idle_counts = _detail(rep)
    warm_s, warm = _warm_busy_tick(engine, ctl, launcher, report)
    extra = {
        "reconcile_stat": "first pass of a new controller: one busy pass, timed once (cold caches)",
        "reconcile_followup": followup,
        "reconcile_idle_s": round(statistics.median(idle), 4),
        "reconcile_idle_stat": f"median of {IDLE_TICKS} idle passes after the follow-up ones "
        f"(nothing to launch, retry or cancel; {len(launcher.launched)} launched "
        "instances plus the seeded RUNNING jobs polled)",
        "reconcile_idle_detail": idle_counts,
        "reconcile_warm_s": round(warm_s, 4),
        "reconcile_warm_stat": "one busy pass of the first pass's shape on the warm controller, timed once",
        "reconcile_warm_detail": warm,
    }
    return first_s, "backend.controller.Controller.tick (AcceptingLauncher)", _detail(report), extra


def _own_pass(engine: Engine) -> tuple[float, str, dict[str, Any]]:
    """The same queries and writes as one controller pass, through jobs_repo only."""
    from backend import jobs_repo, service
    from backend.db.engine import session_scope

    t0 = time.perf_counter()
    launched = 0
    with session_scope(engine) as s:
        out = jobs_repo.apply_simple_intents(s)
        half = jobs_repo.half_done_launches(s)
        running = jobs_repo.open_attempts(s)
        for job in jobs_repo.retryable_failed_jobs(s):
            jobs_repo.requeue(s, job, "automatic retry")
        active = jobs_repo.active_counts(s)
        for job in jobs_repo.ready_jobs(s, limit=32):
            if not service.budget_allows_launch(job.campaign_id, session=s).allowed:
                continue
            a = jobs_repo.begin_attempt(s, job, launcher="local", price_per_hour=0.0)
            jobs_repo.mark_launched(s, job, a, f"bench-{job.id}-{a.attempt_no}")
            launched += 1
        jobs_repo.settle_campaigns(s)
        jobs_repo.accrue_costs(s)
    dt = time.perf_counter() - t0
    return (
        dt,
        "jobs_repo pass (own equivalent of Controller.tick)",
        {
            "launched": launched,
            "cancelled": len(out["cancelled"]),
            "half_done": len(half),
            "running_polled": len(running),
            "active_campaigns": len(active),
        },
    )


# --------------------------------------------------------------------------- queries


def _time(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    fn()  # warm-up (plans, caches)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), max(times)


def time_queries(
    engine: Engine, seeded: Seeded, long_job: int, repeats: int
) -> tuple[dict[str, float], dict[str, float]]:
    from backend import service

    cid = seeded.campaign_id
    queries: dict[str, Callable[[], Any]] = {
        "campaign_list": lambda: service.list_campaigns(engine=engine),
        "campaign_detail": lambda: service.get_campaign(cid, engine=engine),
        "job_page": lambda: service.list_jobs(
            campaign_id=cid, offset=seeded.n_jobs // 2, limit=50, engine=engine
        ),
        "job_page_running": lambda: service.list_jobs(
            campaign_id=cid, states=["RUNNING"], limit=50, engine=engine
        ),
        "job_curves": lambda: service.metric_series(
            job_id=long_job, max_points=2000, engine=engine
        ),
        "job_curves_small": lambda: service.metric_series(
            job_id=seeded.train_job_ids[5], max_points=2000, engine=engine
        ),
        "job_events": lambda: service.job_events(seeded.train_job_ids[0], engine=engine),
        "cost_summary": lambda: service.cost_summary(("campaign",), engine=engine),
        "cost_by_day_machine": lambda: service.cost_summary(
            ("day", "machine", "spot"), engine=engine
        ),
    }
    med, worst = {}, {}
    for name, fn in queries.items():
        med[name], worst[name] = (round(v, 2) for v in _time(fn, repeats))
    return med, worst


# --------------------------------------------------------------------------- one database


def _progress(total: int, desc: str, disable: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="pt",
        unit_scale=True,
        disable=disable,
        file=sys.stderr,
        leave=False,
        mininterval=1.0,
    )


def bench_database(engine: Engine, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from backend import jobs_repo
    from backend.db import init_db
    from backend.db.engine import session_scope
    from backend.db.models import MetricPoint

    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    init_db(engine)
    init_s = time.perf_counter() - t0
    store_dir = workdir / f"store-{engine.dialect.name}"
    seeded = seed_campaign(engine, args.jobs, args.running, rng, f"file://{store_dir}")
    segments = metric_segments(seeded.train_job_ids, args.points, args.segment, rng)
    inserted = 0
    bar = _progress(args.points, f"ingest ({engine.dialect.name})", args.no_progress)
    t0 = time.perf_counter()
    for _jid, rows in segments:
        with session_scope(engine) as s:
            inserted += jobs_repo.insert_metric_rows(s, rows)
        bar.update(len(rows))
    ingest_s = time.perf_counter() - t0
    bar.close()
    with session_scope(engine) as s:
        again = jobs_repo.insert_metric_rows(s, segments[len(segments) // 2][1])
    n_segments = len(segments)
    del segments  # a controller process does not hold a million rows in memory (nor should its GC)
    with engine.connect() as conn:
        n_points = conn.execute(sa.select(sa.func.count()).select_from(MetricPoint)).scalar_one()
    settle_s = settle_after_bulk_load(engine)
    impl_error = None
    extra: dict[str, Any] = {"reconcile_stat": "one pass of the jobs_repo equivalent, timed once"}
    if not args.no_controller:
        try:
            reconcile_s, impl, detail, extra = _controller_ticks(engine, store_dir)
        except Exception as exc:  # noqa: BLE001 - fall back, and say why in the JSON
            impl_error = f"{type(exc).__name__}: {exc}"
            reconcile_s, impl, detail = _own_pass(engine)
    else:
        reconcile_s, impl, detail = _own_pass(engine)
    load_before = os.getloadavg()[0]
    med, worst = time_queries(engine, seeded, seeded.train_job_ids[0], args.repeats)
    out = {
        "jobs": seeded.n_jobs,
        "metric_points": int(n_points),
        "reconcile_s": round(reconcile_s, 4),
        **extra,
        "ingest_points_per_s": round(inserted / ingest_s, 1),
        "query_ms": med,
        "query_ms_max": worst,
        "queries_within_200ms": all(v <= QUERY_TARGET_MS for v in med.values()),
        "load_average_during_queries": round((load_before + os.getloadavg()[0]) / 2, 2),
        "reconcile_impl": impl,
        "reconcile_detail": detail,
        "ingest": {
            "points": inserted,
            "seconds": round(ingest_s, 3),
            "segments": n_segments,
            "points_per_segment": args.segment,
            "reingest_new_points": again,
        },
        "setup": {
            "init_db_s": round(init_s, 3),
            "create_campaign_s": round(seeded.create_s, 3),
            "settle_after_load": SETTLE_TEXT[engine.dialect.name],
            "settle_s": round(settle_s, 3),
            "seed_states_s": round(seeded.seed_s, 3),
            "job_states": seeded.states,
        },
    }
    if impl_error:
        out["reconcile_fallback_reason"] = impl_error
    return out


# --------------------------------------------------------------------------- databases


SETTLE_TEXT = {
    "postgresql": "VACUUM ANALYZE, then CHECKPOINT, after the bulk load (what autovacuum and the "
    "checkpointer would do on their own, here before the timings instead of during them)",
    "sqlite": "PRAGMA wal_checkpoint(TRUNCATE) after the bulk load (the write-ahead log folded into the "
    "database, as SQLite's automatic checkpoints would have done along the way)",
}


def settle_after_bulk_load(engine: Engine) -> float:
    """Do the database's own housekeeping of the bulk load before anything is timed: a million
    fresh rows otherwise trigger autovacuum, checkpoints or a long WAL fold inside the timed
    reconcile pass and queries, which measures the load, not the control plane. Returns seconds."""
    t0 = time.perf_counter()
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE"))
            conn.execute(sa.text("CHECKPOINT"))
    else:
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return time.perf_counter() - t0


def _pg_candidates(args: argparse.Namespace) -> list[str]:
    if args.pg_url:
        return [args.pg_url]
    env = os.environ.get("DATABASE_URL", "")
    return [env] if env.startswith("postgres") else list(DEFAULT_PG_URLS)


def _fresh_pg(args: argparse.Namespace) -> tuple[Engine, Callable[[], None]]:
    from backend.db.engine import create_engine

    errors = []
    for url in _pg_candidates(args):
        admin = create_engine(url)
        schema = f"nsbi_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        try:
            with admin.begin() as conn:
                conn.execute(sa.schema.CreateSchema(schema))
        except Exception as exc:  # noqa: BLE001 - try the next candidate
            errors.append(f"{url}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
            admin.dispose()
            continue
        engine = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})

        def cleanup(engine=engine, admin=admin, schema=schema) -> None:
            engine.dispose()
            with admin.begin() as conn:
                conn.execute(sa.schema.DropSchema(schema, cascade=True))
            admin.dispose()

        return engine, cleanup
    raise RuntimeError("PostgreSQL not reachable: " + "; ".join(errors))


def run(args: argparse.Namespace) -> int:
    from backend.db.engine import create_engine

    dbs = [d.strip() for d in args.databases.split(",") if d.strip()]
    bad = [d for d in dbs if d not in ("sqlite", "postgresql")]
    if bad:
        print(
            f"nsbi bench controlplane: --databases: unknown {bad}; allowed: sqlite, postgresql",
            file=sys.stderr,
        )
        return 2
    report: dict[str, Any] = {}
    failed = False
    with tempfile.TemporaryDirectory(prefix="nsbi-bench-cp-") as tmp:
        workdir = Path(tmp)
        for db in dbs:
            print(
                f"bench controlplane: {db}: {args.jobs} jobs, {args.points} metric points ...",
                file=sys.stderr,
            )
            try:
                if db == "sqlite":
                    engine = create_engine(f"sqlite:///{workdir / 'bench.db'}")
                    cleanup: Callable[[], None] = engine.dispose
                else:
                    engine, cleanup = _fresh_pg(args)
            except Exception as exc:  # noqa: BLE001 - report and go on with the next database
                report[db] = {"error": str(exc)}
                failed = True
                continue
            try:
                report[db] = bench_database(engine, args, workdir)
                report[db]["url"] = engine.url.render_as_string(hide_password=True)
            finally:
                cleanup()
            r = report[db]
            idle = f" (idle {r['reconcile_idle_s']:.3f} s)" if "reconcile_idle_s" in r else ""
            print(
                f"  {db}: reconcile {r['reconcile_s']:.3f} s{idle}, ingest {r['ingest_points_per_s']:.0f} points/s, "
                f"queries (ms) {r['query_ms']}",
                file=sys.stderr,
            )
    report["meta"] = {
        "time": _now().isoformat(timespec="seconds"),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "host": platform.node(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "query_target_ms": QUERY_TARGET_MS,
        "query_stat": f"median of {args.repeats} runs after one warm-up",
        "sqlalchemy": sa.__version__,
    }
    text = json.dumps(report, indent=2, default=str)
    if args.json:
        Path(args.json).write_text(text + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    else:
        print(text)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nsbi bench controlplane", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
