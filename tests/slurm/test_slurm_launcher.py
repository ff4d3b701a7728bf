"""The slurm launcher against a real slurmctld/slurmd: submission, arrays, cancel, a task
signalled before its time limit that checkpoints and resumes, and Slurm forgetting a job."""

from __future__ import annotations

import json
import time

import pytest
from slurm_cluster import freeze, slurm_time, thaw

from backend.launchers import InstanceState, LaunchRequest
from backend.stores import layout
from backend.stores.base import get_json, list_segments, put_json


def noop_request(store, job: str, attempt: int = 1, *, campaign: str = "slurmtest", **params):
    """A "noop" job's spec in the store and the request that runs one attempt of it."""
    options = params.pop("_options", {})
    job_store = store.child(layout.job_prefix(campaign, job))
    put_json(job_store, layout.SPEC, {"kind": "noop", "params": params})
    return job_store, LaunchRequest(campaign, job, attempt, job_store.uri, options=options)


def wait_for(launcher, iids, states, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        got = launcher.poll(iids)
        if all(got[i].state in states for i in iids):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not {states} within {timeout} s: {got}")
        time.sleep(0.2)


def test_a_batch_is_one_job_array_and_every_task_runs_its_attempt(make_launcher, slurm_store):
    launcher = make_launcher()
    made = [noop_request(slurm_store, f"job-{i}", steps=3, step_s=0.05) for i in range(3)]
    handles = launcher.launch_batch([r for _, r in made])
    ids = [r.instance_id for _, r in made]
    assert set(handles) == set(ids)
    job_ids = [launcher.job_id(i) for i in ids]
    arrays = {j.split("_")[0] for j in job_ids}
    assert len(arrays) == 1, job_ids  # one sbatch, one array
    assert sorted(int(j.split("_")[1]) for j in job_ids) == [0, 1, 2]

    # idempotent: the same attempts again are the recorded tasks, not new submissions
    again = launcher.launch_batch([r for _, r in made])
    assert all(h.already_running for h in again.values())
    assert launcher.launch(made[0][1]).already_running

    done = wait_for(launcher, ids, {InstanceState.EXITED})
    for (job_store, _), iid in zip(made, ids):
        assert done[iid].exit_code == 0, done[iid]
        assert get_json(job_store, layout.exit_key(1))["status"] == "succeeded"
        assert get_json(job_store, layout.result_key(1))["summary"]["steps"] == 3
        assert "COMPLETED" in done[iid].detail
    assert {s.instance_id for s in launcher.list_instances("slurmtest")} == set(ids)
    assert launcher.free_slots() == 1000
    for iid in ids:
        launcher.forget(iid)
    assert launcher.list_instances() == []


def test_campaign_options_reach_sbatch_and_differing_options_split_arrays(
    make_launcher, slurm_store, slurm_cluster
):
    launcher = make_launcher()
    _, plain = noop_request(slurm_store, "plain", steps=1)
    _, limited = noop_request(
        slurm_store,
        "limited",
        steps=1,
        _options={
            "partition": "debug",
            "time_limit": "5",
            "signal_before_s": 90,
            "cpus_per_task": 2,
            "extra_sbatch": ["--comment=nsbi-test"],
        },
    )
    launcher.launch_batch([plain, limited])
    a, b = launcher.job_id(plain.instance_id), launcher.job_id(limited.instance_id)
    assert a.split("_")[0] != b.split("_")[0]
    shown = slurm_cluster.run("scontrol", "-o", "show", "job", b)
    assert "TimeLimit=00:05:00" in shown and "Partition=debug" in shown
    assert "Comment=nsbi-test" in shown
    assert "NumCPUs=2" in shown or "MinCPUsNode=2" in shown
    wait_for(launcher, [plain.instance_id, limited.instance_id], {InstanceState.EXITED})


def test_cancel_stops_a_running_task_which_checkpoints(make_launcher, slurm_store):
    launcher = make_launcher()
    job_store, req = noop_request(slurm_store, "long", steps=400, step_s=0.1)
    launcher.launch(req)
    wait_for(launcher, [req.instance_id], {InstanceState.RUNNING})
    deadline = time.monotonic() + 30
    while not list_segments(job_store, layout.checkpoints_prefix(1)):
        assert time.monotonic() < deadline, "the worker wrote no checkpoint"
        time.sleep(0.1)
    launcher.cancel(req.instance_id)
    st = wait_for(launcher, [req.instance_id], {InstanceState.EXITED}, timeout=40)[req.instance_id]
    assert "CANCELLED" in st.detail
    exit_doc = get_json(job_store, layout.exit_key(1))
    assert exit_doc["status"] == "preempted", exit_doc  # SIGTERM: checkpoint and exit


def test_cancel_of_a_pending_task_removes_it(make_launcher, slurm_store):
    launcher = make_launcher()
    # more CPUs than the node has: the task stays pending
    _, req = noop_request(slurm_store, "waits", steps=1, _options={"cpus_per_task": 64})
    launcher.launch(req)
    st = wait_for(launcher, [req.instance_id], {InstanceState.PENDING})[req.instance_id]
    assert "PENDING" in st.detail
    launcher.cancel(req.instance_id)
    st = wait_for(launcher, [req.instance_id], {InstanceState.EXITED})[req.instance_id]
    assert "cancelled while pending" in st.detail


def test_a_job_at_its_time_limit_checkpoints_and_the_controller_resumes_it(
    make_launcher, slurm_store, slurm_cluster, tmp_path
):
    """A job with a one-minute limit (its spec's time_limit_s) under the campaign's
    ``signal_before_s = 25``: sbatch gets ``--time=00:01:00 --signal=B:TERM@25`` and
    slurmctld warns the batch shell (our worker) at its first time-limit check once at most
    55 s are left (5-35 s in: not before the worker's handler is up). The worker is frozen
    (SIGSTOP) after its first checkpoint so the short job is still mid-way then; Slurm's
    SIGCONT and SIGTERM wake it, it writes a checkpoint and exits with EXIT_PREEMPTED, the
    controller ends the attempt PREEMPTED and the next attempt resumes from the checkpoint."""
    import uuid

    from sqlmodel import Session, select

    from backend.controller import Controller, ControllerConfig
    from backend.db import create_engine, init_db
    from backend.db.models import Attempt, Campaign, Job
    from backend.states import CampaignStatus, DesiredState

    steps = 50
    engine = init_db(create_engine(f"sqlite:///{tmp_path / 'nsbi.db'}"))
    with Session(engine, expire_on_commit=False) as s:
        camp = Campaign(
            name="timed",
            config_hash=uuid.uuid4().hex,
            status=CampaignStatus.ACTIVE,
            launcher="slurm",
            max_concurrency=1,
            config={"backend": {"launcher": "slurm", "slurm": {"signal_before_s": 25}}},
        )
        s.add(camp)
        s.flush()
        spec = {
            "kind": "noop",
            "name": "timed",
            "params": {"steps": steps, "step_s": 0.05},  # frozen mid-way, below
            "time_limit_s": 60,
        }
        job = Job(
            campaign_id=camp.id,
            name="timed",
            kind="noop",
            launcher="slurm",
            spec=spec,
            max_retries=0,  # a time limit is a preemption, not a failure: retried anyway
            desired_state=DesiredState.RUN,
        )
        s.add(job)
        s.commit()
        job_id = job.id
    launcher = make_launcher()
    controller = Controller(
        engine, slurm_store, {"slurm": launcher}, ControllerConfig(tick_interval_s=0.5)
    )
    assert not controller.tick().errors
    with Session(engine) as s:
        first = s.exec(select(Attempt).where(Attempt.job_id == job_id)).one()
        uri = s.get(Job, job_id).uri
    slurm_id = launcher.job_id(first.instance_id)
    shown = slurm_cluster.job(slurm_id)
    assert shown["TimeLimit"] == "00:01:00", shown  # the spec's time_limit_s
    job_store = slurm_store.child(uri[len(slurm_store.uri) + 1 :])
    deadline = time.monotonic() + 60
    while not list_segments(job_store, layout.checkpoints_prefix(1)):
        assert time.monotonic() < deadline, "the worker wrote no checkpoint"
        time.sleep(0.05)
    beats = list_segments(job_store, layout.heartbeat_prefix(1))
    pid = int(get_json(job_store, beats[-1][1])["pid"])
    freeze(pid)  # (a worker warned before this point has checkpointed and is ending anyway)
    frozen_at = list_segments(job_store, layout.checkpoints_prefix(1))[-1][0]
    assert frozen_at < steps, "the job ended before it was frozen"
    started = slurm_time(slurm_cluster.job(slurm_id)["StartTime"])
    try:
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline:
            report = controller.tick()
            assert not report.errors, report.errors
            with Session(engine) as s:
                status = s.get(Job, job_id).status
            if status in ("SUCCEEDED", "FAILED", "CANCELLED"):
                break
            time.sleep(0.2)
    finally:
        thaw(pid)
    with Session(engine) as s:
        attempts = s.exec(
            select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.attempt_no)
        ).all()
    states = [(a.status, a.exit_code, a.failure_reason) for a in attempts]
    assert status == "SUCCEEDED", states
    first, last = attempts[0], attempts[-1]
    assert first.status == "PREEMPTED" and first.exit_code == 75, states
    assert "SIGTERM" in (first.failure_reason or ""), states
    # the warning came from slurmctld's time-limit check, 5-35 s into the job
    warned_at, signum = slurm_cluster.warning_signals()[slurm_id]
    assert signum == 15 and started + 4 <= warned_at <= started + 35 + 5, (started, warned_at)
    stopped_at = max(step for step, _ in list_segments(job_store, layout.checkpoints_prefix(1)))
    assert 0 < frozen_at <= stopped_at < steps
    summary = get_json(job_store, layout.result_key(last.attempt_no))["summary"]
    assert summary["resumed_from"] is not None and summary["resumed_from"] >= stopped_at
    assert summary["steps"] == steps


