"""The job state machine: the table matches the spec, transitions write events, limits hold."""

from __future__ import annotations

import itertools

import pytest
from sqlmodel import select

from backend import jobs_repo, service
from backend.campaigns import demo_config
from backend.db import Event, Job, session_scope
from backend.db.transitions import transition
from backend.states import (
    TRANSITIONS,
    IllegalTransition,
    JobStatus,
    RetryLimitExceeded,
    check_transition,
)

P, L, R, S, F, X, C = (
    JobStatus.PENDING,
    JobStatus.LAUNCHING,
    JobStatus.RUNNING,
    JobStatus.SUCCEEDED,
    JobStatus.FAILED,
    JobStatus.PREEMPTED,
    JobStatus.CANCELLED,
)

# The spec, written out edge by edge (independently of TRANSITIONS).
SPEC_EDGES = {
    (P, L),
    (L, R),
    (R, S),
    (R, F),
    (R, C),  # the main line
    (R, X),
    (X, P),  # preemption and recovery
    (F, P),  # retry
    (P, C),
    (L, C),  # cancel before running
    (L, F),
    (L, X),
    (X, C),
    (X, F),  # launch failure / spot stock-out / cancel or give up while preempted
}


def test_table_is_exactly_the_spec():
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == SPEC_EDGES
    for a, b in itertools.product(JobStatus, JobStatus):
        if (a, b) in SPEC_EDGES:
            check_transition(a, b)
        else:
            with pytest.raises(IllegalTransition, match=f"{a} -> {b}"):
                check_transition(a, b)


def test_terminal_states_have_no_exit_but_failed_can_retry():
    assert not TRANSITIONS[S] and not TRANSITIONS[C]
    assert {s for s in JobStatus if s.is_terminal()} == {S, F, C}
    assert TRANSITIONS[F] == {P}


def _job(session, engine):
    cid = service.create_campaign(demo_config(), engine=engine)
    return session.exec(select(Job).where(Job.campaign_id == cid).order_by(Job.id)).first()


def test_every_transition_writes_one_event_and_illegal_ones_write_nothing(sqlite_engine):
    with session_scope(sqlite_engine) as s:
        job = _job(s, sqlite_engine)
        job.max_retries = 1
        path = [L, R, X, P, L, R, F, P, L, C]
        for new in path:
            transition(s, job, new, f"to {new}")
        s.flush()
        events = s.exec(select(Event).where(Event.job_id == job.id).order_by(Event.id)).all()
        assert [(e.from_state, e.to_state) for e in events] == list(zip([P, *path[:-1]], path))
        assert job.recoveries == 2 and job.retries == 1
        assert job.status == C and job.finished_at is not None
        with pytest.raises(IllegalTransition, match="CANCELLED -> PENDING"):
            transition(s, job, P, "nope")
        s.flush()
        assert len(s.exec(select(Event).where(Event.job_id == job.id)).all()) == len(path)


def test_retry_limit_is_enforced_unless_manual(sqlite_engine):
    with session_scope(sqlite_engine) as s:
        job = _job(s, sqlite_engine)
        assert job.max_retries == 2
        for _ in range(2):
            for new in (L, R, F):
                transition(s, job, new)
            transition(s, job, P, "auto retry")
        for new in (L, R, F):
            transition(s, job, new)
        with pytest.raises(RetryLimitExceeded, match="2 of 2"):
            transition(s, job, P, "auto retry")
        assert job.status == F
        transition(s, job, P, "user retry", manual=True)
        assert (job.retries, job.recoveries, job.status) == (3, 3, P)


def test_preemption_recoveries_do_not_use_retries(sqlite_engine):
    with session_scope(sqlite_engine) as s:
        job = _job(s, sqlite_engine)
        for _ in range(5):
            for new in (L, R, X, P):
                transition(s, job, new)
        assert (job.recoveries, job.retries) == (5, 0)


