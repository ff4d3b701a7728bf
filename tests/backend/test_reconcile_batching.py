"""One reconcile pass does its database work in a fixed number of statements and commits,
however many jobs it moves, and still writes one audit event per transition (SQLite and
PostgreSQL). The launcher is the bench's, which accepts launches without starting processes."""

from __future__ import annotations

import random

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from backend.controller import Controller
from backend.db.models import Attempt, Event, Job
from backend.states import JobStatus
from benchmarks import controlplane as bench


class Counter:
    """Statements and commits sent to the database while active."""

    def __init__(self, engine) -> None:
        self.engine, self.statements, self.commits = engine, 0, 0

    def _statement(self, *_args) -> None:
        self.statements += 1

    def _commit(self, *_args) -> None:
        self.commits += 1

    def __enter__(self) -> Counter:
        sa.event.listen(self.engine, "before_cursor_execute", self._statement)
        sa.event.listen(self.engine, "commit", self._commit)
        return self

    def __exit__(self, *_exc) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._statement)
        sa.event.remove(self.engine, "commit", self._commit)


def _seed(engine, tmp_path, n_preempted: int) -> int:
    """A 300-job bench campaign with 8 RUNNING jobs; `n_preempted` more trainings PREEMPTED."""
    seeded = bench.seed_campaign(engine, 300, 8, random.Random(1), (tmp_path / "store").as_uri())
    (tmp_path / "store").mkdir(exist_ok=True)
    with engine.begin() as conn:
        ids = (
            conn.execute(
                sa.select(Job.id)
                .where(
                    Job.campaign_id == seeded.campaign_id,
                    Job.kind == "train",
                    Job.status == JobStatus.PENDING,
                )
                .order_by(Job.id.desc())
                .limit(n_preempted)
            )
            .scalars()
            .all()
        )
        conn.execute(sa.update(Job).where(Job.id.in_(ids)).values(status=JobStatus.PREEMPTED))
    return seeded.campaign_id


def _counts(engine) -> dict[str, int]:
    with Session(engine) as s:
        return {
            st: n
            for st, n in s.execute(sa.select(Job.status, sa.func.count()).group_by(Job.status))
        }


def test_a_busy_pass_uses_a_fixed_number_of_statements_and_writes_every_event(engine, tmp_path):
    _seed(engine, tmp_path, n_preempted=60)
    before = _counts(engine)
    with Session(engine) as s:
        n_events = s.execute(sa.select(sa.func.count()).select_from(Event)).scalar_one()
    launcher = bench.AcceptingLauncher("local")
    ctl = Controller(engine, (tmp_path / "store").as_uri(), {"local": launcher})
    with Counter(engine) as busy:
        report = ctl.tick()
    assert not report.errors, report.errors
    # 32 launches (the per-pass cap), every PREEMPTED job requeued, the fit cancelled (it waits
    # on trainings that failed for good)
    assert (report.launched, report.retried, report.cancelled) == (
        32,
        before[JobStatus.PREEMPTED],
        1,
    )
    assert report.retried >= 60
    # ...in a handful of commits and statements, not a few per job
    assert busy.commits <= 8, busy.commits
    assert busy.statements <= 40, busy.statements
    after = _counts(engine)
    assert (
        after[JobStatus.RUNNING] == before[JobStatus.RUNNING] + 32
        and JobStatus.PREEMPTED not in after
    )
    with Session(engine) as s:
        events = s.exec(select(Event).where(Event.id > n_events).order_by(Event.id)).all()
        moves = [(e.from_state, e.to_state) for e in events]
        assert moves.count(("PENDING", "LAUNCHING")) == moves.count(("LAUNCHING", "RUNNING")) == 32
        assert moves.count(("PREEMPTED", "PENDING")) == report.retried
        assert moves.count(("PENDING", "CANCELLED")) == 1 and len(moves) == 64 + report.retried + 1
        launched = s.exec(
            select(Job, Attempt)
            .join(Attempt, Attempt.job_id == Job.id)
            .where(Attempt.instance_id.in_(launcher.launched))
        ).all()
        assert len(launched) == 32
        for job, attempt in launched:
            assert (job.status, attempt.status, attempt.attempt_no) == (
                JobStatus.RUNNING,
                JobStatus.RUNNING,
                job.current_attempt,
            )
            assert job.started_at is not None and attempt.launched_at is not None
            running = [e for e in events if e.job_id == job.id and e.to_state == "RUNNING"]
            assert [e.attempt_no for e in running] == [attempt.attempt_no]
            assert running[0].reason == f"launched as {attempt.instance_id}"
    # a pass with nothing to do (the launcher is full) is cheaper still and writes no event
    launcher.slots = 0
    while ctl.tick().busy():
        pass
    with Session(engine) as s:
        n_events = s.execute(sa.select(sa.func.count()).select_from(Event)).scalar_one()
    with Counter(engine) as idle:
        assert not ctl.tick().busy()
    assert idle.commits <= 5 and idle.statements <= 16, (idle.commits, idle.statements)
    with Session(engine) as s:
        assert s.execute(sa.select(sa.func.count()).select_from(Event)).scalar_one() == n_events


