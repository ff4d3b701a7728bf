"""Job state changes written through a session, by the rules of `backend.states`.

`transition()` moves one job (an ORM object) by `backend.states.moved()` and queues its
`Event` row (the audit trail) in `session.info`; the queued rows of a session are written with
one multi-row INSERT when the session next flushes (before the job rows it changed; a commit
flushes), so a controller pass that moves hundreds of jobs writes their history in one
statement, not one per job, and a rollback drops them with the jobs' changes.
`transition_rows()` moves many jobs read as plain rows by the same rules, with one UPDATE and
one INSERT of events: the controller's bulk steps use it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from backend.db.bulk import bulk_insert, bulk_update
from backend.db.models import Event, Job
from backend.states import JobStatus, StaleJobState, moved, utcnow

_PENDING_EVENTS = "nsbi_pending_events"  # key in Session.info: event rows not yet written


def _event_row(
    job: Any,
    new: JobStatus,
    reason: str,
    actor: str,
    attempt_no: int | None,
    now: datetime,
    detail: dict[str, Any] | None,
) -> dict[str, Any]:
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
    session: Session,
    job: Job,
    new_state: JobStatus | str,
    reason: str = "",
    *,
    actor: str = "controller",
    attempt_no: int | None = None,
    manual: bool = False,
    now: datetime | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Move `job` (an ORM object) to `new_state` by the rules of `backend.states.moved()`, update its counters
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
    session: Session,
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
    now = now or utcnow()
    new = JobStatus(new_state)
    texts = [reasons] * len(rows) if isinstance(reasons, str) else list(reasons)
    extras = (
        [extra or {}] * len(rows) if extra is None or isinstance(extra, Mapping) else list(extra)
    )
    numbers = [None] * len(rows) if attempt_nos is None else list(attempt_nos)
    if not len(texts) == len(extras) == len(numbers) == len(rows):
        raise ValueError(
            f"transition_rows: {len(rows)} rows but {len(texts)} reasons, {len(extras)} extras "
            f"and {len(numbers)} attempt numbers"
        )
    params, events = [], []
    for row, text, more, number in zip(rows, texts, extras, numbers):
        changes = moved(row, new, text, manual=manual, now=now)
        params.append({**changes, **more, "_id": row.id, "_old": JobStatus(row.status).value})
        events.append(_event_row(row, new, text, actor, number, now, None))
    session.flush()  # what the session already holds goes first (its events keep their order)
    conn = session.connection()
    updated = bulk_update(conn, Job.__table__, params, guard=("status", "_old"))
    if updated is not None and updated != len(params):
        raise StaleJobState(
            f"{len(params) - updated} of {len(params)} jobs changed state while being "
            f"moved to {new}; the transaction must be rolled back"
        )
    bulk_insert(conn, Event.__table__, events)
    return len(params)


def _pending_events(session: Session) -> list[dict[str, Any]]:
    """The session's queue of event rows; the first use hooks the session's flush and end."""
    rows = session.info.get(_PENDING_EVENTS)
    if rows is None:
        rows = session.info[_PENDING_EVENTS] = []
        sa.event.listen(session, "before_flush", _write_events)
        sa.event.listen(session, "after_transaction_end", _drop_events)
    return rows


def _write_events(session: Session, _flush_context: Any, _instances: Any) -> None:
    rows = session.info.get(_PENDING_EVENTS)
    if rows:
        batch = list(rows)
        rows.clear()
        session.connection().execute(sa.insert(Event.__table__), batch)


def _drop_events(session: Session, transaction: Any) -> None:
    """A transaction that ends without flushing them (a rollback, a close) drops its events."""
    if transaction.parent is None:
        session.info.get(_PENDING_EVENTS, []).clear()
