"""Database helpers for the controller: attempts, liveness, costs, intents and idempotent ingest.

The controller (and only it) moves jobs through their states; these functions keep each step
small and crash-safe. The caller owns the session and commits. The launch protocol is:

1. `begin_attempt()` -> job PENDING -> LAUNCHING and a new `Attempt` (LAUNCHING, unique
   (job_id, attempt_no)); **commit**;
2. call the launcher;
3. `mark_launched()` (job -> RUNNING, instance id, billing starts) or `end_attempt(..., FAILED)`.

A controller restarted between 1 and 3 finds the LAUNCHING attempt (`half_done_launches()`)
and can ask the launcher whether that instance exists instead of launching a duplicate.
`begin_attempts()` and `mark_launched_rows()` are steps 1 and 3 for a whole pass's jobs.

The bulk helpers (`*_rows`, `begin_attempts`, `apply_simple_intents`, `accrue_costs`) read
and write plain rows with one statement per kind of change (`transition_rows`, from
`backend.db.transitions`), so a pass that moves hundreds of jobs costs a handful of
statements; they do not refresh ORM objects the session already holds for the rows they change.

Ingest is idempotent: `ingest_metrics()` / `ingest_resources()` insert with
ON CONFLICT DO NOTHING against the tables' unique keys, so re-reading a segment is harmless.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlmodel import Session, col, select

from backend.costs import accrued_cost, hours_between, region_of_zone
from backend.db.bulk import bulk_insert, bulk_update
from backend.db.models import (
    Artifact,
    Attempt,
    Campaign,
    Event,
    FitResult,
    Job,
    JobDependency,
    MetricPoint,
    ResourceSample,
    saved_id,
)
from backend.db.transitions import transition, transition_rows
from backend.states import JOB_STATE_COLUMNS, CampaignStatus, DesiredState, JobStatus, utcnow

_OPEN = (JobStatus.LAUNCHING, JobStatus.RUNNING)
# Listing thousands of candidate jobs should not decode their JSON; it loads on first access.
# (zones stays: it is a short list the launch plan reads for every candidate's price.)
_DEFER_JSON = tuple(
    sa.orm.defer(getattr(Job, c)) for c in ("spec", "members", "np_subset", "seeds")
)


# --------------------------------------------------------------------------- reading


def _unmet_dependency(session: Session) -> sa.Select:
    """Dependency edges of the outer `Job` whose dependency has not SUCCEEDED (for EXISTS).

    On SQLite the dependency is tested against the set of SUCCEEDED ids, which the (status,
    desired_state) index covers: reading a job row's status there means walking past its spec,
    which for a fit over thousands of trainings spans a hundred overflow pages. PostgreSQL
    keeps large values out of line, so it joins the dependency's row.
    """
    dep = sa.orm.aliased(Job)
    if session.get_bind().dialect.name == "sqlite":
        succeeded = sa.select(col(dep.id)).where(col(dep.status) == JobStatus.SUCCEEDED)
        return sa.select(col(JobDependency.job_id)).where(
            col(JobDependency.job_id) == Job.id, col(JobDependency.depends_on_id).not_in(succeeded)
        )
    return (
        sa.select(col(JobDependency.job_id))
        .join(dep, col(dep.id) == JobDependency.depends_on_id)
        .where(col(JobDependency.job_id) == Job.id, col(dep.status) != JobStatus.SUCCEEDED)
    )


def ready_jobs(
    session: Session,
    *,
    campaign_id: int | None = None,
    limit: int | None = None,
    within_concurrency: bool = False,
    after: tuple[int, int] | None = None,
    campaign_ids: Sequence[int] | None = None,
    max_gpus: int | None = None,
    exclude_launchers: Sequence[str] = (),
) -> list[Job]:
    """PENDING jobs the controller may launch now: launch requested (desired RUN), campaign
    ACTIVE, no cancel requested, and every dependency SUCCEEDED. Highest priority first.

    within_concurrency=True also leaves out jobs beyond each campaign's free slots
    (max_concurrency minus its LAUNCHING/RUNNING jobs), in the database, so a campaign of
    10,000 ready jobs costs as much as its few launchable ones.

    The JSON columns (spec, members, ...) are deferred: they load when first touched, so
    listing many ready jobs to launch a few stays cheap. Pass `limit` when you can, and
    `after=(priority, id)` of the last job of a page to get the next page. `campaign_ids`,
    `max_gpus` and `exclude_launchers` narrow the candidates to campaigns with free slots, jobs
    that fit a GPU quota and launchers with free slots.
    """
    unmet = _unmet_dependency(session)
    conds = [
        col(Job.status) == JobStatus.PENDING,
        col(Job.desired_state) == DesiredState.RUN,
        col(Job.cancel_requested).is_(False),
        col(Campaign.status) == CampaignStatus.ACTIVE,
        ~sa.exists(unmet),
    ]
    if campaign_id is not None:
        conds.append(col(Job.campaign_id) == campaign_id)
    if campaign_ids is not None:
        conds.append(col(Job.campaign_id).in_(list(campaign_ids)))
    if max_gpus is not None:
        conds.append(col(Job.gpu_count) <= max_gpus)
    if exclude_launchers:
        conds.append(col(Job.launcher).not_in(list(exclude_launchers)))
    q = select(Job).options(*_DEFER_JSON).join(Campaign, col(Campaign.id) == Job.campaign_id)
    if within_concurrency:
        rank = sa.func.row_number().over(
            partition_by=col(Job.campaign_id), order_by=(col(Job.priority).desc(), col(Job.id))
        )
        ranked = (
            sa.select(col(Job.id).label("id"), rank.label("rn"))
            .join(Campaign, col(Campaign.id) == Job.campaign_id)
            .where(*conds)
            .subquery()
        )
        busy = (
            sa.select(col(Job.campaign_id).label("campaign_id"), sa.func.count().label("n"))
            .where(col(Job.status).in_(_OPEN))
            .group_by(col(Job.campaign_id))
            .subquery()
        )
        cap = sa.case(
            (col(Campaign.max_concurrency) < 1, 1), else_=Campaign.max_concurrency
        )  # as the controller
        q = (
            q.join(ranked, ranked.c.id == Job.id)
            .outerjoin(busy, busy.c.campaign_id == Job.campaign_id)
            .where(ranked.c.rn <= cap - sa.func.coalesce(busy.c.n, 0))
        )
    else:
        q = q.where(*conds)
    if after is not None:
        priority, job_id = after
        q = q.where(
            sa.or_(
                col(Job.priority) < priority,
                sa.and_(col(Job.priority) == priority, col(Job.id) > job_id),
            )
        )
    q = q.order_by(col(Job.priority).desc(), col(Job.id))
    if limit is not None:
        q = q.limit(limit)
    return list(session.exec(q))


def active_load(session: Session) -> tuple[dict[int, int], int]:
    """({campaign id: jobs in LAUNCHING or RUNNING}, their GPUs in total), in one query."""
    q = (
        sa.select(
            col(Job.campaign_id),
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(col(Job.gpu_count)), 0),
        )
        .where(col(Job.status).in_(_OPEN))
        .group_by(col(Job.campaign_id))
    )
    counts, gpus = {}, 0
    for cid, n, g in session.execute(q):
        counts[cid] = n
        gpus += int(g)
    return counts, gpus


def active_counts(session: Session) -> dict[int, int]:
    """Jobs in LAUNCHING or RUNNING per campaign (for max_concurrency)."""
    q = (
        sa.select(col(Job.campaign_id), sa.func.count())
        .where(col(Job.status).in_(_OPEN))
        .group_by(col(Job.campaign_id))
    )
    return {cid: n for cid, n in session.execute(q)}


def open_attempts(
    session: Session, *, status: JobStatus | None = None
) -> list[tuple[Job, Attempt]]:
    """(job, its current attempt) for every job in LAUNCHING or RUNNING, in one query;
    `status` keeps only pairs where both the job and the attempt are in that state."""
    q = (
        select(Job, Attempt)
        .join(
            Attempt,
            sa.and_(col(Attempt.job_id) == Job.id, col(Attempt.attempt_no) == Job.current_attempt),
        )
        .order_by(col(Job.id))
    )
    if status is None:
        q = q.where(col(Job.status).in_(_OPEN))
    else:
        q = q.where(col(Job.status) == status, col(Attempt.status) == status)
    return [(j, a) for j, a in session.exec(q)]


def half_done_launches(session: Session) -> list[tuple[Job, Attempt]]:
    """LAUNCHING attempts: the launcher may or may not have started them (controller crashed)."""
    return open_attempts(session, status=JobStatus.LAUNCHING)


def state_rows(session: Session, *conditions: Any) -> list[sa.Row]:
    """`JOB_STATE_COLUMNS` of the jobs matching `conditions`, by id: what `transition_rows()`
    needs, without building ORM objects (bulk steps move hundreds of jobs)."""
    cols = [getattr(Job, c) for c in JOB_STATE_COLUMNS]
    return list(session.execute(sa.select(*cols).where(*conditions).order_by(col(Job.id))))


def attempt_state_rows(session: Session, attempt_ids: Sequence[int]) -> list[sa.Row]:
    """`state_rows` of the jobs of these attempts, plus attempt_id, attempt_no, attempt_status
    and attempt_launched_at."""
    cols = [getattr(Job, c) for c in JOB_STATE_COLUMNS]
    q = (
        sa.select(
            *cols,
            col(Attempt.id).label("attempt_id"),
            col(Attempt.attempt_no),
            col(Attempt.status).label("attempt_status"),
            col(Attempt.launched_at).label("attempt_launched_at"),
        )
        .join(Attempt, col(Attempt.job_id) == Job.id)
        .where(col(Attempt.id).in_(list(attempt_ids)))
    )
    return list(session.execute(q))


def state_rows_of(session: Session, ids: Sequence[int], chunk: int = 5000) -> list[sa.Row]:
    """`state_rows` of the jobs with these ids (in chunks: databases cap the bound parameters)."""
    out: list[sa.Row] = []
    for i in range(0, len(ids), chunk):
        out += state_rows(session, col(Job.id).in_(list(ids[i : i + chunk])))
    return out


def dead_dependency_ids(session: Session) -> list[int]:
    """Ids of PENDING jobs that wait on a CANCELLED job, or on a FAILED one with no retries left
    and no retry requested: they can never run, so the controller should cancel them.

    Goes from the few dead jobs to their dependants, and reads only ids and statuses (the
    status index covers them), so it costs the same however many jobs are PENDING.
    """
    dep = sa.orm.aliased(Job)
    dead = sa.or_(
        col(dep.status) == JobStatus.CANCELLED,
        sa.and_(
            col(dep.status) == JobStatus.FAILED,
            col(dep.retry_requested).is_(False),
            sa.or_(col(dep.retries) >= dep.max_retries, col(dep.cancel_requested).is_(True)),
        ),
    )
    blocked = (
        sa.select(col(JobDependency.job_id))
        .join(dep, col(dep.id) == JobDependency.depends_on_id)
        .where(dead)
    )
    member: sa.SQLColumnExpression[int | None] = col(Job.id)
    if session.get_bind().dialect.name == "sqlite":
        # `id + 0`: SQLite then tests membership on the status index entries instead of reading
        # each blocked job's row (whose status sits behind its spec, see `_unmet_dependency`)
        member = col(Job.id) + 0
    q = (
        sa.select(col(Job.id))
        .where(col(Job.status) == JobStatus.PENDING, member.in_(blocked))
        .order_by(col(Job.id))
    )
    return list(session.execute(q).scalars())


def _retryable_condition() -> sa.ColumnElement[bool]:
    active = sa.select(col(Campaign.id)).where(col(Campaign.status) == CampaignStatus.ACTIVE)
    return sa.and_(
        col(Job.status) == JobStatus.FAILED,
        col(Job.retries) < Job.max_retries,
        col(Job.cancel_requested).is_(False),
        col(Job.desired_state) == DesiredState.RUN,
        col(Job.campaign_id).in_(active),
    )


def retryable_failed_jobs(session: Session) -> list[Job]:
    """FAILED jobs the controller should retry automatically: retries left, no cancel requested,
    launch requested, campaign ACTIVE (requeue them with `requeue()`)."""
    q = select(Job).options(*_DEFER_JSON).where(_retryable_condition()).order_by(col(Job.id))
    return list(session.exec(q))


def recovery_rows(session: Session) -> list[sa.Row]:
    """`state_rows` of the jobs to requeue now: retryable FAILED ones (see
    `retryable_failed_jobs`) and PREEMPTED ones without a cancel request."""
    preempted = sa.and_(
        col(Job.status) == JobStatus.PREEMPTED, col(Job.cancel_requested).is_(False)
    )
    return state_rows(session, sa.or_(_retryable_condition(), preempted))


# --------------------------------------------------------------------------- attempts


def begin_attempt(
    session: Session,
    job: Job,
    *,
    launcher: str,
    price_per_hour: float,
    zone: str | None = None,
    machine_type: str | None = None,
    gpu_type: str | None = None,
    gpu_count: int | None = None,
    spot: bool | None = None,
    now: datetime | None = None,
) -> Attempt:
    """Job PENDING -> LAUNCHING and a new LAUNCHING attempt row; commit before launching.

    The unique (job_id, attempt_no) makes a second controller racing on the same job fail at
    flush time instead of launching twice. (`begin_attempts()` does the same for many jobs.)
    """
    now = now or utcnow()
    attempt_no = job.current_attempt + 1
    attempt = Attempt(
        job_id=saved_id(job),
        attempt_no=attempt_no,
        status=JobStatus.LAUNCHING,
        launcher=launcher,
        machine_type=machine_type or job.machine_type,
        gpu_type=gpu_type if gpu_type is not None else job.gpu_type,
        gpu_count=gpu_count if gpu_count is not None else job.gpu_count,
        spot=spot if spot is not None else job.spot,
        zone=zone,
        region=region_of_zone(zone),
        created_at=now,
        price_per_hour=price_per_hour,
    )
    job.current_attempt = attempt_no
    transition(
        session,
        job,
        JobStatus.LAUNCHING,
        f"attempt {attempt_no} on {launcher}",
        attempt_no=attempt_no,
        now=now,
    )
    session.add(attempt)
    session.flush()
    return attempt


def begin_attempts(
    session: Session,
    launches: Sequence[tuple[Any, str, float]],
    *,
    now: datetime | None = None,
    uris: Mapping[int, str] | None = None,
) -> dict[int, tuple[int, int]]:
    """`begin_attempt()` for many jobs at once: (job, launcher, price per hour) each, where job
    is a PENDING job row or object (not refreshed: its columns are written with Core), and
    `uris` sets the jobs' store URIs on the way. Jobs -> LAUNCHING (one UPDATE, one INSERT of
    events) and one INSERT of the LAUNCHING attempts; returns {job id: (attempt id, attempt
    no)}. Commit before launching."""
    if not launches:
        return {}
    now = now or utcnow()
    jobs = [job for job, _, _ in launches]
    numbers = [job.current_attempt + 1 for job in jobs]
    extra = [
        {"current_attempt": n, **({"uri": uris[job.id]} if uris is not None else {})}
        for job, n in zip(jobs, numbers)
    ]
    transition_rows(
        session,
        jobs,
        JobStatus.LAUNCHING,
        [f"attempt {n} on {launcher}" for n, (_, launcher, _) in zip(numbers, launches)],
        now=now,
        extra=extra,
        attempt_nos=numbers,
    )
    table = Attempt.__table__
    rows = [
        {
            "job_id": job.id,
            "attempt_no": n,
            "status": JobStatus.LAUNCHING.value,
            "launcher": launcher,
            "instance_id": None,
            "machine_type": job.machine_type,
            "gpu_type": job.gpu_type,
            "gpu_count": job.gpu_count,
            "spot": job.spot,
            "zone": None,
            "region": None,
            "created_at": now,
            "launched_at": None,
            "ended_at": None,
            "last_heartbeat": None,
            "exit_code": None,
            "failure_reason": None,
            "price_per_hour": price,
            "cost_usd": 0.0,
            "gpu_hours": 0.0,
            "ingest_cursor": {},
        }
        for (job, launcher, price), n in zip(launches, numbers)
    ]
    conn = session.connection()
    bulk_insert(conn, table, rows)
    wanted = {job.id: n for job, n in zip(jobs, numbers)}
    created = conn.execute(
        sa.select(table.c.id, table.c.job_id, table.c.attempt_no).where(
            table.c.job_id.in_(list(wanted))
        )
    )
    return {job_id: (attempt_id, no) for attempt_id, job_id, no in created if wanted[job_id] == no}


def mark_launched_rows(
    session: Session, launched: Sequence[tuple[Any, str]], *, now: datetime | None = None
) -> int:
    """`mark_launched()` for many attempts at once: (row of `attempt_state_rows`, instance id)
    each, all LAUNCHING. Billing starts; jobs -> RUNNING (one UPDATE each, one INSERT)."""
    if not launched:
        return 0
    now = now or utcnow()
    session.flush()
    bulk_update(
        session.connection(),
        Attempt.__table__,
        [
            {
                "_id": r.attempt_id,
                "_old": JobStatus.LAUNCHING.value,
                "status": JobStatus.RUNNING.value,
                "instance_id": iid,
                "launched_at": r.attempt_launched_at or now,
            }
            for r, iid in launched
        ],
        guard=("status", "_old"),
    )
    return transition_rows(
        session,
        [r for r, _ in launched],
        JobStatus.RUNNING,
        [f"launched as {iid}" for _, iid in launched],
        now=now,
        attempt_nos=[r.attempt_no for r, _ in launched],
    )


def mark_launched(
    session: Session, job: Job, attempt: Attempt, instance_id: str, *, now: datetime | None = None
) -> None:
    """The launcher accepted: record the instance, start billing, job LAUNCHING -> RUNNING."""
    now = now or utcnow()
    attempt.instance_id = instance_id
    attempt.launched_at = attempt.launched_at or now
    attempt.status = JobStatus.RUNNING
    session.add(attempt)
    transition(
        session,
        job,
        JobStatus.RUNNING,
        f"launched as {instance_id}",
        attempt_no=attempt.attempt_no,
        now=now,
    )


def end_attempt(
    session: Session,
    job: Job,
    attempt: Attempt,
    status: JobStatus | str,
    *,
    exit_code: int | None = None,
    failure_reason: str | None = None,
    reason: str = "",
    now: datetime | None = None,
) -> None:
    """Close `attempt` (SUCCEEDED / FAILED / PREEMPTED / CANCELLED): stop billing, fix its cost,
    and move the job to the same state (one Event row)."""
    now = now or utcnow()
    status = JobStatus(status)
    attempt.status = status
    attempt.exit_code = exit_code
    attempt.failure_reason = failure_reason
    if attempt.ended_at is None:
        attempt.ended_at = now
    _accrue(attempt, attempt.ended_at)
    session.add(attempt)
    transition(
        session,
        job,
        status,
        reason or failure_reason or status.lower(),
        attempt_no=attempt.attempt_no,
        now=now,
        detail={"exit_code": exit_code} if exit_code is not None else None,
    )


def _accrue(attempt: Attempt, until: datetime) -> None:
    hours = hours_between(attempt.launched_at, until)
    attempt.cost_usd = accrued_cost(attempt.price_per_hour, attempt.launched_at, until)
    attempt.gpu_hours = hours * attempt.gpu_count


def accrue_costs(session: Session, *, now: datetime | None = None) -> int:
    """Bring cost_usd / gpu_hours of every open (launched, not ended) attempt up to `now`
    (one SELECT and one UPDATE for all of them)."""
    now = now or utcnow()
    t = Attempt.__table__
    rows = session.execute(
        sa.select(t.c.id, t.c.launched_at, t.c.price_per_hour, t.c.gpu_count).where(
            t.c.status.in_([s.value for s in _OPEN]),  # (the status index finds them)
            t.c.launched_at.is_not(None),
            t.c.ended_at.is_(None),
        )
    ).all()
    if rows:
        session.flush()
        bulk_update(
            session.connection(),
            t,
            [
                {
                    "_id": aid,
                    "cost_usd": accrued_cost(price, launched, now),
                    "gpu_hours": hours_between(launched, now) * gpus,
                }
                for aid, launched, price, gpus in rows
            ],
        )
    return len(rows)


def record_heartbeat(session: Session, job: Job, attempt: Attempt, when: datetime) -> None:
    """Liveness: newest heartbeat time on the attempt and the job (never moves backwards)."""
    if attempt.last_heartbeat is None or when > attempt.last_heartbeat:
        attempt.last_heartbeat = when
        session.add(attempt)
    if job.last_heartbeat is None or when > job.last_heartbeat:
        job.last_heartbeat = when
        session.add(job)


def requeue(
    session: Session, job: Job, reason: str, *, manual: bool = False, now: datetime | None = None
) -> None:
    """PREEMPTED / FAILED -> PENDING (a recovery); FAILED needs retries left unless manual."""
    transition(session, job, JobStatus.PENDING, reason, manual=manual, now=now)
    job.retry_requested = False


def requeue_rows(
    session: Session,
    rows: Sequence[sa.Row],
    reasons: str | Sequence[str],
    *,
    manual: bool = False,
    now: datetime | None = None,
    extra: Mapping[str, Any] | None = None,
) -> int:
    """`requeue()` for many `state_rows` at once (one UPDATE, one INSERT of events)."""
    return transition_rows(
        session,
        rows,
        JobStatus.PENDING,
        reasons,
        manual=manual,
        now=now,
        extra={"retry_requested": False, **(extra or {})},
    )


def no_more_retries(session: Session, job: Job) -> None:
    """Make a FAILED job final: no automatic retry (a user's retry still works), so its
    dependants are cancelled and its campaign can settle."""
    job.retries = max(job.retries, job.max_retries)
    session.add(job)


# --------------------------------------------------------------------------- intents


def apply_simple_intents(session: Session, *, now: datetime | None = None) -> dict[str, list[int]]:
    """Act on the intents that need no machine: cancel jobs that are PENDING/PREEMPTED (or whose
    dependencies can never succeed), and requeue FAILED jobs whose retry was requested.

    Returns {"cancelled": [...], "retried": [...], "to_stop": [...]} where to_stop lists jobs in
    LAUNCHING/RUNNING with cancel_requested: the controller must stop their instances and then
    call `end_attempt(..., CANCELLED)`. Each kind of move is one bulk transition; jobs whose
    dependants this cancels are cancelled by the next call (one level of the DAG per pass).
    """
    now = now or utcnow()
    out: dict[str, list[int]] = {"cancelled": [], "retried": [], "to_stop": []}
    rows = state_rows(
        session,
        col(Job.cancel_requested).is_(True),
        col(Job.status).in_(
            [JobStatus.PENDING, JobStatus.PREEMPTED, JobStatus.LAUNCHING, JobStatus.RUNNING]
        ),
    )
    out["to_stop"] = [r.id for r in rows if r.status in _OPEN]
    stop_now = [r for r in rows if r.status not in _OPEN]
    transition_rows(
        session, stop_now, JobStatus.CANCELLED, "cancel requested", actor="controller", now=now
    )
    dead = state_rows_of(session, dead_dependency_ids(session))
    transition_rows(
        session, dead, JobStatus.CANCELLED, "a dependency failed or was cancelled", now=now
    )
    out["cancelled"] = [r.id for r in (*stop_now, *dead)]
    retry = state_rows(
        session, col(Job.retry_requested).is_(True), col(Job.status) == JobStatus.FAILED
    )
    requeue_rows(
        session,
        retry,
        "retry requested",
        manual=True,
        now=now,
        extra={"desired_state": DesiredState.RUN},
    )
    out["retried"] = [r.id for r in retry]
    return out


def settle_campaigns(session: Session, *, now: datetime | None = None) -> dict[int, str]:
    """Mark ACTIVE / CANCELLING campaigns whose jobs are all final: FAILED if any job failed
    for good, else CANCELLED if any job was cancelled, else SUCCEEDED. A FAILED job that will
    still be retried (retries left in an ACTIVE campaign, or a retry requested) is not final."""
    now = now or utcnow()
    changed: dict[int, str] = {}
    # a campaign with a job that is not final cannot settle: only the others are counted
    unsettled = (
        sa.select(col(Job.id))
        .where(
            col(Job.campaign_id) == Campaign.id,
            col(Job.status).in_(
                [JobStatus.PENDING, JobStatus.LAUNCHING, JobStatus.RUNNING, JobStatus.PREEMPTED]
            ),
        )
        .exists()
    )
    candidates = sa.select(col(Campaign.id)).where(
        col(Campaign.status).in_([CampaignStatus.ACTIVE, CampaignStatus.CANCELLING]), ~unsettled
    )
    ids = list(session.execute(candidates).scalars())
    if not ids:
        return changed
    retries_left = col(Job.retries) < Job.max_retries
    q = (
        sa.select(
            col(Job.campaign_id),
            col(Job.status),
            retries_left,
            col(Job.retry_requested),
            col(Job.cancel_requested),
            col(Campaign.status),
            sa.func.count(),
        )
        .join(Campaign, col(Campaign.id) == Job.campaign_id)
        .where(col(Campaign.id).in_(ids))
        .group_by(
            col(Job.campaign_id),
            col(Job.status),
            retries_left,
            col(Job.retry_requested),
            col(Job.cancel_requested),
            col(Campaign.status),
        )
    )
    per: dict[int, dict[str, int]] = {}
    for cid, status, left, retry_req, cancel_req, camp_status, n in session.execute(q):
        c = per.setdefault(cid, {})
        key = status
        will_retry = retry_req or (left and not cancel_req and camp_status == CampaignStatus.ACTIVE)
        if status == JobStatus.FAILED and will_retry:
            key = "FAILED_RETRYABLE"
        c[key] = c.get(key, 0) + n
    for cid, counts in per.items():
        if set(counts) - {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}:
            continue
        camp = session.get_one(Campaign, cid)  # (cid came from joining its row)
        if counts.get(JobStatus.FAILED):
            new = CampaignStatus.FAILED
        elif counts.get(JobStatus.CANCELLED):
            new = CampaignStatus.CANCELLED
        else:
            new = CampaignStatus.SUCCEEDED
        old = camp.status
        camp.status = new
        camp.updated_at = now
        session.add(camp)
        session.add(
            Event(
                campaign_id=cid,
                time=now,
                from_state=old,
                to_state=new,
                reason="all jobs final",
                actor="controller",
                detail=counts,
            )
        )
        changed[cid] = new
    return changed


# --------------------------------------------------------------------------- ingest


def _insert_ignore(session: Session, table: sa.Table, index_elements: Sequence[str]):
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return pg_dialect.insert(table).on_conflict_do_nothing(index_elements=list(index_elements))
    if dialect == "sqlite":
        return sqlite_dialect.insert(table).on_conflict_do_nothing(
            index_elements=list(index_elements)
        )
    raise NotImplementedError(
        f"idempotent ingest is implemented for sqlite and postgresql, not {dialect}"
    )


def _insert_count(
    session: Session, stmt, rows: Sequence[Mapping[str, Any]], table: sa.Table
) -> int:
    """Run an INSERT ... ON CONFLICT DO NOTHING over `rows`; return how many were inserted.

    SQLite's executemany reports the summed rowcount; psycopg's batched executemany does not,
    so on PostgreSQL the inserted rows are counted through RETURNING.
    """
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        first_pk = next(iter(table.primary_key.columns))
        return len(conn.execute(stmt.returning(first_pk), list(rows)).all())
    return max(int(conn.execute(stmt, list(rows)).rowcount), 0)


_METRIC_KEY = ("job_id", "name", "member", "step", "attempt_no")
_METRIC_COLS = ("job_id", "name", "member", "step", "attempt_no", "epoch", "value")
_COPY_THRESHOLD = 500

_PG_METRIC_TEMP = sa.text(
    "CREATE TEMP TABLE IF NOT EXISTS _metric_in "
    "(job_id integer, name varchar(64), member integer, step integer, attempt_no integer, "
    "epoch integer, value double precision) ON COMMIT DELETE ROWS"
)
_PG_METRIC_COPY = (
    "COPY _metric_in (job_id, name, member, step, attempt_no, epoch, value) FROM STDIN"
)
_PG_METRIC_MERGE = sa.text(
    "INSERT INTO metric_point (job_id, name, member, step, attempt_no, epoch, value) "
    "SELECT job_id, name, member, step, attempt_no, epoch, value FROM _metric_in "
    "ON CONFLICT (job_id, name, member, step, attempt_no) DO NOTHING"
)
_PG_METRIC_CLEAR = sa.text("DELETE FROM _metric_in")


def metric_rows(
    job_id: int,
    attempt_no: int,
    records: Iterable[Mapping[str, Any]],
    member_map: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Worker metric records -> metric_point rows. Member indices local to the job's pack
    (0..k-1) become global ensemble indices through `member_map` (the job's `members`)."""
    rows = []
    for r in records:
        member = int(r.get("member", -1) if r.get("member") is not None else -1)
        if member_map and 0 <= member < len(member_map):
            member = int(member_map[member])
        epoch = r.get("epoch")
        rows.append(
            {
                "job_id": job_id,
                "name": str(r["name"]),
                "member": member,
                "step": int(r["step"]),
                "attempt_no": attempt_no,
                "epoch": None if epoch is None else int(epoch),
                "value": float(r["value"]),
            }
        )
    return rows


def insert_metric_rows(session: Session, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert metric rows, skipping ones already present; returns how many were new.

    PostgreSQL with many rows: COPY into a temp table, then one INSERT ... SELECT ... ON
    CONFLICT DO NOTHING. Otherwise an executemany INSERT ... ON CONFLICT DO NOTHING.
    """
    if not rows:
        return 0
    if session.get_bind().dialect.name == "postgresql" and len(rows) >= _COPY_THRESHOLD:
        conn = session.connection()
        conn.execute(_PG_METRIC_TEMP)
        conn.execute(_PG_METRIC_CLEAR)
        raw = conn.connection.driver_connection  # psycopg.Connection
        if raw is None:  # (only once the connection is closed)
            raise RuntimeError("the database connection is closed")
        with raw.cursor() as cur, cur.copy(_PG_METRIC_COPY) as copy:
            for r in rows:
                copy.write_row(tuple(r[c] for c in _METRIC_COLS))
        n = conn.execute(_PG_METRIC_MERGE).rowcount
        conn.execute(_PG_METRIC_CLEAR)
        return int(n)
    stmt = _insert_ignore(session, MetricPoint.__table__, _METRIC_KEY)
    return _insert_count(session, stmt, rows, MetricPoint.__table__)


def ingest_metrics(
    session: Session,
    job: Job,
    attempt_no: int,
    records: Iterable[Mapping[str, Any]],
) -> int:
    """Ingest one metrics segment of an attempt (idempotent); returns the number of new points."""
    return insert_metric_rows(
        session, metric_rows(saved_id(job), attempt_no, records, job.members or None)
    )


def ingest_resources(
    session: Session, job_id: int, attempt_no: int, samples: Iterable[Mapping[str, Any]]
) -> int:
    """Ingest resource samples ({"time": datetime or epoch seconds, "cpu_percent", "rss_bytes",
    "gpus": [...]}) of an attempt, skipping ones already present; returns how many were new."""
    from datetime import UTC

    rows = []
    for s in samples:
        t = s["time"]
        if isinstance(t, (int, float)):
            t = datetime.fromtimestamp(float(t), UTC)
        elif isinstance(t, str):
            t = datetime.fromisoformat(t)
            t = t if t.tzinfo else t.replace(tzinfo=UTC)
        rows.append(
            {
                "job_id": job_id,
                "attempt_no": attempt_no,
                "time": t,
                "cpu_percent": s.get("cpu_percent"),
                "rss_bytes": s.get("rss_bytes"),
                "gpus": list(s.get("gpus") or []),
            }
        )
    if not rows:
        return 0
    stmt = _insert_ignore(session, ResourceSample.__table__, ("job_id", "attempt_no", "time"))
    return _insert_count(session, stmt, rows, ResourceSample.__table__)


def record_artifact(
    session: Session,
    job_id: int,
    kind: str,
    uri: str,
    *,
    attempt_no: int | None = None,
    size_bytes: int | None = None,
    checksum: str | None = None,
) -> bool:
    """Record an artifact once per URI; returns True if it was new."""
    stmt = _insert_ignore(session, Artifact.__table__, ("uri",))
    row = {
        "job_id": job_id,
        "attempt_no": attempt_no,
        "kind": kind,
        "uri": uri,
        "size_bytes": size_bytes,
        "checksum": checksum,
        "created_at": utcnow(),
    }
    return _insert_count(session, stmt, [row], Artifact.__table__) > 0


def record_fit_result(
    session: Session,
    job: Job,
    payload: Mapping[str, Any],
    *,
    mu_hat: float | None = None,
    sigma: float | None = None,
) -> FitResult:
    """Store (or replace) the result summary of a job: fit-like jobs (fit, impacts, scan,
    toys) for `results_view.fit_results`, and train jobs too (their summary's "diagnostics"
    feed `results_view.campaign_diagnostics`). One row per job."""
    row = session.exec(select(FitResult).where(FitResult.job_id == job.id)).first()
    if row is None:
        row = FitResult(job_id=saved_id(job), campaign_id=job.campaign_id, kind=job.kind)
    row.payload = dict(payload)
    row.mu_hat = mu_hat
    row.sigma = sigma
    row.created_at = utcnow()
    session.add(row)
    return row


def set_ingest_cursor(session: Session, attempt: Attempt, stream: str, seq: int) -> None:
    """Remember the last segment of `stream` ingested for this attempt (never moves back)."""
    cur = dict(attempt.ingest_cursor or {})
    if seq > int(cur.get(stream, 0)):
        cur[stream] = int(seq)
        attempt.ingest_cursor = cur  # reassign: JSON columns do not track in-place changes
        session.add(attempt)


record_job_result = record_fit_result  # the same row serves every job kind
