"""Job and campaign states, and the one table that says which job transitions are legal.

The rules only: `check_transition()` refuses illegal moves with `IllegalTransition`, and
`moved()` says what a legal move does to a job's state columns (retry and recovery counters,
timestamps). Writing a move with its `Event` row (the audit trail) is `backend.db.transitions`
(`transition()` for one ORM job, `transition_rows()` for many plain rows); this module imports
nothing of the database, so the tables (`backend.db.models`) can import it.

    PENDING -> LAUNCHING -> RUNNING -> SUCCEEDED | FAILED | CANCELLED
    RUNNING (or LAUNCHING) -> PREEMPTED -> PENDING        (recovery; resumes from checkpoint)
    FAILED -> PENDING                                     (retry, within the job's retry limit)
    PENDING | LAUNCHING | PREEMPTED -> CANCELLED
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any


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


def check_transition(
    old: JobStatus | str, new: JobStatus | str, *, job_id: int | None = None
) -> None:
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
JOB_STATE_COLUMNS = (
    "id",
    "campaign_id",
    "status",
    "current_attempt",
    "retries",
    "max_retries",
    "recoveries",
    "started_at",
    "finished_at",
)


class StaleJobState(RuntimeError):
    """A bulk transition found a job no longer in the state it was read in: its transaction
    holds a partial update and must be rolled back (the controller's pass does)."""


def moved(
    job: Any, new_state: JobStatus | str, reason: str, *, manual: bool = False, now: datetime
) -> dict[str, Any]:
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
    started_at = (
        job.started_at if job.started_at is not None or new is not JobStatus.RUNNING else now
    )
    return {
        "status": new,
        "status_reason": reason,
        "updated_at": now,
        "retries": retries,
        "recoveries": recoveries,
        "started_at": started_at,
        "finished_at": finished_at,
    }
