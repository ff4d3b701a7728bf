"""Read views of campaigns and jobs for the dashboard and the CLI: campaign summaries and
details, pages of the job table, one job, a job's audit trail, progress snapshots and the
per-job records a report's provenance needs.

They return frozen dataclasses or plain dicts, never ORM rows, so callers can keep them
after the session closes. Every function takes an optional `engine` (default: the cached
engine for `DATABASE_URL`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from backend.budget import BudgetDecision, budget_allows_launch
from backend.campaign_rows import NotFound, campaign_or_raise, event_dict
from backend.cost_view import campaign_costs
from backend.costs import accrued_cost, hours_between
from backend.db.engine import session_scope
from backend.db.models import FIT_KINDS, Attempt, Campaign, Event, Job, MetricPoint, saved_id
from backend.states import JobStatus, utcnow


@dataclass(frozen=True)
class CampaignSummary:
    id: int
    name: str
    status: str
    owner: str
    launcher: str
    created_at: datetime
    n_jobs: int
    counts: dict[str, int]  # jobs per JobStatus value (every status present, zeros included)
    progress: float  # fraction of jobs SUCCEEDED
    cost_usd: float  # accrued so far, live attempts up to now
    gpu_hours: float
    budget_usd: float | None
    estimate_cost_usd: float
    estimate_gpu_hours: float


@dataclass(frozen=True)
class CampaignDetail:
    summary: CampaignSummary
    description: str
    config: dict[str, Any]
    config_hash: str
    code_version: str
    max_concurrency: int
    retry_limit: int
    counts_by_kind: dict[str, dict[str, int]]  # kind -> status -> n
    launch_requested_at: datetime | None
    cancel_requested_at: datetime | None
    budget: BudgetDecision
    events: list[dict[str, Any]] = field(
        default_factory=list
    )  # campaign-level events, newest first


@dataclass(frozen=True)
class JobRow:
    id: int
    campaign_id: int
    name: str
    kind: str
    task: str | None
    status: str
    status_reason: str
    desired_state: str
    cancel_requested: bool
    retry_requested: bool
    members: list[int]
    np_subset: list[str]
    seeds: list[int]
    depends_on: list[int]
    attempts: int
    current_attempt: int
    retries: int
    recoveries: int
    max_retries: int
    machine_type: str
    gpu_type: str | None
    gpu_count: int
    spot: bool
    last_heartbeat: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cost_usd: float
    gpu_hours: float
    instance_id: str | None


def _status_counts(
    session: Session, campaign_ids: Sequence[int] | None
) -> dict[int, dict[str, int]]:
    q = sa.select(col(Job.campaign_id), col(Job.status), sa.func.count()).group_by(
        col(Job.campaign_id), col(Job.status)
    )
    if campaign_ids is not None:
        q = q.where(col(Job.campaign_id).in_(campaign_ids))
    out: dict[int, dict[str, int]] = defaultdict(lambda: {s.value: 0 for s in JobStatus})
    for cid, status, n in session.execute(q):
        out[cid][status] = n
    return out


def _summaries(session: Session, campaigns: Sequence[Campaign]) -> list[CampaignSummary]:
    now = utcnow()
    ids = [saved_id(c) for c in campaigns]
    counts = _status_counts(session, ids)
    costs = campaign_costs(session, ids, now)
    out = []
    for c, cid in zip(campaigns, ids):
        cnt = dict(counts[cid])
        n = sum(cnt.values())
        cost, gh = costs.get(cid, (0.0, 0.0))
        out.append(
            CampaignSummary(
                id=cid,
                name=c.name,
                status=c.status,
                owner=c.owner,
                launcher=c.launcher,
                created_at=c.created_at,
                n_jobs=n,
                counts=cnt,
                progress=(cnt[JobStatus.SUCCEEDED] / n) if n else 0.0,
                cost_usd=cost,
                gpu_hours=gh,
                budget_usd=c.budget_usd,
                estimate_cost_usd=c.estimate_cost_usd,
                estimate_gpu_hours=c.estimate_gpu_hours,
            )
        )
    return out


def campaign_ids(engine: Engine | None = None) -> list[int]:
    with session_scope(engine) as session:
        return list(
            session.execute(sa.select(col(Campaign.id)).order_by(col(Campaign.id).desc())).scalars()
        )


def list_campaigns(engine: Engine | None = None) -> list[CampaignSummary]:
    """Every campaign, newest first, with job counts, progress, cost so far and estimate."""
    with session_scope(engine) as session:
        camps = list(session.exec(select(Campaign).order_by(col(Campaign.id).desc())))
        return _summaries(session, camps)


def get_campaign(campaign_id: int, engine: Engine | None = None) -> CampaignDetail:
    """One campaign in full: summary, config, counts per kind, budget decision, recent events."""
    with session_scope(engine) as session:
        c = campaign_or_raise(session, campaign_id)
        now = utcnow()
        by_kind: dict[str, dict[str, int]] = defaultdict(dict)
        counts = {s.value: 0 for s in JobStatus}
        q = (
            sa.select(col(Job.kind), col(Job.status), sa.func.count())
            .where(col(Job.campaign_id) == campaign_id)
            .group_by(col(Job.kind), col(Job.status))
        )
        for kind, status, n in session.execute(q):
            by_kind[kind][status] = n
            counts[status] += n
        n_jobs = sum(counts.values())
        cost, gh = campaign_costs(session, [campaign_id], now).get(campaign_id, (0.0, 0.0))
        summary = CampaignSummary(
            id=saved_id(c),
            name=c.name,
            status=c.status,
            owner=c.owner,
            launcher=c.launcher,
            created_at=c.created_at,
            n_jobs=n_jobs,
            counts=counts,
            progress=(counts[JobStatus.SUCCEEDED] / n_jobs) if n_jobs else 0.0,
            cost_usd=cost,
            gpu_hours=gh,
            budget_usd=c.budget_usd,
            estimate_cost_usd=c.estimate_cost_usd,
            estimate_gpu_hours=c.estimate_gpu_hours,
        )
        events = [
            event_dict(e)
            for e in session.exec(
                select(Event)
                .where(Event.campaign_id == campaign_id, col(Event.job_id).is_(None))
                .order_by(col(Event.time).desc(), col(Event.id).desc())
                .limit(50)
            )
        ]
        budget = budget_allows_launch(campaign_id, session=session, now=now, spent=cost)
        return CampaignDetail(
            summary=summary,
            description=c.description,
            config=dict(c.config),
            config_hash=c.config_hash,
            code_version=c.code_version,
            max_concurrency=c.max_concurrency,
            retry_limit=c.retry_limit,
            counts_by_kind=dict(by_kind),
            launch_requested_at=c.launch_requested_at,
            cancel_requested_at=c.cancel_requested_at,
            budget=budget,
            events=events,
        )


_JOB_ROW_COLS = tuple(
    getattr(Job, c)
    for c in (
        "id",
        "campaign_id",
        "name",
        "kind",
        "task",
        "status",
        "status_reason",
        "desired_state",
        "cancel_requested",
        "retry_requested",
        "members",
        "np_subset",
        "seeds",
        "depends_on",
        "current_attempt",
        "retries",
        "recoveries",
        "max_retries",
        "machine_type",
        "gpu_type",
        "gpu_count",
        "spot",
        "last_heartbeat",
        "created_at",
        "started_at",
        "finished_at",
    )
)


def _job_rows(session: Session, jobs: Sequence[Any]) -> list[JobRow]:
    """JobRows for `jobs`, with attempt counts and costs aggregated over their attempts."""
    now = utcnow()
    ids = [j.id for j in jobs]
    agg: dict[int, list[Any]] = {i: [0, 0.0, 0.0, None] for i in ids}
    if ids:
        q = (
            sa.select(
                col(Attempt.job_id),
                col(Attempt.launched_at),
                col(Attempt.ended_at),
                col(Attempt.price_per_hour),
                col(Attempt.cost_usd),
                col(Attempt.gpu_hours),
                col(Attempt.gpu_count),
                col(Attempt.instance_id),
            )
            .where(col(Attempt.job_id).in_(ids))
            .order_by(col(Attempt.job_id), col(Attempt.attempt_no))
        )
        for jid, launched, ended, price, cost, gh, gpus, inst in session.execute(q):
            a = agg[jid]
            a[0] += 1
            if launched is not None and ended is None:
                a[1] += accrued_cost(price, launched, now)
                a[2] += hours_between(launched, now) * gpus
            else:
                a[1] += cost
                a[2] += gh
            a[3] = inst
    return [
        JobRow(
            id=j.id,
            campaign_id=j.campaign_id,
            name=j.name,
            kind=j.kind,
            task=j.task,
            status=j.status,
            status_reason=j.status_reason,
            desired_state=j.desired_state,
            cancel_requested=j.cancel_requested,
            retry_requested=j.retry_requested,
            members=list(j.members),
            np_subset=list(j.np_subset),
            seeds=list(j.seeds),
            depends_on=list(j.depends_on),
            attempts=agg[j.id][0],
            current_attempt=j.current_attempt,
            retries=j.retries,
            recoveries=j.recoveries,
            max_retries=j.max_retries,
            machine_type=j.machine_type,
            gpu_type=j.gpu_type,
            gpu_count=j.gpu_count,
            spot=j.spot,
            last_heartbeat=j.last_heartbeat,
            created_at=j.created_at,
            started_at=j.started_at,
            finished_at=j.finished_at,
            cost_usd=agg[j.id][1],
            gpu_hours=agg[j.id][2],
            instance_id=agg[j.id][3],
        )
        for j in jobs
    ]


def list_jobs(
    campaign_id: int | None = None,
    states: Iterable[str] | None = None,
    kind: str | None = None,
    offset: int = 0,
    limit: int = 50,
    engine: Engine | None = None,
) -> tuple[list[JobRow], int]:
    """One page of the job table (ordered by id) and the total number of matching jobs."""
    conds = []
    if campaign_id is not None:
        conds.append(col(Job.campaign_id) == campaign_id)
    if states:
        conds.append(col(Job.status).in_([JobStatus(s).value for s in states]))
    if kind is not None:
        conds.append(col(Job.kind) == kind)
    with session_scope(engine) as session:
        total = session.execute(
            sa.select(sa.func.count()).select_from(Job).where(*conds)
        ).scalar_one()
        jobs = list(
            session.execute(
                sa.select(*_JOB_ROW_COLS)
                .where(*conds)
                .order_by(col(Job.id))
                .offset(offset)
                .limit(limit)
            )
        )
        return _job_rows(session, jobs), int(total)


def get_job(job_id: int, engine: Engine | None = None) -> JobRow:
    """One job as a `JobRow` (raises NotFound)."""
    with session_scope(engine) as session:
        job = session.execute(sa.select(*_JOB_ROW_COLS).where(col(Job.id) == job_id)).first()
        if job is None:
            raise NotFound(f"no job with id {job_id}")
        return _job_rows(session, [job])[0]


def job_events(job_id: int, engine: Engine | None = None) -> list[dict[str, Any]]:
    """The audit trail of one job, oldest first."""
    with session_scope(engine) as session:
        return [
            event_dict(e)
            for e in session.exec(
                select(Event).where(Event.job_id == job_id).order_by(col(Event.time), col(Event.id))
            )
        ]


def campaign_progress(campaign_id: int, engine: Engine | None = None) -> dict[str, Any]:
    """A cheap progress snapshot for command-line bars: campaign status; per kind the jobs
    total / done (SUCCEEDED) / running / failed / reused (SUCCEEDED without an attempt); and
    the newest ``train_loss`` of each running train job (one index seek per running job)."""
    with session_scope(engine) as session:
        c = campaign_or_raise(session, campaign_id)
        ran = sa.select(col(Attempt.job_id)).where(col(Attempt.job_id) == Job.id).exists()
        kinds: dict[str, dict[str, int]] = defaultdict(
            lambda: {"total": 0, "done": 0, "running": 0, "failed": 0, "cancelled": 0, "reused": 0}
        )
        q = (
            sa.select(col(Job.kind), col(Job.status), ran, sa.func.count())
            .where(col(Job.campaign_id) == campaign_id)
            .group_by(col(Job.kind), col(Job.status), ran)
        )
        for kind, status, has_attempt, n in session.execute(q):
            k = kinds[kind]
            k["total"] += n
            if status == JobStatus.SUCCEEDED:
                k["done"] += n
                k["reused"] += 0 if has_attempt else n
            elif status in (JobStatus.LAUNCHING, JobStatus.RUNNING):
                k["running"] += n
            elif status == JobStatus.FAILED:
                k["failed"] += n
            elif status == JobStatus.CANCELLED:
                k["cancelled"] += n
        running = list(
            session.execute(
                sa.select(col(Job.id)).where(
                    col(Job.campaign_id) == campaign_id,
                    col(Job.kind) == "train",
                    col(Job.status) == JobStatus.RUNNING,
                )
            ).scalars()
        )
        losses = {}
        mp = MetricPoint.__table__.c
        for jid in running:
            v = session.execute(
                sa.select(mp.value)
                .where(mp.job_id == jid, mp.name == "train_loss")
                .order_by(mp.step.desc())
                .limit(1)
            ).scalar()
            if v is not None:
                losses[jid] = float(v)
        order = {k: i for i, k in enumerate(("train", *FIT_KINDS))}
        return {
            "status": c.status,
            "kinds": dict(sorted(kinds.items(), key=lambda kv: order.get(kv[0], 99))),
            "train_loss": losses,
        }


def campaign_job_records(campaign_id: int, engine: Engine | None = None) -> list[dict[str, Any]]:
    """Every job of a campaign with what a report's provenance needs, in id order: id, name,
    kind, task, status, uri, attempt (current), attempts (rows: 0 for a reused job), spec,
    cache_key, cached_from, started_at, finished_at and run_seconds (summed over attempts)."""
    with session_scope(engine) as session:
        campaign_or_raise(session, campaign_id)
        agg = dict(
            (jid, (n, secs))
            for jid, n, secs in session.execute(
                sa.select(col(Attempt.job_id), sa.func.count(), sa.func.sum(col(Attempt.gpu_hours)))
                .join(Job, col(Job.id) == Attempt.job_id)
                .where(col(Job.campaign_id) == campaign_id)
                .group_by(col(Attempt.job_id))
            )
        )
        spans: dict[int, float] = defaultdict(float)
        for jid, launched, ended in session.execute(
            sa.select(col(Attempt.job_id), col(Attempt.launched_at), col(Attempt.ended_at))
            .join(Job, col(Job.id) == Attempt.job_id)
            .where(col(Job.campaign_id) == campaign_id)
        ):
            if launched is not None and ended is not None:
                spans[jid] += (ended - launched).total_seconds()
        out = []
        for j in session.exec(
            select(Job).where(Job.campaign_id == campaign_id).order_by(col(Job.id))
        ):
            spec = dict(j.spec or {})
            out.append(
                {
                    "id": j.id,
                    "name": j.name,
                    "kind": j.kind,
                    "task": j.task,
                    "status": j.status,
                    "uri": j.uri,
                    "attempt": j.current_attempt,
                    "attempts": agg.get(j.id, (0, 0))[0],
                    "spec": spec,
                    "cache_key": spec.get("cache_key"),
                    "cached_from": spec.get("cached_from"),
                    "started_at": j.started_at,
                    "finished_at": j.finished_at,
                    "run_seconds": spans.get(saved_id(j), 0.0),
                }
            )
        return out


LOG_TAIL_BYTES = 64 * 1024  # the end of an attempt's output that the dashboard shows


LOG_FOLDER_LAUNCHERS = ("local", "slurm")  # launchers whose output is <folder>/logs/<iid>.log


def _local_log(attempt: Attempt) -> tuple[str | None, str]:
    """(the end of an attempt's output, a note): the local launcher writes the worker's
    stdout and stderr together to ``<folder>/logs/<instance id>.log`` on the host in
    ``launched_from`` (``host:folder``); the Slurm launcher's batch script links that name to
    the task's output file. Only a file on this host (or a filesystem it shares), inside that
    logs folder, is read; a GCE VM's output comes from the copy in the store (`_stored_log`)."""
    import socket
    from pathlib import Path

    if attempt.launcher not in LOG_FOLDER_LAUNCHERS:
        return None, f"the {attempt.launcher} launcher keeps the output on the instance"
    where = attempt.launched_from or ""
    host, _, folder = where.partition(":")
    iid = attempt.instance_id or ""
    if not folder or not iid:
        return None, "no output recorded for this attempt"
    if host != socket.gethostname():
        return None, f"the output is on {host}"
    logs = Path(folder) / "logs"
    path = (logs / f"{iid}.log").resolve()
    if path.parent != logs.resolve() or not path.is_file():
        return None, "the output file is gone"
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - LOG_TAIL_BYTES))
        data = f.read()
    text = data.decode("utf-8", errors="replace")
    note = f"last {LOG_TAIL_BYTES // 1024} KiB of {size / 1024:.0f} KiB" if size > len(data) else ""
    return text, note


