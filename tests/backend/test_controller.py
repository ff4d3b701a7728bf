"""The controller against real local worker processes and a real database (SQLite; PostgreSQL
for the end-to-end pass; fixtures from conftest.py), using the fast test-only "noop" job kind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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
    job_status_is,
    make_campaign,
    metric_keys,
    postgres_available,
    run_until,
    snapshot,
)
from sqlmodel import Session, select

from backend.controller import Controller, ControllerConfig, campaign_key
from backend.db.models import Artifact, Attempt, Campaign, Event, Job, ResourceSample
from backend.launchers.local import LocalLauncher
from backend.states import CampaignStatus, JobStatus
from backend.stores import layout, open_store
from backend.stores.base import get_json


def make_controller(engine, tmp_path, *, max_concurrent: int = 2, **cfg) -> Controller:
    store = open_store((tmp_path / "store").as_uri(), create=True)
    launcher = LocalLauncher(
        tmp_path / "var", max_concurrent=max_concurrent, gpus=[], grace_s=3, extra_env=FAST_ENV
    )
    config = ControllerConfig(tick_interval_s=0.1, **cfg)
    return Controller(engine, store, {"local": launcher}, config)


def kill_all(controller: Controller) -> None:
    for lau in controller._launcher_cache.values():
        for st in lau.list_instances():
            if st.state.is_alive():
                lau.kill(st.instance_id)


def test_campaign_with_dependencies_runs_to_completion(engine, tmp_path):
    ctl = make_controller(engine, tmp_path)
    cid = make_campaign(
        engine,
        [
            JobDef("a", {"steps": 6, "step_s": 0.02}),
            JobDef("b", {"steps": 4, "step_s": 0.02}),
            JobDef("c", {"steps": 3, "step_s": 0.02}, deps=("a", "b")),
            JobDef("d", {"steps": 2, "step_s": 0.02}),
        ],
        max_concurrency=2,
    )
    active_seen = []

    def observe():
        with Session(engine) as s:
            active_seen.append(
                sum(
                    1
                    for j in s.exec(select(Job))
                    if j.status in (JobStatus.LAUNCHING, JobStatus.RUNNING)
                )
            )
            c = s.exec(select(Job).where(Job.name == "c")).one()
            deps = [s.exec(select(Job).where(Job.name == n)).one().status for n in ("a", "b")]
            if c.status != JobStatus.PENDING:
                assert deps == [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED], (
                    "c launched before its dependencies"
                )

    try:
        run_until(ctl, campaign_done(engine, cid), timeout=60, on_tick=observe)
    finally:
        kill_all(ctl)
    assert campaign_status(engine, cid) == CampaignStatus.SUCCEEDED
    assert job_states(engine) == {n: JobStatus.SUCCEEDED for n in "abcd"}
    assert max(active_seen) <= 2  # the campaign's max_concurrency
    for name, steps in {"a": 6, "b": 4, "c": 3, "d": 2}.items():
        assert [(a.attempt_no, a.status, a.exit_code) for a in attempts_of(engine, name)] == [
            (1, JobStatus.SUCCEEDED, 0)
        ]
        # every metric point the worker wrote, once: loss = 1/step for steps 1..n
        assert metric_keys(engine, name) == [(1, s, 1.0 / s) for s in range(1, steps + 1)]
    with Session(engine) as s:
        camp = s.get(Campaign, cid)
        c = s.exec(select(Job).where(Job.name == "c")).one()
        assert c.uri == ctl.store.uri + f"/campaigns/{campaign_key(camp)}/jobs/c-{c.id}"
        spec = get_json(ctl.job_store(c), layout.SPEC)
        a = s.exec(select(Job).where(Job.name == "a")).one()
        # the dependent job's spec carries its dependencies' results (artifact URIs)
        assert set(spec["inputs"]) == {"a", "b"}
        assert spec["inputs"]["a"]["artifacts"]["noop"] == a.uri + "/attempts/1/artifacts/noop.json"
        kinds = sorted(x.kind for x in s.exec(select(Artifact).where(Artifact.job_id == c.id)))
        assert kinds == ["noop", "result"]
        assert (
            s.exec(select(ResourceSample).where(ResourceSample.job_id == c.id)).first() is not None
        )
        path = [
            e.to_state for e in s.exec(select(Event).where(Event.job_id == c.id).order_by(Event.id))
        ]
        assert path == ["LAUNCHING", "RUNNING", "SUCCEEDED"]
        for att in s.exec(select(Attempt)):
            assert att.launched_at is not None and att.ended_at >= att.launched_at
            assert att.cost_usd == 0.0 and att.price_per_hour == 0.0  # local machine: own hardware


def test_failed_attempt_is_retried_and_resumes_from_checkpoint(sqlite_file_engine, tmp_path):
    engine = sqlite_file_engine
    ctl = make_controller(engine, tmp_path)
    cid = make_campaign(
        engine,
        [
            JobDef(
                "flaky", {"steps": 10, "step_s": 0.02, "fail_on_attempts": [1], "fail_at_step": 6}
            )
        ],
    )
    try:
        run_until(ctl, campaign_done(engine, cid), timeout=60)
    finally:
        kill_all(ctl)
    atts = attempts_of(engine, "flaky")
    assert [(a.attempt_no, a.status) for a in atts] == [
        (1, JobStatus.FAILED),
        (2, JobStatus.SUCCEEDED),
    ]
    assert "deliberate failure at step 6" in atts[0].failure_reason and atts[0].exit_code == 1
    # attempt 2 resumed from the checkpoint at step 6: it ran steps 7..10 only
    assert metric_keys(engine, "flaky") == [(1, s, 1 / s) for s in range(1, 7)] + [
        (2, s, 1 / s) for s in range(7, 11)
    ]
    with Session(engine) as s:
        job = s.exec(select(Job)).one()
        assert (job.retries, job.status) == (1, JobStatus.SUCCEEDED)
        result = get_json(ctl.job_store(job), layout.result_key(2))
    assert result["summary"] == {"steps": 10, "steps_run": 4, "resumed_from": 6}


def test_retry_limit_fails_the_job_and_cancels_its_dependents(sqlite_file_engine, tmp_path):
    engine = sqlite_file_engine
    ctl = make_controller(engine, tmp_path)
    cid = make_campaign(
        engine,
        [
            JobDef(
                "bad",
                {"steps": 3, "step_s": 0.01, "fail_on_attempts": [1, 2, 3], "fail_at_step": 1},
                max_retries=1,
            ),
            JobDef("after", {"steps": 1}, deps=("bad",)),
        ],
    )
    try:
        run_until(ctl, campaign_done(engine, cid), timeout=60)
    finally:
        kill_all(ctl)
    assert campaign_status(engine, cid) == CampaignStatus.FAILED
    assert job_states(engine) == {"bad": JobStatus.FAILED, "after": JobStatus.CANCELLED}
    assert [a.status for a in attempts_of(engine, "bad")] == [JobStatus.FAILED, JobStatus.FAILED]
    assert attempts_of(engine, "after") == []


def test_cancel_request_stops_a_running_job(sqlite_file_engine, tmp_path):
    engine = sqlite_file_engine
    ctl = make_controller(engine, tmp_path)
    cid = make_campaign(
        engine,
        [JobDef("long", {"steps": 2000, "step_s": 0.02}), JobDef("queued", {"steps": 1})],
        max_concurrency=1,
    )
    try:
        run_until(ctl, lambda: len(metric_keys(engine, "long")) >= 3, timeout=30)
        with Session(engine) as s:  # what the dashboard / CLI does: write intents only
            for job in s.exec(select(Job)):
                job.cancel_requested = True
                s.add(job)
            s.commit()
        t0 = time.time()
        run_until(ctl, campaign_done(engine, cid), timeout=30)
        assert time.time() - t0 < 10
    finally:
        kill_all(ctl)
    # every job cancelled, none failed: the campaign ends CANCELLED (jobs_repo.settle_campaigns)
    assert campaign_status(engine, cid) == CampaignStatus.CANCELLED
    assert job_states(engine) == {"long": JobStatus.CANCELLED, "queued": JobStatus.CANCELLED}
    (att,) = attempts_of(engine, "long")
    assert (
        att.status == JobStatus.CANCELLED and att.exit_code == 75
    )  # the worker exited as preempted
    assert attempts_of(engine, "queued") == []


def test_campaign_cancel_intent_cancels_everything(sqlite_file_engine, tmp_path):
    engine = sqlite_file_engine
    ctl = make_controller(engine, tmp_path)
    cid = make_campaign(
        engine,
        [JobDef("x", {"steps": 2000, "step_s": 0.02}), JobDef("y", {"steps": 1}, deps=("x",))],
    )
    try:
        run_until(ctl, job_status_is(engine, "x", JobStatus.RUNNING), timeout=30)
        with Session(engine) as s:
            camp = s.get(Campaign, cid)
            camp.status = CampaignStatus.CANCELLING
            s.add(camp)
            s.commit()
        run_until(ctl, campaign_done(engine, cid), timeout=30)
    finally:
        kill_all(ctl)
    assert campaign_status(engine, cid) == CampaignStatus.CANCELLED
    assert job_states(engine) == {"x": JobStatus.CANCELLED, "y": JobStatus.CANCELLED}


def test_lost_heartbeat_fails_the_attempt_and_the_retry_resumes(sqlite_file_engine, tmp_path):
    engine = sqlite_file_engine
    ctl = make_controller(
        engine, tmp_path, heartbeat_timeout_s=3.0
    )  # beats every 0.2 s; slack for a loaded box
    # 40 x 0.1 s: long enough to be frozen mid-run on a loaded machine (12 x 0.05 s once
    # finished before its fourth metric point arrived).
    cid = make_campaign(engine, [JobDef("hang", {"steps": 40, "step_s": 0.1})])
    stopped: list[int] = []

    def freeze_worker():
        if stopped or len(metric_keys(engine, "hang")) < 4:
            return
        (att,) = attempts_of(engine, "hang")
        for pid in ctl.launcher("local").worker_pids(att.instance_id):
            os.kill(pid, signal.SIGSTOP)  # alive but silent: no heartbeats, no progress
            stopped.append(pid)

    try:
        run_until(ctl, campaign_done(engine, cid), timeout=60, on_tick=freeze_worker)
    finally:
        kill_all(ctl)
    atts = attempts_of(engine, "hang")
    assert stopped and [a.status for a in atts] == [JobStatus.FAILED, JobStatus.SUCCEEDED]
    assert atts[0].failure_reason.startswith("lost heartbeat")
    steps_2 = [s for a, s, _ in metric_keys(engine, "hang") if a == 2]
    assert steps_2 and steps_2[0] > 1 and steps_2[-1] == 40  # resumed, not restarted


def test_missing_store_changes_nothing_in_the_database(sqlite_file_engine, tmp_path):
    engine = sqlite_file_engine
    ctl = make_controller(engine, tmp_path)
    make_campaign(engine, [JobDef("j", {"steps": 1})])
    (tmp_path / "store").rmdir()
    before = job_states(engine)
    with pytest.raises(Exception, match=r"store root .*store does not exist"):
        ctl.tick()
    assert job_states(engine) == before == {"j": JobStatus.PENDING}
    with Session(engine) as s:
        assert s.exec(select(Attempt)).first() is None and s.exec(select(Event)).first() is None


def test_budget_holds_back_launches_that_would_exceed_it_and_costs_accrue(
    sqlite_file_engine, tmp_path
):
    engine = sqlite_file_engine
    ctl = make_controller(engine, tmp_path, max_concurrent=3)
    # n1-standard-4 costs 0.19 USD/h in the shipped catalogue; each job is estimated at 1 h
    jobs = [
        JobDef(n, {"steps": 4, "step_s": 0.05}, machine_type="n1-standard-4", est_hours=1.0)
        for n in "xyz"
    ]
    cid = make_campaign(engine, jobs, max_concurrency=3, budget_usd=0.5)
    try:
        report = ctl.tick()
        assert report.launched == 2  # 2 x 0.19 fits in 0.5 USD, a third would not
        with Session(engine) as s:
            z = s.exec(select(Job).where(Job.name == "z")).one()
            assert z.status == JobStatus.PENDING and z.status_reason.startswith("over budget")
        run_until(ctl, campaign_done(engine, cid), timeout=60)
    finally:
        kill_all(ctl)
    assert job_states(engine) == {n: JobStatus.SUCCEEDED for n in "xyz"}
    for name in "xyz":
        (att,) = attempts_of(engine, name)
        hours = (att.ended_at - att.launched_at).total_seconds() / 3600
        assert att.price_per_hour == 0.19 and att.cost_usd == pytest.approx(0.19 * hours, rel=1e-9)
        assert att.cost_usd > 0


def test_gpu_quota_limits_gpu_jobs_but_not_cpu_jobs(sqlite_file_engine, tmp_path):
    engine = sqlite_file_engine
    ctl = make_controller(engine, tmp_path, max_concurrent=4, gpu_quota=1)
    make_campaign(
        engine,
        [
            JobDef("g1", {"steps": 200, "step_s": 0.02}, gpu_count=1),
            JobDef("g2", {"steps": 1}, gpu_count=1),
            JobDef("cpu", {"steps": 200, "step_s": 0.02}),
        ],
        max_concurrency=4,
    )
    try:
        assert ctl.tick().launched == 2
        assert job_states(engine) == {
            "g1": JobStatus.RUNNING,
            "g2": JobStatus.PENDING,
            "cpu": JobStatus.RUNNING,
        }
    finally:
        kill_all(ctl)


def test_active_job_quota_spans_campaigns(sqlite_file_engine, tmp_path):
    engine = sqlite_file_engine
    ctl = make_controller(engine, tmp_path, max_concurrent=4, max_active_jobs=2)
    make_campaign(
        engine,
        [
            JobDef("a1", {"steps": 200, "step_s": 0.02}),
            JobDef("a2", {"steps": 200, "step_s": 0.02}),
        ],
        name="one",
    )
    make_campaign(engine, [JobDef("b1", {"steps": 200, "step_s": 0.02})], name="two")
    try:
        assert ctl.tick().launched == 2
        assert sorted(job_states(engine).values()).count(JobStatus.RUNNING) == 2
        assert ctl.tick().launched == 0
    finally:
        kill_all(ctl)


def test_user_retry_intent_reopens_a_failed_campaign(sqlite_file_engine, tmp_path):
    from backend import service

    engine = sqlite_file_engine
    ctl = make_controller(engine, tmp_path)
    cid = make_campaign(
        engine,
        [
            JobDef(
                "once",
                {"steps": 4, "step_s": 0.01, "fail_on_attempts": [1], "fail_at_step": 2},
                max_retries=0,
            )
        ],
    )
    try:
        run_until(ctl, campaign_done(engine, cid), timeout=30)
        assert campaign_status(engine, cid) == CampaignStatus.FAILED
        with Session(engine) as s:
            job_id = s.exec(select(Job)).one().id
        assert service.request_retry(job_ids=[job_id], engine=engine) == 1  # the intent only
        assert job_states(engine) == {"once": JobStatus.FAILED}
        run_until(ctl, campaign_done(engine, cid), timeout=30)
    finally:
        kill_all(ctl)
    assert campaign_status(engine, cid) == CampaignStatus.SUCCEEDED
    assert [(a.attempt_no, a.status) for a in attempts_of(engine, "once")] == [
        (1, JobStatus.FAILED),
        (2, JobStatus.SUCCEEDED),
    ]
    assert [s for a, s, _ in metric_keys(engine, "once") if a == 2] == [
        3,
        4,
    ]  # resumed after step 2


@pytest.mark.postgres
def test_controller_command_runs_a_campaign_on_postgresql(tmp_path):
    """`nsbi controller --until-idle` as a process against PostgreSQL (its own throw-away database)."""
    from backend.db import create_engine, init_db

    if not postgres_available():
        pytest.skip("PostgreSQL on 127.0.0.1:5432 is not reachable")
    repo = Path(__file__).resolve().parents[2]
    with fresh_postgres_url() as url:
        engine = init_db(create_engine(url))
        cid = make_campaign(
            engine,
            [
                JobDef("p", {"steps": 3, "step_s": 0.02}),
                JobDef("q", {"steps": 2, "step_s": 0.02}, deps=("p",)),
            ],
        )
        env = {**os.environ, **FAST_ENV, "NSBI_HOME": str(tmp_path / "home"), "DATABASE_URL": url}
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "backend.commands.controller",
                "--interval",
                "0.1",
                "--until-idle",
                "--quiet",
            ],
            env=env,
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert campaign_status(engine, cid) == CampaignStatus.SUCCEEDED
        snap = snapshot(engine)
        assert snap["q"]["attempts"] == [(1, JobStatus.SUCCEEDED, 0)] and snap["q"]["has_resources"]
        assert [(m[0], m[2]) for m in snap["q"]["metrics"] if m[0] == "loss"] == [
            ("loss", 1),
            ("loss", 2),
        ]
        assert (
            tmp_path / "home" / "store"
        ).is_dir()  # the default store under NSBI_HOME is created
        engine.dispose()