def test_a_job_slurm_forgot_is_judged_by_its_exit_record(make_launcher, slurm_store):
    """No slurmdbd here: once slurmctld drops an ended job (MinJobAge), the worker's exit.json
    in the store says how it ended; without one the instance is gone."""
    launcher = make_launcher()
    job_store, req = noop_request(slurm_store, "forgotten", steps=1)
    rec = {
        "instance_id": req.instance_id,
        "campaign": req.campaign,
        "job": req.job,
        "attempt": 1,
        "job_uri": req.job_uri,
        "job_name": "nsbi-gone",
        "task": 0,
        "submitted_at": time.time() - 3600,
        "log": "/nonexistent.log",
        "array_id": "999999",
    }
    (launcher.instances_dir / f"{req.instance_id}.json").write_text(json.dumps(rec))
    st = launcher.poll([req.instance_id])[req.instance_id]
    assert st.state is InstanceState.GONE and "unknown to Slurm" in st.detail
    put_json(job_store, layout.exit_key(1), {"status": "succeeded", "exit_code": 0})
    st = launcher.poll([req.instance_id])[req.instance_id]
    assert st.state is InstanceState.EXITED and st.exit_code == 0


def test_a_missing_command_is_a_clear_error(make_launcher, slurm_store, tmp_path):
    from backend.launchers import LauncherError

    launcher = make_launcher(bin_dir=str(tmp_path / "no-slurm-here"))
    _, req = noop_request(slurm_store, "nowhere", steps=1)
    with pytest.raises(LauncherError, match="not found .*NSBI_SLURM_BIN"):
        launcher.launch(req)
    assert not list(launcher.instances_dir.iterdir())  # no record of a submission that never was