def _open_job_store(job_uri: str | None) -> Any:
    """The job's store, or a note (str) saying why it cannot be opened."""
    from backend.stores import StoreError, open_store

    if not job_uri:
        return "the job has no store folder yet"
    try:
        return open_store(job_uri)
    except (StoreError, OSError) as exc:
        return f"cannot read the stored output: {exc}"


def _stored_log(job_store: Any, attempt_no: int) -> tuple[str | None, str]:
    """(the end of the output the worker copied into the store, a note), for attempts whose
    launcher's own log cannot be read from here (a GCE VM, another host). ``job_store``: the
    job's opened store, or the note saying why it could not be opened."""
    from backend.stores import StoreError
    from backend.worker_output import read_output_tail

    if isinstance(job_store, str):
        return None, job_store
    try:
        tail = read_output_tail(job_store, attempt_no, LOG_TAIL_BYTES)
    except (StoreError, OSError) as exc:
        return None, f"cannot read the stored output: {exc}"
    if tail is None:
        return None, "the worker has stored no output yet"
    text, truncated = tail
    return text, (
        f"copied to the store by the worker · last {LOG_TAIL_BYTES // 1024} KiB"
        if truncated
        else "copied to the store by the worker"
    )


def job_attempts(job_id: int, engine: Engine | None = None) -> list[dict[str, Any]]:
    """Each attempt of a job, oldest first: attempt_no, status, launcher, instance_id,
    machine_type, launched_at, ended_at, exit_code, failure_reason (the worker's error and
    traceback), output (the end of stdout + stderr: the launcher's log where this host can
    read it, else the copy the worker keeps in the store, else None) and output_note (where it
    comes from, that it is truncated, or why there is none)."""
    with session_scope(engine) as session:
        rows = list(
            session.exec(
                select(Attempt)
                .where(col(Attempt.job_id) == job_id)
                .order_by(col(Attempt.attempt_no))
            )
        )
        job_uri = session.exec(select(Job.uri).where(col(Job.id) == job_id)).first()
        job_store: Any = None  # opened once, for the first attempt that needs the stored copy
        out = []
        for a in rows:
            try:
                output, note = _local_log(a)
            except OSError as exc:
                output, note = None, f"cannot read the output: {exc.strerror or exc}"
            if output is None:
                if job_store is None:
                    job_store = _open_job_store(job_uri)
                stored, stored_note = _stored_log(job_store, a.attempt_no)
                if stored is not None or a.launcher not in LOG_FOLDER_LAUNCHERS:
                    output, note = stored, stored_note  # the store is where a VM's output is
            out.append(
                {
                    "attempt_no": a.attempt_no,
                    "status": a.status,
                    "launcher": a.launcher,
                    "instance_id": a.instance_id,
                    "machine_type": a.machine_type,
                    "launched_at": a.launched_at,
                    "ended_at": a.ended_at,
                    "exit_code": a.exit_code,
                    "failure_reason": a.failure_reason,
                    "output": output,
                    "output_note": note,
                }
            )
        return out
