"""Crash safety and failure handling of the batched reconcile pass, with real worker processes
(the fast "noop" kind), the real local launcher and real databases:

- kill -9 of the controller after it committed a pass's LAUNCHING attempts, before or in the
  middle of its launcher calls (before their outcomes are committed): the next controller
  launches each job once, never twice;
- a worker that exits with code 2 (a bad job spec) fails its job for good, without retries;
- one attempt whose store cannot be read holds back no other attempt of the pass;
- the local launcher's records are pruned once the end of their attempt is committed, also
  those a killed controller left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from nsbi_ctl_testkit import (
    FAST_ENV,
    JobDef,
    attempts_of,
    campaign_done,
    campaign_status,
    fresh_postgres_url,
    job_states,
    make_campaign,
    metric_keys,
    postgres_available,
    run_until,
)
from sqlmodel import Session, select

from backend.controller import Controller, ControllerConfig
from backend.db.models import Attempt, Event, Job, MetricPoint
from backend.launchers.local import LocalLauncher
from backend.states import CampaignStatus, JobStatus
from backend.stores import layout, list_segments, open_store
from backend.stores.base import get_json, put_json
from backend.worker import EXIT_BAD_SPEC, run_attempt

REPO = Path(__file__).resolve().parents[2]

# A controller process whose launcher kills the process (SIGKILL, as kill -9 would) when it is
# asked for its launch number KILL_AT (0: at the first call, before anything started; 2: after
# two workers were started, before their outcomes were committed).
_KILLED_CONTROLLER = """
import os, signal, sys
from backend.controller import Controller, ControllerConfig
from backend.db import create_engine
from backend.launchers.local import LocalLauncher

db_url, store_uri, var_dir, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

class KilledAtLaunch(LocalLauncher):
    calls = 0
    def launch(self, request):
        if KilledAtLaunch.calls == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        KilledAtLaunch.calls += 1
        return super().launch(request)

