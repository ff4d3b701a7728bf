"""Shared helpers for the controller/worker/fault tests (not a conftest: plain functions).

Campaigns are written straight into the tables, the way the service layer would, so these
tests exercise the controller without depending on the service module.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, SQLModel, select

from backend.db.engine import create_engine
from backend.db.models import Attempt, Campaign, Job, JobDependency, MetricPoint, ResourceSample
from backend.states import CampaignStatus, DesiredState, JobStatus

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
FAST_ENV = {"NSBI_WORKER_INTERVAL_S": "0.2"}


def postgres_available() -> bool:
    try:
        eng = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 2})
        with eng.connect():
            pass
        eng.dispose()
        return True
    except Exception:
        return False


@contextmanager
def fresh_postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL database (teammates share the server, so never reuse `test`)."""
    name = f"nsbi_ctl_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def make_engine(url: str):
    engine = create_engine(url)
    SQLModel.metadata.create_all(engine)
    return engine


@dataclass
class JobDef:
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    deps: Sequence[str] = ()
    kind: str = "noop"
    max_retries: int = 2
    spec: dict[str, Any] | None = None
    machine_type: str = "local"
    est_hours: float = 0.0
    gpu_count: int = 0


def make_campaign(
    engine,
    jobs: Sequence[JobDef],
    *,
    name: str = "camp",
    max_concurrency: int = 2,
    status: str = CampaignStatus.ACTIVE,
    budget_usd: float | None = None,
) -> int:
    """Insert an ACTIVE campaign whose jobs are all desired RUN; returns the campaign id."""
    with Session(engine, expire_on_commit=False) as s:
        camp = Campaign(
            name=name,
            config_hash=uuid.uuid4().hex,
            status=status,
            max_concurrency=max_concurrency,
            budget_usd=budget_usd,
        )
        s.add(camp)
        s.flush()
        ids: dict[str, int] = {}
        for jd in jobs:
            spec = (
                jd.spec
                if jd.spec is not None
                else {"kind": jd.kind, "name": jd.name, "params": jd.params}
            )
            job = Job(
                campaign_id=camp.id,
                name=jd.name,
                kind=jd.kind,
                spec=spec,
                max_retries=jd.max_retries,
                desired_state=DesiredState.RUN,
                depends_on=[ids[d] for d in jd.deps],
                machine_type=jd.machine_type,
                est_hours=jd.est_hours,
                gpu_count=jd.gpu_count,
            )
            s.add(job)
            s.flush()
            ids[jd.name] = job.id
            for d in jd.deps:
                s.add(JobDependency(job_id=job.id, depends_on_id=ids[d]))
        s.commit()
        return camp.id


def run_until(
    controller,
    done: Callable[[], bool],
    timeout: float = 60.0,
    every: float = 0.1,
    on_tick: Callable[[], None] | None = None,
) -> int:
    t0 = time.time()
    ticks = 0
    while time.time() - t0 < timeout:
        report = controller.tick()
        assert not report.errors, report.errors
        ticks += 1
        if on_tick:
            on_tick()
        if done():
            return ticks
        time.sleep(every)
    raise AssertionError(
        f"condition not reached within {timeout} s; jobs: {job_states(controller.engine)}"
    )


def campaign_status(engine, campaign_id: int) -> str:
    with Session(engine) as s:
        return s.get(Campaign, campaign_id).status


def campaign_done(engine, campaign_id: int) -> Callable[[], bool]:
    final = {CampaignStatus.SUCCEEDED, CampaignStatus.FAILED, CampaignStatus.CANCELLED}
    return lambda: campaign_status(engine, campaign_id) in final


def job_states(engine) -> dict[str, str]:
    with Session(engine) as s:
        return {j.name: j.status for j in s.exec(select(Job).order_by(Job.id))}


def attempts_of(engine, job_name: str) -> list[Attempt]:
    with Session(engine) as s:
        return list(
            s.exec(
                select(Attempt)
                .join(Job, Job.id == Attempt.job_id)
                .where(Job.name == job_name)
                .order_by(Attempt.attempt_no)
            )
        )


def metric_keys(engine, job_name: str, name: str = "loss") -> list[tuple[int, int, float]]:
    """(attempt_no, step, value) of one metric of one job, ordered."""
    with Session(engine) as s:
        rows = s.exec(
            select(MetricPoint)
            .join(Job, Job.id == MetricPoint.job_id)
            .where(Job.name == job_name, MetricPoint.name == name)
            .order_by(MetricPoint.attempt_no, MetricPoint.step)
        ).all()
        return [(r.attempt_no, r.step, r.value) for r in rows]


def snapshot(engine) -> dict[str, Any]:
    """What must match between a disturbed and an undisturbed run (no times, no ids)."""
    out: dict[str, Any] = {}
    with Session(engine) as s:
        for job in s.exec(select(Job).order_by(Job.name)):
            attempts = s.exec(
                select(Attempt).where(Attempt.job_id == job.id).order_by(Attempt.attempt_no)
            ).all()
            metrics = s.exec(select(MetricPoint).where(MetricPoint.job_id == job.id)).all()
            n_res = s.exec(
                select(sa.func.count())
                .select_from(ResourceSample)
                .where(ResourceSample.job_id == job.id)
            ).one()
            out[job.name] = {
                "status": job.status,
                "attempts": [(a.attempt_no, a.status, a.exit_code) for a in attempts],
                "metrics": sorted(
                    (m.name, m.member, m.step, m.attempt_no, m.value) for m in metrics
                ),
                "has_resources": n_res > 0,
            }
    return out


def job_status_is(engine, job_name: str, *states: str) -> Callable[[], bool]:
    return lambda: job_states(engine).get(job_name) in states


TERMINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


def controller_process_main(
    db_url: str, store_uri: str, var_dir: str, status_path: str, interval: float = 0.05
) -> None:
    """Body of a controller process (started through a multiprocessing forkserver so that 20
    restarts cost milliseconds, not 20 interpreter start-ups); killed with SIGKILL by tests."""
    from pathlib import Path

    from backend.controller import Controller, ControllerConfig
    from backend.launchers.local import LocalLauncher

    engine = create_engine(db_url)
    launcher = LocalLauncher(var_dir, max_concurrent=2, gpus=[], extra_env=FAST_ENV)
    ctl = Controller(
        engine, store_uri, {"local": launcher}, ControllerConfig(tick_interval_s=interval)
    )
    ctl.run_forever(status_path=Path(status_path))
