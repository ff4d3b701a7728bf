"""One controller per database (`backend.leader`): the leader lease, its fencing, and real
`nsbi controller` processes with different NSBI_HOMEs sharing one database and one store.

Issue 16 (finding 1): two such controllers fought over the same campaign -- each declared the
other's workers "gone", retried their jobs while they still ran, and failed the campaign.
Here two or three of them run a small campaign on PostgreSQL and on a SQLite file: one leads,
the others stand by; the leader is killed with SIGKILL mid-campaign; a standby takes over
within 30 s, adopts the running workers (no attempt runs twice, none is retried) and the
campaign succeeds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import sqlalchemy as sa
from nsbi_ctl_testkit import (
    FAST_ENV,
    JobDef,
    campaign_status,
    fresh_postgres_url,
    job_states,
    make_campaign,
    postgres_available,
)
from sqlmodel import Session, select

from backend.controller import Controller, ControllerConfig
from backend.db import create_engine, init_db
from backend.db.models import Attempt, Campaign, ControllerLease, Job
from backend.launchers.local import LocalLauncher
from backend.leader import LeaderLease, LeaseLost
from backend.states import CampaignStatus, JobStatus
from backend.stores import open_store
from nsbi_testing import unavailable, worker_env

REPO = Path(__file__).resolve().parents[2]
HANDOVER_LIMIT_S = 30.0


# ----------------------------------------------------------------------------- the lease itself


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request):
    """A SQLite file (WAL) or the test PostgreSQL schema, migrated to head."""
    return request.getfixturevalue(
        "sqlite_file_engine" if request.param == "sqlite" else "pg_engine"
    )


def _lease(engine, name: str, ttl: float = 0.6, renew: float = 0.2) -> LeaderLease:
    return LeaderLease(engine, ttl_s=ttl, renew_s=renew, holder=name)


def test_one_holder_at_a_time_and_the_token_grows_on_takeover(db):
    a, b = _lease(db, "a"), _lease(db, "b")
    assert a.try_acquire() and a.token == 1 and a.is_leader()
    assert not b.try_acquire() and b.token is None and not b.is_leader()
    assert a.try_acquire() and a.token == 1  # a renewal keeps the token
    time.sleep(0.7)  # a stops renewing: its lease runs out, first locally, then in the database
    assert not a.is_leader()
    assert b.try_acquire() and b.token == 2  # takeover: token + 1
    assert not a.try_acquire() and a.token is None  # a learns that it lost the lease
    b.release()
    assert a.try_acquire() and a.token == 3  # released: free at once, no expiry to wait for
    view = b.view()
    assert view is not None and view.holder == "a" and view.token == 3 and view.expires_in_s > 0


def test_a_deposed_holder_cannot_commit(db):
    """The fence: a write made under a lease that was taken over is rolled back, not committed."""
    engine = db
    a, b = _lease(engine, "a"), _lease(engine, "b")
    assert a.try_acquire()
    with a.attach(Session(engine)) as s:  # while a leads, its writes commit
        s.add(Campaign(name="kept", config_hash="k"))
        s.commit()
    time.sleep(0.7)
    assert b.try_acquire() and b.token == 2
    with pytest.raises(LeaseLost), a.attach(Session(engine)) as s:
        s.add(Campaign(name="lost", config_hash="l"))
        s.commit()
    with Session(engine) as s:
        assert [c.name for c in s.exec(select(Campaign))] == ["kept"]
    assert a.token is None and not a.is_leader()


def test_a_controller_whose_lease_was_taken_over_writes_nothing(db, tmp_path):
    """A leader that was paused past its lease (it still believes it leads: its local clock
    was stopped too) runs a pass after a standby took over: every commit of the pass is
    refused, so no attempt is created and no job moves."""
    engine = db
    cid = make_campaign(engine, [JobDef("a", {"steps": 1})])
    store = tmp_path / "store"
    store.mkdir()
    launcher = LocalLauncher(tmp_path / "var", gpus=[], extra_env={**FAST_ENV, **worker_env()})
    old = _lease(engine, "old")
    assert old.try_acquire()
    time.sleep(0.7)
    new = _lease(engine, "new")
    assert new.try_acquire() and new.token == 2
    old._valid_until = time.monotonic() + 60  # the paused leader's view: still leading
    ctl = Controller(engine, store.as_uri(), {"local": launcher}, ControllerConfig(), lease=old)
    ctl.tick()
    assert old.token is None and not ctl.leading()
    with Session(engine) as s:
        assert s.exec(select(Attempt)).all() == []
        assert s.exec(select(Job.status)).all() == [JobStatus.PENDING]
    assert launcher.list_instances() == []  # nothing was launched either
    assert campaign_status(engine, cid) == CampaignStatus.ACTIVE


def test_the_lease_settings_come_from_the_environment():
    from backend.settings import ControllerSettings, Settings

    s = Settings.from_env(
        {"NSBI_CONTROLLER_LEASE_TTL_S": "4", "NSBI_CONTROLLER_LEASE_RENEW_S": "0.5"}
    )
    assert (s.controller.lease_ttl_s, s.controller.lease_renew_s) == (4.0, 0.5)
    assert ControllerSettings() == ControllerSettings.from_env({})
    with pytest.raises(ValueError):
        LeaderLease(create_engine("sqlite://"), ttl_s=1.0, renew_s=1.0)


# ----------------------------------------------------------------------------- real controllers

CAMPAIGN = [
    JobDef("a", {"steps": 25, "step_s": 0.1}),
    JobDef("b", {"steps": 25, "step_s": 0.1}),
    JobDef("c", {"steps": 10, "step_s": 0.1}, deps=("a", "b")),
]


def _start(n: int, tmp_path: Path, db_url: str, store_uri: str, lease_env: dict, stack):
    procs = []
    for i in range(n):
        home = tmp_path / f"home{i}"
        env = {
            **os.environ,
            **FAST_ENV,
            **worker_env(),
            **lease_env,
            "NSBI_HOME": str(home),
            "DATABASE_URL": db_url,
            "NSBI_STORE": store_uri,
            "NSBI_LOCAL_MAX_CONCURRENT": "2",
        }
        log = stack.enter_context(open(tmp_path / f"controller{i}.log", "wb"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "backend.commands.controller", "--interval", "0.2"],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        stack.callback(_stop, proc)
        procs.append(proc)
    return procs


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _lease_row(engine) -> tuple[str | None, int] | None:
    try:
        with Session(engine) as s:
            row = s.get(ControllerLease, "controller")
            return None if row is None else (row.holder, row.token)
    except sa.exc.DBAPIError:  # tables not created yet (the controllers migrate)
        return None


def _wait(what: str, cond, timeout: float, procs=()):
    t0 = time.monotonic()
    while True:
        got = cond()
        if got:
            return got
        for p in procs:
            assert p.poll() is None or p.returncode == -signal.SIGKILL, (
                f"a controller exited: {what}"
            )
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.1)


def _pid_of(holder: str) -> int:
    return int(holder.split(":")[1])


def _assert_no_overlapping_attempts(engine) -> None:
    with Session(engine) as s:
        for job in s.exec(select(Job)):
            attempts = s.exec(
                select(Attempt).where(Attempt.job_id == job.id).order_by(Attempt.attempt_no)
            ).all()
            for first, second in zip(attempts, attempts[1:]):
                assert first.ended_at is not None and second.launched_at is not None
                assert first.ended_at <= second.launched_at, (
                    f"job {job.name}: attempts {first.attempt_no} and {second.attempt_no} overlap"
                )


def _run_with_handover(tmp_path: Path, db_url: str, n: int, lease_env: dict) -> float:
    """n controllers on one database; SIGKILL the leader once jobs run; the handover time."""
    store = tmp_path / "store"
    store.mkdir()
    engine = create_engine(db_url)
    with ExitStack() as stack:
        stack.callback(engine.dispose)
        procs = _start(n, tmp_path, db_url, store.as_uri(), lease_env, stack)
        by_pid = {p.pid: p for p in procs}
        # they migrate the fresh database together and agree on one leader
        holder, token = _wait(
            "a leader", lambda: (r := _lease_row(engine)) and r[0] is not None and r, 90, procs
        )
        assert holder is not None and _pid_of(holder) in by_pid
        cid = make_campaign(engine, CAMPAIGN, max_concurrency=2)
        _wait(
            "jobs running",
            lambda: list(job_states(engine).values()).count(JobStatus.RUNNING) == 2,
            60,
            procs,
        )
        holder, token = _lease_row(engine) or (None, 0)
        assert holder is not None
        leader = by_pid[_pid_of(holder)]
        leader.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        leader.wait()
        new_holder, new_token = _wait(
            "a new leader",
            lambda: (r := _lease_row(engine)) and r[0] != holder and r[0] is not None and r,
            HANDOVER_LIMIT_S + 5,
            procs,
        )
        handover = time.monotonic() - killed_at
        assert new_token == token + 1 and _pid_of(new_holder) in by_pid
        assert handover < HANDOVER_LIMIT_S
        final = {CampaignStatus.SUCCEEDED, CampaignStatus.FAILED, CampaignStatus.CANCELLED}
        _wait("the campaign", lambda: campaign_status(engine, cid) in final, 90, procs)
        assert campaign_status(engine, cid) == CampaignStatus.SUCCEEDED, job_states(engine)
        # the running workers were adopted, not declared gone: one attempt each, no retry
        with Session(engine) as s:
            attempts = s.exec(select(Attempt).order_by(Attempt.job_id)).all()
            assert [(a.attempt_no, a.status) for a in attempts] == [(1, JobStatus.SUCCEEDED)] * len(
                CAMPAIGN
            ), [(a.attempt_no, a.status, a.failure_reason) for a in attempts]
            assert all(a.launched_from for a in attempts)
        _assert_no_overlapping_attempts(engine)
        for exit_doc in store.rglob("exit.json"):
            assert json.loads(exit_doc.read_text())["status"] == "succeeded"
        leader_log = (tmp_path / f"controller{procs.index(leader)}.log").read_text()
        assert "leader: this controller" in leader_log
        new_log = tmp_path / f"controller{procs.index(by_pid[_pid_of(new_holder)])}.log"
        assert "standby:" in new_log.read_text() and "leader:" in new_log.read_text()
    print(f"handover after SIGKILL of the leader: {handover:.1f} s ({n} controllers)")
    return handover


FAST_LEASE = {"NSBI_CONTROLLER_LEASE_TTL_S": "3", "NSBI_CONTROLLER_LEASE_RENEW_S": "1"}


@pytest.mark.parametrize(
    "n,lease_env", [(2, FAST_LEASE), (3, {})], ids=["2-controllers", "3-controllers-default-lease"]
)
def test_controllers_share_a_sqlite_file(tmp_path, n, lease_env):
    db_url = f"sqlite:///{tmp_path / 'nsbi.db'}"
    init_db(create_engine(db_url)).dispose()
    handover = _run_with_handover(tmp_path, db_url, n, lease_env)
    if not lease_env:  # default lease: 10 s TTL, renewed every 3 s
        assert handover > 5.0


@pytest.mark.postgres
@pytest.mark.parametrize(
    "n,lease_env", [(2, FAST_LEASE), (3, {})], ids=["2-controllers", "3-controllers-default-lease"]
)
def test_controllers_share_a_postgresql_database(tmp_path, n, lease_env):
    if not postgres_available():
        # issue 16's "done when" asks for this in CI: there it fails instead of skipping
        unavailable(
            "PostgreSQL on 127.0.0.1:5432 is not reachable", in_ci_because=".ci/run starts it"
        )
    with fresh_postgres_url() as url:  # fresh: the controllers run the migrations together
        _run_with_handover(tmp_path, url, n, lease_env)


def test_an_instance_on_another_host_is_watched_through_the_store(sqlite_file_engine, tmp_path):
    """An attempt launched by an earlier leader on another host: no launcher here can see its
    instance, so it is never "gone": it stays RUNNING while the store shows no exit record and
    ends as the worker's exit.json says."""
    engine = sqlite_file_engine
    make_campaign(engine, [JobDef("a", {"steps": 1})])
    store = open_store((tmp_path / "store").as_uri(), create=True)
    launcher = LocalLauncher(tmp_path / "var", gpus=[], extra_env={**FAST_ENV, **worker_env()})
    with Session(engine) as s:
        job = s.exec(select(Job)).one()
        job.status, job.current_attempt = JobStatus.RUNNING, 1
        job.uri = f"{store.uri}/campaigns/c/jobs/a"
        s.add(job)
        s.add(
            Attempt(
                job_id=job.id,
                attempt_no=1,
                status=JobStatus.RUNNING,
                launcher="local",
                instance_id="c-a-1",
                launched_from="elsewhere.example:/srv/nsbi/launchers/local",
                launched_at=job.created_at,
            )
        )
        s.commit()
    ctl = Controller(engine, store, {"local": launcher}, ControllerConfig())
    assert not ctl.tick().errors
    assert job_states(engine) == {"a": JobStatus.RUNNING}  # not "gone"
    js = store.child("campaigns/c/jobs/a")
    js.put_bytes("attempts/1/result.json", json.dumps({"ok": True}).encode())
    js.put_bytes(
        "attempts/1/exit.json", json.dumps({"status": "succeeded", "exit_code": 0}).encode()
    )
    assert not ctl.tick().errors
    assert job_states(engine) == {"a": JobStatus.SUCCEEDED}


