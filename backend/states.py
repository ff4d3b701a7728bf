"""Job and campaign states, and the one table that says which job transitions are legal.

Every change of a job's `status` goes through `transition()`, which refuses illegal moves with
`IllegalTransition` and writes an `Event` row (the audit trail) in the same session, so the
state and its history commit or roll back together.

    PENDING -> LAUNCHING -> RUNNING -> SUCCEEDED | FAILED | CANCELLED
    RUNNING (or LAUNCHING) -> PREEMPTED -> PENDING        (recovery; resumes from checkpoint)
    FAILED -> PENDING                                     (retry, within the job's retry limit)
    PENDING | LAUNCHING | PREEMPTED -> CANCELLED
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from sqlmodel import Session

    from backend.db.models import Event, Job


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
) -> "Event":
    """Move `job` to `new_state`, update its counters and timestamps, and add an Event row.

    FAILED -> PENDING is refused with `RetryLimitExceeded` once `job.retries >= job.max_retries`,
    unless `manual=True` (a user's explicit retry). PREEMPTED -> PENDING counts as a recovery but
    not as a retry: preemption is the cloud's doing, not the job's. The caller commits.
    """
    from backend.db.models import Event

    now = now or utcnow()
    old = JobStatus(job.status)
    new = JobStatus(new_state)
    check_transition(old, new, job_id=job.id)
    if old is JobStatus.FAILED and new is JobStatus.PENDING:
        if not manual and job.retries >= job.max_retries:
            raise RetryLimitExceeded(
                f"job {job.id}: retry limit reached ({job.retries} of {job.max_retries} retries used); "
                "FAILED -> PENDING needs a manual retry"
            )
        job.retries += 1
        job.recoveries += 1
    elif old is JobStatus.PREEMPTED and new is JobStatus.PENDING:
        job.recoveries += 1
    if new is JobStatus.RUNNING and job.started_at is None:
        job.started_at = now
    if new.is_terminal():
        job.finished_at = now
    elif new is JobStatus.PENDING:
        job.finished_at = None
    job.status = new
    job.status_reason = reason
    job.updated_at = now
    event = Event(
        campaign_id=job.campaign_id,
        job_id=job.id,
        attempt_no=attempt_no if attempt_no is not None else (job.current_attempt or None),
        time=now,
        from_state=old,
        to_state=new,
        reason=reason,
        actor=actor,
        detail=detail or {},
    )
    session.add(job)
    session.add(event)
    return event