def test_a_refused_submission_fails_with_slurms_reason(make_launcher, slurm_store):
    from backend.launchers import CapacityError, LauncherError

    launcher = make_launcher()
    _, req = noop_request(slurm_store, "nowhere", steps=1, _options={"partition": "nosuch"})
    with pytest.raises(LauncherError, match="(?i)invalid partition") as err:
        launcher.launch(req)
    assert not isinstance(err.value, CapacityError)
    assert not list(launcher.instances_dir.iterdir())


def test_a_submission_a_crash_left_unrecorded_is_found_by_its_job_name(make_launcher, slurm_store):
    """The record is written before sbatch and completed after it; a controller killed in
    between leaves a record without a Slurm id: the next launch finds the array by its job
    name instead of submitting the attempt twice, or submits it when Slurm has none."""
    launcher = make_launcher()
    _, req = noop_request(slurm_store, "crashy", steps=1)
    launcher.launch(req)
    job_id = launcher.job_id(req.instance_id)
    path = launcher.instances_dir / f"{req.instance_id}.json"
    rec = json.loads(path.read_text())
    path.write_text(json.dumps({**rec, "array_id": None}))  # as if sbatch's answer was lost
    handle = make_launcher(var_dir=launcher.var_dir).launch(req)
    assert handle.already_running and launcher.job_id(req.instance_id) == job_id

    _, other = noop_request(slurm_store, "never", steps=1)
    never = {**rec, "instance_id": other.instance_id, "job": "never", "array_id": None}
    never["job_name"] = "nsbi-never-submitted"
    (launcher.instances_dir / f"{other.instance_id}.json").write_text(json.dumps(never))
    handle = launcher.launch(other)
    assert not handle.already_running and launcher.job_id(other.instance_id) not in (None, job_id)
    wait_for(launcher, [req.instance_id, other.instance_id], {InstanceState.EXITED})