def test_analysis_run_watches_while_another_controller_leads(sqlite_file_engine, tmp_path, capsys):
    """`nsbi analysis run`'s driver is a standby while another home's controller leads the
    database: it launches nothing; once that leader is gone, it takes over and finishes."""
    from backend.analysis.run import drive
    from backend.settings import Settings

    engine = sqlite_file_engine
    cid = make_campaign(engine, [JobDef("a", {"steps": 2, "step_s": 0.02})])
    settings = Settings.from_env(
        {
            "NSBI_HOME": str(tmp_path / "home"),
            "NSBI_STORE": (tmp_path / "store").as_uri(),
            "NSBI_CONTROLLER_LEASE_TTL_S": "2",
            "NSBI_CONTROLLER_LEASE_RENEW_S": "0.5",
        }
    )
    launcher = LocalLauncher(tmp_path / "var", gpus=[], extra_env={**FAST_ENV, **worker_env()})
    other = LeaderLease(engine, ttl_s=30, renew_s=5, holder="other-home")
    assert other.try_acquire()
    status = drive(
        cid,
        engine=engine,
        settings=settings,
        launchers={"local": launcher},
        poll_s=0.1,
        timeout_s=1.5,
    )
    assert status == CampaignStatus.ACTIVE
    assert "other-home" in capsys.readouterr().err
    with Session(engine) as s:
        assert s.exec(select(Attempt)).all() == []  # watched, launched nothing
    other.release()  # the other controller exits
    status = drive(
        cid,
        engine=engine,
        settings=settings,
        launchers={"local": launcher},
        poll_s=0.1,
        timeout_s=60,
    )
    assert status == CampaignStatus.SUCCEEDED
    assert LeaderLease(engine, holder="probe").view().holder is None  # released at the end


def test_migration_0006_adds_the_lease_table_and_launched_from(tmp_path):
    from alembic import command

    from backend.db.migrate import alembic_config, upgrade

    e = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    assert upgrade(e, "0005") == "0005"
    assert upgrade(e) == "0006"
    inspector = sa.inspect(e)
    assert "controller_lease" in inspector.get_table_names()
    assert "launched_from" in {c["name"] for c in inspector.get_columns("attempt")}
    lease = LeaderLease(e, holder="h")
    assert lease.try_acquire() and lease.token == 1  # the row is created on first use
    cfg = alembic_config(e)
    with e.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0005")
    assert "controller_lease" not in sa.inspect(e).get_table_names()
    e.dispose()