def test_full_campaigns_and_launchers_are_not_scanned_again(sqlite_engine, tmp_path):
    """A pass whose launcher has no free slot looks at ready jobs once, not page after page."""
    _seed(sqlite_engine, tmp_path, n_preempted=0)
    ctl = Controller(
        sqlite_engine, (tmp_path / "store").as_uri(), {"local": bench.AcceptingLauncher("local", 0)}
    )
    ctl.tick()
    with Counter(sqlite_engine) as c:
        report = ctl.tick()
    assert report.launched == 0 and c.statements <= 16, c.statements


@pytest.mark.parametrize("budget", [0.5])
def test_budget_is_read_once_per_campaign_and_holds_back_what_does_not_fit(
    sqlite_file_engine, tmp_path, budget
):
    from nsbi_ctl_testkit import JobDef, make_campaign

    jobs = [JobDef(f"j{i}", machine_type="n1-standard-4", est_hours=1.0) for i in range(6)]
    make_campaign(sqlite_file_engine, jobs, max_concurrency=6, budget_usd=budget)
    (tmp_path / "store").mkdir()
    ctl = Controller(
        sqlite_file_engine,
        (tmp_path / "store").as_uri(),
        {"local": bench.AcceptingLauncher("local")},
    )
    report = ctl.tick()
    assert report.launched == 2  # 0.19 USD/h x 1 h each: two fit in 0.5 USD, a third would not
    with Session(sqlite_file_engine) as s:
        waiting = s.exec(select(Job).where(Job.status == JobStatus.PENDING).order_by(Job.id)).all()
    # the first job refused says why; the dearer-or-equal ones after it were not re-queried
    assert waiting[0].status_reason.startswith(
        "over budget: spent 0.00 + running 0.00 + next job 0.57"
    )
    assert len(waiting) == 4


def test_a_spec_that_cannot_be_written_holds_back_only_its_own_job(sqlite_engine, tmp_path):
    """No attempt is committed without its spec.json: the job whose dependency's result is
    missing stays PENDING with the reason reported; the others of the pass launch."""
    from nsbi_ctl_testkit import JobDef, make_campaign

    make_campaign(
        sqlite_engine,
        [JobDef("dep"), JobDef("x"), JobDef("y", deps=("dep",)), JobDef("z")],
        max_concurrency=4,
    )
    with Session(sqlite_engine) as s:
        dep = s.exec(select(Job).where(Job.name == "dep")).one()
        dep.status, dep.uri = (
            JobStatus.SUCCEEDED,
            (tmp_path / "store" / "gone").as_uri(),
        )  # no result.json there
        s.add(dep)
        s.commit()
    (tmp_path / "store").mkdir()
    launcher = bench.AcceptingLauncher("local")
    ctl = Controller(sqlite_engine, (tmp_path / "store").as_uri(), {"local": launcher})
    report = ctl.tick()
    assert report.launched == 2 and len(report.errors) == 1
    assert "dependency dep SUCCEEDED but its result.json is missing" in report.errors[0]
    with Session(sqlite_engine) as s:
        states = {j.name: (j.status, j.current_attempt) for j in s.exec(select(Job))}
        assert states == {
            "dep": (JobStatus.SUCCEEDED, 0),
            "x": (JobStatus.RUNNING, 1),
            "y": (JobStatus.PENDING, 0),
            "z": (JobStatus.RUNNING, 1),
        }
        assert (
            s.exec(
                select(Attempt).join(Job, Job.id == Attempt.job_id).where(Job.name == "y")
            ).first()
            is None
        )
        assert len(s.exec(select(Event).where(Event.to_state == "LAUNCHING")).all()) == 2
    store = ctl.store
    assert sorted(
        k.split("/")[-2] for k in store.list("campaigns/") if k.endswith("spec.json")
    ) == sorted(k for k in (_key(ctl, "x"), _key(ctl, "z")))


def _key(ctl, name: str) -> str:
    with Session(ctl.engine) as s:
        job = s.exec(select(Job).where(Job.name == name)).one()
        return job.uri.rsplit("/", 1)[-1]