def test_attempt_protocol_is_crash_safe(sqlite_engine):
    """The attempt row exists (LAUNCHING) before the launcher is called, and a duplicate
    (job_id, attempt_no) is refused by the database."""
    import sqlalchemy as sa

    from backend.db import Attempt

    cid = service.create_campaign(demo_config(), engine=sqlite_engine)
    service.request_launch(cid, engine=sqlite_engine)
    with session_scope(sqlite_engine) as s:
        job = jobs_repo.ready_jobs(s)[0]
        jobs_repo.begin_attempt(s, job, launcher="local", price_per_hour=0.0)
    # "crash" here: a new session finds the half-done launch
    with session_scope(sqlite_engine) as s:
        half = jobs_repo.half_done_launches(s)
        assert [(j.id, a.attempt_no, a.status, a.instance_id) for j, a in half] == [
            (job.id, 1, L, None)
        ]
    with pytest.raises(sa.exc.IntegrityError):
        with session_scope(sqlite_engine) as s:
            s.add(Attempt(job_id=job.id, attempt_no=1, launcher="local"))


def _state_row(s, job_id):
    return jobs_repo.state_rows(s, Job.id == job_id)[0]


def test_bulk_transitions_follow_the_same_rules_and_write_the_same_events(engine):
    from backend.db.transitions import transition_rows
    from backend.states import StaleJobState

    cid = service.create_campaign(demo_config(), engine=engine)
    with session_scope(engine) as s:
        jobs = s.exec(select(Job).where(Job.campaign_id == cid).order_by(Job.id)).all()
        ids = [j.id for j in jobs[:3]]
        for j in jobs[:3]:
            j.max_retries = 1
            for new in (L, R, F):
                transition(s, j, new, f"to {new}")
    with session_scope(engine) as s:
        rows = jobs_repo.state_rows(s, Job.id.in_(ids))
        assert transition_rows(s, rows, P, ["a", "b", "c"], extra={"retry_requested": False}) == 3
    with session_scope(engine) as s:
        for jid, reason in zip(ids, "abc"):
            job = s.get(Job, jid)
            assert (
                job.status,
                job.retries,
                job.recoveries,
                job.status_reason,
                job.finished_at,
            ) == (P, 1, 1, reason, None)
            events = s.exec(select(Event).where(Event.job_id == jid).order_by(Event.id)).all()
            assert [(e.from_state, e.to_state, e.reason) for e in events][-1] == (F, P, reason)
        # the retry limit and the table hold for rows too, and a refused batch writes nothing
        rows = jobs_repo.state_rows(s, Job.id.in_(ids))
        with pytest.raises(IllegalTransition, match="PENDING -> RUNNING"):
            transition_rows(s, rows, R, "skip launching")
        for j in ids:
            transition(s, s.get(Job, j), L)
            transition(s, s.get(Job, j), R)
            transition(s, s.get(Job, j), F)
    with session_scope(engine) as s:
        n_events = len(s.exec(select(Event)).all())
        rows = jobs_repo.state_rows(s, Job.id.in_(ids))
        with pytest.raises(RetryLimitExceeded, match="1 of 1"):
            transition_rows(s, rows, P, "again")
        assert transition_rows(s, rows, P, "user retry", manual=True) == 3
        assert {_state_row(s, j).retries for j in ids} == {2}
        # a row read before someone else moved the job: nothing of the batch is kept
        stale = jobs_repo.state_rows(s, Job.id.in_(ids))
        transition_rows(s, stale[:1], L, "elsewhere")
        with pytest.raises(StaleJobState):
            transition_rows(s, stale, C, "cancel")
        s.rollback()
    with session_scope(engine) as s:
        assert len(s.exec(select(Event)).all()) == n_events
        assert {s.get(Job, j).status for j in ids} == {F}


def test_queued_events_go_with_the_transaction(sqlite_engine):
    with session_scope(sqlite_engine) as s:
        job = _job(s, sqlite_engine)
        job_id = job.id
    with session_scope(sqlite_engine) as s:
        job = s.get(Job, job_id)
        transition(s, job, L, "will be rolled back")
        s.rollback()  # the move and its event go together
        job = s.get(Job, job_id)
        assert job.status == P
        transition(s, job, C, "kept")
    with session_scope(sqlite_engine) as s:
        events = s.exec(select(Event).where(Event.job_id == job_id)).all()
        assert [(e.from_state, e.to_state, e.reason) for e in events] == [(P, C, "kept")]
        assert s.get(Job, job_id).status == C