launcher = KilledAtLaunch(var_dir, max_concurrent=4, gpus=[], extra_env={"NSBI_WORKER_INTERVAL_S": "0.2"})
Controller(create_engine(db_url), store_uri, {"local": launcher}, ControllerConfig()).tick()
"""


def _kill_mid_launch_then_recover(engine, db_url: str, tmp_path: Path, kill_at: int) -> None:
    jobs = [JobDef(f"j{i}", {"steps": 4, "step_s": 0.05}) for i in range(4)]
    cid = make_campaign(engine, jobs, max_concurrency=4)
    store_uri = (tmp_path / "store").as_uri()
    open_store(store_uri, create=True)
    var = tmp_path / "var"
    out = subprocess.run(
        [sys.executable, "-c", _KILLED_CONTROLLER, db_url, store_uri, str(var), str(kill_at)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == -signal.SIGKILL, out.stderr
    # the kill came after the pass committed every attempt in LAUNCHING, before any outcome
    assert job_states(engine) == {f"j{i}": JobStatus.LAUNCHING for i in range(4)}
    with Session(engine) as s:
        assert all(
            a.status == JobStatus.LAUNCHING and a.instance_id is None
            for a in s.exec(select(Attempt))
        )
    started = sorted(p.stem for p in (var / "instances").glob("*.json"))
    assert len(started) == kill_at  # the workers the killed pass had started
    launcher = LocalLauncher(var, max_concurrent=4, gpus=[], extra_env=FAST_ENV)
    ctl = Controller(engine, store_uri, {"local": launcher}, ControllerConfig(tick_interval_s=0.1))
    try:
        first = ctl.tick()
        assert first.relaunched == 4 and first.launched == 0  # recovery, not new attempts
        run_until(ctl, campaign_done(engine, cid), timeout=90)
    finally:
        for st in launcher.list_instances():
            if st.state.is_alive():
                launcher.kill(st.instance_id)
    assert campaign_status(engine, cid) == CampaignStatus.SUCCEEDED
    with Session(engine) as s:
        for job in s.exec(select(Job)):
            assert [
                (a.attempt_no, a.status, a.exit_code) for a in attempts_of(engine, job.name)
            ] == [(1, JobStatus.SUCCEEDED, 0)]
            path = [
                e.to_state
                for e in s.exec(select(Event).where(Event.job_id == job.id).order_by(Event.id))
            ]
            assert path == ["LAUNCHING", "RUNNING", "SUCCEEDED"]
            # one worker process per attempt: every heartbeat of the attempt names the same pid
            js = open_store(job.uri)
            pids = {
                get_json(js, key)["pid"] for _, key in list_segments(js, layout.heartbeat_prefix(1))
            }
            assert len(pids) == 1
        assert len(s.exec(select(MetricPoint).where(MetricPoint.name == "loss")).all()) == 4 * 4
    assert sorted(p.stem for p in (var / "logs").glob("*.log")) == sorted(
        a.instance_id for a in _attempts(engine)
    )
    assert list((var / "instances").glob("*.json")) == []  # pruned once each end was committed


def _attempts(engine) -> list[Attempt]:
    with Session(engine) as s:
        return list(s.exec(select(Attempt)))


@pytest.mark.parametrize("kill_at", [0, 2])
def test_kill_9_between_the_attempt_commit_and_the_launch_outcomes_on_sqlite(
    sqlite_file_engine, tmp_path, kill_at
):
    _kill_mid_launch_then_recover(
        sqlite_file_engine, str(sqlite_file_engine.url), tmp_path, kill_at
    )


@pytest.mark.postgres
def test_kill_9_between_the_attempt_commit_and_the_launch_outcomes_on_postgresql(tmp_path):
    from backend.db import create_engine, init_db

    if not postgres_available():
        pytest.skip("PostgreSQL on 127.0.0.1:5432 is not reachable")
    with fresh_postgres_url() as url:
        engine = init_db(create_engine(url))
        try:
            _kill_mid_launch_then_recover(engine, url, tmp_path, kill_at=2)
        finally:
            engine.dispose()


def _controller(engine, tmp_path: Path) -> tuple[Controller, LocalLauncher]:
    store = open_store((tmp_path / "store").as_uri(), create=True)
    launcher = LocalLauncher(
        tmp_path / "var", max_concurrent=2, gpus=[], grace_s=3, extra_env=FAST_ENV
    )
    return Controller(
        engine, store, {"local": launcher}, ControllerConfig(tick_interval_s=0.1)
    ), launcher


def test_a_bad_job_spec_fails_the_job_for_good_without_retries(sqlite_file_engine, tmp_path):
    engine = sqlite_file_engine
    ctl, launcher = _controller(engine, tmp_path)
    cid = make_campaign(
        engine,
        [
            JobDef("bad", spec={"kind": "nonsense", "name": "bad"}, max_retries=3),
            JobDef("after", {"steps": 1}, deps=("bad",)),
            JobDef("fine", {"steps": 2, "step_s": 0.02}),
        ],
    )
    try:
        run_until(ctl, campaign_done(engine, cid), timeout=60)
    finally:
        for st in launcher.list_instances():
            launcher.kill(st.instance_id)
    assert campaign_status(engine, cid) == CampaignStatus.FAILED
    assert job_states(engine) == {
        "bad": JobStatus.FAILED,
        "after": JobStatus.CANCELLED,
        "fine": JobStatus.SUCCEEDED,
    }
    (att,) = attempts_of(engine, "bad")  # one attempt although three retries were allowed
    assert att.exit_code == EXIT_BAD_SPEC
    assert att.failure_reason.startswith("bad job spec (exit code 2; not retried):")
    assert "unknown job kind 'nonsense'" in att.failure_reason
    with Session(engine) as s:
        job = s.exec(select(Job).where(Job.name == "bad")).one()
        assert (job.retries, job.max_retries, job.status_reason) == (3, 3, att.failure_reason)
    # a user's retry still reopens it (after fixing the spec, say)
    from backend import service

    assert service.request_retry(job_ids=[job.id], engine=engine) == 1


def test_exit_json_says_whether_a_spec_failure_can_be_retried(tmp_path):
    store = open_store((tmp_path / "store").as_uri(), create=True)
    job = store.child("campaigns/c/jobs/j")
    put_json(job, layout.SPEC, {"kind": "nonsense"})  # unusable whatever happens: final
    assert run_attempt(job.uri, 1, install_signals=False).exit_code == EXIT_BAD_SPEC
    assert get_json(job, layout.exit_key(1))["retryable"] is False
    job.put_bytes(layout.SPEC, b"{not json")  # corrupt: final too
    assert run_attempt(job.uri, 2, install_signals=False).exit_code == EXIT_BAD_SPEC
    assert get_json(job, layout.exit_key(2))["retryable"] is False
    job.delete(layout.SPEC)  # missing: the controller writes it again for the next attempt
    assert run_attempt(job.uri, 3, install_signals=False).exit_code == EXIT_BAD_SPEC
    assert get_json(job, layout.exit_key(3))["retryable"] is True


def test_an_unreadable_attempt_holds_back_no_other_attempt_of_the_pass(engine, tmp_path):
    """Two RUNNING attempts whose processes are gone: one finished cleanly, the other left a
    corrupt metrics segment. The good one is ingested and finished in the same pass; the bad
    one is reported and left RUNNING (nothing of it half-written)."""
    from backend import jobs_repo

    ctl, _ = _controller(engine, tmp_path)
    cid = make_campaign(engine, [JobDef("good", {"steps": 2}), JobDef("broken", {"steps": 2})])
    with Session(engine, expire_on_commit=False) as s:
        for job in s.exec(select(Job).order_by(Job.id)):
            job.uri = ctl.store.uri + f"/campaigns/c{cid}/jobs/{job.name}"
            a = jobs_repo.begin_attempt(s, job, launcher="local", price_per_hour=0.0)
            jobs_repo.mark_launched(s, job, a, f"gone-{job.name}-1")
        s.commit()
    good, broken = (ctl.store.child(f"campaigns/c{cid}/jobs/{n}") for n in ("good", "broken"))
    records = [{"member": -1, "step": k, "name": "loss", "value": 1.0 / k} for k in (1, 2)]
    good.put_bytes(
        layout.metrics_prefix(1) + "/00000001.jsonl",
        "".join(json.dumps(r) + "\n" for r in records).encode(),
    )
    put_json(good, layout.result_key(1), {"status": "succeeded", "kind": "noop", "summary": {}})
    put_json(good, layout.exit_key(1), {"status": "succeeded", "exit_code": 0, "error": None})
    broken.put_bytes(
        layout.metrics_prefix(1) + "/00000001.jsonl",
        b'{"member": -1, "step": 1, "name": "loss", "value": 1}\n',
    )
    broken.put_bytes(layout.metrics_prefix(1) + "/00000002.jsonl", b"{half a line")
    report = ctl.tick()
    assert report.finished == 1 and report.metrics == 2
    assert len(report.errors) == 1 and "line 1 is not valid JSON" in report.errors[0]
    assert job_states(engine) == {"good": JobStatus.SUCCEEDED, "broken": JobStatus.RUNNING}
    assert metric_keys(engine, "good") == [(1, 1, 1.0), (1, 2, 0.5)]
    assert metric_keys(engine, "broken") == []  # its transaction rolled back, cursor included
    (att,) = attempts_of(engine, "broken")
    assert att.ingest_cursor == {}


def test_records_of_ended_attempts_are_swept_by_the_next_controller(sqlite_file_engine, tmp_path):
    engine = sqlite_file_engine
    ctl, launcher = _controller(engine, tmp_path)
    cid = make_campaign(
        engine,
        [JobDef("a", {"steps": 2, "step_s": 0.02}), JobDef("b", {"steps": 2, "step_s": 0.02})],
    )
    run_until(ctl, campaign_done(engine, cid), timeout=60)
    instances = tmp_path / "var" / "instances"
    assert list(instances.glob("*")) == []
    # what a controller killed between committing an end and forgetting the record leaves
    # behind, next to a record no attempt in this database knows (not ours to judge)
    (ended,) = attempts_of(engine, "a")
    for iid in (ended.instance_id, "other-campaign-job-1"):
        (instances / f"{iid}.json").write_text(
            json.dumps(
                {
                    "instance_id": iid,
                    "campaign": "c",
                    "job": "j",
                    "attempt": 1,
                    "job_uri": "file:///x",
                    "pid": None,
                    "create_time": None,
                    "started_at": 0.0,
                    "deadline": None,
                    "gpus": [],
                    "log": "",
                }
            )
        )
        (instances / f"{iid}.rc").write_text("0\n")
    fresh = LocalLauncher(tmp_path / "var", gpus=[], extra_env=FAST_ENV)
    Controller(engine, ctl.store, {"local": fresh}, ControllerConfig()).tick()
    assert sorted(p.name for p in instances.glob("*")) == [
        "other-campaign-job-1.json",
        "other-campaign-job-1.rc",
    ]
