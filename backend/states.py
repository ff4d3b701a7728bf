"""Job and campaign states, and the one table that says which job transitions are legal.

Every change of a job's `status` goes through `transition()`, which refuses illegal moves with
`IllegalTransition` and writes an `Event` row (the audit trail) in the same session, so the
state and its history commit or roll back together. The event rows of a session wait in
`session.info` and are written with one multi-row INSERT when the session next flushes (before
the job rows it changed; a commit flushes), so a controller pass that moves hundreds of jobs
writes their history in one statement, not one per job; a rollback drops them with the jobs'
changes. `transition_rows()` moves many jobs read as plain rows by the same rules (`moved()`),
with one UPDATE and one INSERT of events: the controller's bulk steps use it.

    PENDING -> LAUNCHING -> RUNNING -> SUCCEEDED | FAILED | CANCELLED
    RUNNING (or LAUNCHING) -> PREEMPTED -> PENDING        (recovery; resumes from checkpoint)
    FAILED -> PENDING                                     (retry, within the job's retry limit)
    PENDING | LAUNCHING | PREEMPTED -> CANCELLED
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:  # pragma: no cover
    from sqlmodel import Session

    from backend.db.models import Job

_PENDING_EVENTS = "nsbi_pending_events"  # key in Session.info: event rows not yet written


class JobStatus(enum.StrEnum):
    """Where a job is in its life. Stored as its string value."""

    PENDING = "PENDING"  # waiting for its dependencies, a launch request, budget or a slot
    LAUNCHING = "LAUNCHING"  # an attempt row exists; the launcher has been (or is being) called
    RUNNING = "RUNNING"  # the launcher accepted; the worker heartbeats into the store
    SUCCEEDED = "SUCCEEDED"  # the worker wrote exit.json with code 0 and its result
    FAILED = "FAILED"  # non-zero exit, launch error or lost heartbeat; may be retried
    PREEMPTED = "PREEMPTED"  # the machine went away (spot); goes back to PENDING
    CANCELLED = "CANCELLED"  # stopped on request; final

    def is_terminal(self) -> bool:
        """True where nothing happens without a new intent (FAILED may still be retried)."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)

    def is_active(self) -> bool:
        """True while a machine may be running (or about to run) for this job."""
        return self in (JobStatus.LAUNCHING, JobStatus.RUNNING)


TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset({JobStatus.LAUNCHING, JobStatus.CANCELLED}),
    JobStatus.LAUNCHING: frozenset(
        {JobStatus.RUNNING, JobStatus.FAILED, JobStatus.PREEMPTED, JobStatus.CANCELLED}
    ),
    JobStatus.RUNNING: frozenset(
        {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.PREEMPTED, JobStatus.CANCELLED}
    ),
    JobStatus.PREEMPTED: frozenset({JobStatus.PENDING, JobStatus.FAILED, JobStatus.CANCELLED}),
    JobStatus.FAILED: frozenset({JobStatus.PENDING}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


class CampaignStatus(enum.StrEnum):
    """A campaign's status; CREATED and ACTIVE are intents the controller reads."""

    CREATED = "CREATED"  # jobs exist, nothing launches until a launch is requested
    ACTIVE = "ACTIVE"  # launch requested: the controller may launch ready jobs
    CANCELLING = "CANCELLING"  # cancel requested: the controller stops its jobs
    CANCELLED = "CANCELLED"  # every job is final, none failed, some were cancelled
    SUCCEEDED = "SUCCEEDED"  # every job succeeded
    FAILED = "FAILED"  # every job is final and at least one failed beyond its retry limit


class DesiredState(enum.StrEnum):
    """The user's intent for a job; the controller only launches jobs marked RUN."""

    HOLD = "HOLD"
    RUN = "RUN"


class IllegalTransition(ValueError):
    """A job state change that the transition table does not allow."""


class RetryLimitExceeded(IllegalTransition):
    """FAILED -> PENDING when the job has used up its automatic retries."""


def check_transition(old: JobStatus | str, new: JobStatus | str, *, job_id: int | None = None) -> None:
    """Raise `IllegalTransition` naming both states and the allowed ones unless old -> new is legal."""
    old_s, new_s = JobStatus(old), JobStatus(new)
    allowed = TRANSITIONS[old_s]
    if new_s not in allowed:
        where = f"job {job_id}: " if job_id is not None else ""
        allowed_txt = ", ".join(sorted(allowed)) or "nothing (final state)"
        raise IllegalTransition(
            f"{where}illegal transition {old_s} -> {new_s}; from {old_s} allowed: {allowed_txt}"
        )


def utcnow() -> datetime:
    return datetime.now(UTC)


# What a transition reads from a job row (ORM object or Core row).
JOB_STATE_COLUMNS = ("id", "campaign_id", "status", "current_attempt", "retries", "max_retries", "recoveries",
                     "started_at", "finished_at")


class StaleJobState(RuntimeError):
    """A bulk transition found a job no longer in the state it was read in: its transaction
    holds a partial update and must be rolled back (the controller's pass does)."""


def moved(job: Any, new_state: JobStatus | str, reason: str, *, manual: bool = False,
          now: datetime) -> dict[str, Any]:
    """The job's state columns after the legal move to `new_state` (status, status_reason,
    updated_at, retries, recoveries, started_at, finished_at), from a row with
    `JOB_STATE_COLUMNS`; raises `IllegalTransition` / `RetryLimitExceeded` otherwise.

    FAILED -> PENDING is refused with `RetryLimitExceeded` once `retries >= max_retries`, unless
    `manual=True` (a user's explicit retry). PREEMPTED -> PENDING counts as a recovery but not as
    a retry: preemption is the cloud's doing, not the job's.
    """
    old = JobStatus(job.status)
    new = JobStatus(new_state)
    check_transition(old, new, job_id=job.id)
    retries, recoveries = job.retries, job.recoveries
    if old is JobStatus.FAILED and new is JobStatus.PENDING:
        if not manual and job.retries >= job.max_retries:
            raise RetryLimitExceeded(
                f"job {job.id}: retry limit reached ({job.retries} of {job.max_retries} retries used); "
                "FAILED -> PENDING needs a manual retry"
            )
        retries += 1
        recoveries += 1
    elif old is JobStatus.PREEMPTED and new is JobStatus.PENDING:
        recoveries += 1
    finished_at = job.finished_at
    if new.is_terminal():
        finished_at = now
    elif new is JobStatus.PENDING:
        finished_at = None
    started_at = job.started_at if job.started_at is not None or new is not JobStatus.RUNNING else now
    return {"status": new, "status_reason": reason, "updated_at": now, "retries": retries,
            "recoveries": recoveries, "started_at": started_at, "finished_at": finished_at}


def _event_row(job: Any, new: JobStatus, reason: str, actor: str, attempt_no: int | None, now: datetime,
               detail: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "campaign_id": job.campaign_id,
        "job_id": job.id,
        "attempt_no": attempt_no if attempt_no is not None else (job.current_attempt or None),
        "time": now,
        "from_state": JobStatus(job.status).value,
        "to_state": new.value,
        "reason": reason,
        "actor": actor,
        "detail": detail or {},
    }


def transition(
    session: "Session",
    job: "Job",
    new_state: JobStatus | str,
    reason: str = "",
    *,
    actor: str = "controller",
    attempt_no: int | None = None,
    manual: bool = False,
    now: datetime | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Move `job` (an ORM object) to `new_state` by the rules of `moved()`, update its counters
    and timestamps, and queue its Event row (written at the session's next flush, see the
    module docstring); returns that row. Nothing changes when a move is refused. The caller
    commits.
    """
    now = now or utcnow()
    new = JobStatus(new_state)
    changes = moved(job, new, reason, manual=manual, now=now)
    event = _event_row(job, new, reason, actor, attempt_no, now, detail)
    for key, value in changes.items():
        if getattr(job, key) != value:
            setattr(job, key, value)
    session.add(job)
    _pending_events(session).append(event)
    return event


def transition_rows(
    session: "Session",
    rows: Sequence[Any],
    new_state: JobStatus | str,
    reasons: str | Sequence[str],
    *,
    actor: str = "controller",
    manual: bool = False,
    now: datetime | None = None,
    extra: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    attempt_nos: Sequence[int] | None = None,
) -> int:
    """`transition()` for many jobs read as plain rows (`JOB_STATE_COLUMNS`, e.g. Core rows):
    the same rules and events, one UPDATE for all of them (guarded by the state each was read
    in) and one INSERT of their events. Every move is checked before anything is written: one
    illegal move raises and changes nothing. `reasons` is one text or one per row; `extra` sets
    more columns (the same for all rows, or one mapping per row, same keys); `attempt_nos` (one
    per row) names the attempt in the events (default: the row's current one). Jobs of this
    session's identity map are not refreshed: use it on rows, not loaded objects. Returns the
    number of jobs moved.
    """
    if not rows:
        return 0
    from backend.db.models import Job

    now = now or utcnow()
    new = JobStatus(new_state)
    texts = [reasons] * len(rows) if isinstance(reasons, str) else list(reasons)
    extras = [extra or {}] * len(rows) if extra is None or isinstance(extra, Mapping) else list(extra)
    numbers = [None] * len(rows) if attempt_nos is None else list(attempt_nos)
    if not len(texts) == len(extras) == len(numbers) == len(rows):
        raise ValueError(f"transition_rows: {len(rows)} rows but {len(texts)} reasons, {len(extras)} extras "
                         f"and {len(numbers)} attempt numbers")
    params, events = [], []
    for row, text, more, number in zip(rows, texts, extras, numbers):
        changes = moved(row, new, text, manual=manual, now=now)
        params.append({**changes, **more, "_id": row.id, "_old": JobStatus(row.status).value})
        events.append(_event_row(row, new, text, actor, number, now, None))
    session.flush()  # what the session already holds goes first (its events keep their order)
    conn = session.connection()
    updated = bulk_update(conn, Job.__table__, params, guard=("status", "_old"))
    if updated is not None and updated != len(params):
        raise StaleJobState(f"{len(params) - updated} of {len(params)} jobs changed state while being "
                            f"moved to {new}; the transaction must be rolled back")
    bulk_insert(conn, _event_table(), events)
    return len(params)


def bulk_update(conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]], *,
                guard: tuple[str, str] | None = None) -> int | None:
    """UPDATE `table` SET <the rows' other keys> WHERE id = row["_id"] (and, with `guard`
    (column, key), column = row[key]) for every row; all rows have the same keys. Returns how
    many rows changed (None where the driver cannot tell). On PostgreSQL one statement joins
    the table to the rows passed as arrays (unnest), which costs a fraction of one statement
    per row; elsewhere an executemany."""
    if not rows:
        return 0
    keys = [k for k in rows[0] if not k.startswith("_")]
    if conn.dialect.name != "postgresql":
        where = [table.c.id == sa.bindparam("_id")]
        if guard:
            where.append(table.c[guard[0]] == sa.bindparam(guard[1]))
        stmt = sa.update(table).where(*where).values({k: sa.bindparam(k, type_=table.c[k].type) for k in keys})
        result = conn.execute(stmt, list(rows))
        return result.rowcount if conn.dialect.supports_sane_multi_rowcount else None
    columns = {"_id": table.c.id, **({guard[1]: table.c[guard[0]]} if guard else {}), **{k: table.c[k] for k in keys}}
    v, params = _unnest(columns, rows, always="_id")
    where = [table.c.id == v["_id"]] + ([table.c[guard[0]] == v[guard[1]]] if guard else [])
    return conn.execute(sa.update(table).where(*where).values({k: v[k] for k in keys}), params).rowcount


def bulk_insert(conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT `rows` (all with the same keys) into `table`: on PostgreSQL one INSERT ... SELECT
    from the rows passed as arrays, elsewhere an executemany."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(sa.insert(table), list(rows))
        return
    keys = list(rows[0])
    v, params = _unnest({k: table.c[k] for k in keys}, rows, always=keys[0])
    conn.execute(sa.insert(table).from_select(keys, sa.select(*[v[k] for k in keys])), params)


def _unnest(columns: Mapping[str, sa.Column], rows: Sequence[Mapping[str, Any]], *,
            always: str) -> tuple[Any, dict[str, Any]]:
    """PostgreSQL: {key: column expression} of the rows as a derived table (one array per key
    whose values differ, and for `always`, which gives the row count; one plain parameter per
    key whose values are all the same, e.g. a JSON default or the pass's time), and the
    parameters to execute it with."""
    from sqlalchemy.dialects.postgresql import ARRAY

    varying, params, exprs = [], {}, {}
    for i, (key, col) in enumerate(columns.items()):
        values = [row[key] for row in rows]
        if key != always and all(x == values[0] and type(x) is type(values[0]) for x in values[1:]):
            exprs[key] = sa.bindparam(f"c{i}", type_=col.type)
            params[f"c{i}"] = values[0]
        else:
            varying.append((key, f"a{i}", ARRAY(col.type)))
            params[f"a{i}"] = values
    table = (sa.func.unnest(*[sa.bindparam(name, type_=t) for _, name, t in varying])
             .table_valued(*[key for key, _, _ in varying]).render_derived(name="v", with_types=False))
    for key, _, _ in varying:
        exprs[key] = table.c[key]
    return exprs, params


def _event_table() -> sa.Table:
    from backend.db.models import Event

    return Event.__table__


def _pending_events(session: "Session") -> list[dict[str, Any]]:
    """The session's queue of event rows; the first use hooks the session's flush and end."""
    rows = session.info.get(_PENDING_EVENTS)
    if rows is None:
        rows = session.info[_PENDING_EVENTS] = []
        sa.event.listen(session, "before_flush", _write_events)
        sa.event.listen(session, "after_transaction_end", _drop_events)
    return rows


def _write_events(session: "Session", _flush_context: Any, _instances: Any) -> None:
    rows = session.info.get(_PENDING_EVENTS)
    if rows:
        batch = list(rows)
        rows.clear()
        session.connection().execute(sa.insert(_event_table()), batch)


def _drop_events(session: "Session", transaction: Any) -> None:
    """A transaction that ends without flushing them (a rollback, a close) drops its events."""
    if transaction.parent is None:
        session.info.get(_PENDING_EVENTS, []).clear()
