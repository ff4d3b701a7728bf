"""The local launcher: real subprocesses, idempotent launch, limits, cancel, restart discovery."""

from __future__ import annotations

import json
import os
import subprocess
import time

import psutil
import pytest

from backend.launchers import (
    CapacityError,
    InstanceState,
    LaunchRequest,
    get_launcher,
    instance_name,
)
from backend.launchers.local import MARKER, LocalLauncher
from backend.stores import layout, open_store, put_json
from backend.worker import EXIT_PREEMPTED

FAST_ENV = {"NSBI_WORKER_INTERVAL_S": "0.2"}


def make_job(store, name: str, **params) -> str:
    prefix = layout.job_prefix("c", name)
    put_json(store.child(prefix), layout.SPEC, {"kind": "noop", "params": params})
    return store.uri_for(prefix)


def wait_done(launcher, iid: str, timeout: float = 30.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        st = launcher.poll([iid])[iid]
        if not st.state.is_alive():
            return st
        time.sleep(0.05)
    raise AssertionError(f"{iid} still running after {timeout} s")


@pytest.fixture
def store(tmp_path):
    return open_store((tmp_path / "store").as_uri(), create=True)


@pytest.fixture
def launcher(tmp_path):
    lau = LocalLauncher(tmp_path / "var", max_concurrent=2, gpus=[], grace_s=5, extra_env=FAST_ENV)
    yield lau
    for st in lau.list_instances():
        if st.state.is_alive():
            lau.kill(st.instance_id)


def test_instance_names_are_deterministic_and_cloud_safe():
    assert instance_name("My Camp_1", "train-S_vs_B-g0", 3) == "my-camp-1-train-s-vs-b-g0-3"
    req = LaunchRequest("c", "j", 2, "file:///x")
    assert req.instance_id == "c-j-2" == instance_name("c", "j", 2)


def test_launch_runs_the_worker_once_and_is_idempotent(store, launcher):
    req = LaunchRequest("c", "j1", 1, make_job(store, "j1", steps=4, step_s=0.05))
    first = launcher.launch(req)
    again = launcher.launch(req)
    assert not first.already_running and again.already_running
    st = wait_done(launcher, req.instance_id)
    assert (st.state, st.exit_code) == (InstanceState.EXITED, 0)
    # launching a finished instance again must not start a second run
    third = launcher.launch(req)
    assert third.already_running and "exited" in third.detail
    job = store.child(layout.job_prefix("c", "j1"))
    assert job.list("attempts/") and [
        k for k in job.list("attempts/") if k.endswith("exit.json")
    ] == ["attempts/1/exit.json"]
    assert json.loads(job.get_bytes("attempts/1/exit.json"))["status"] == "succeeded"
    assert launcher.list_instances("c")[0].instance_id == "c-j1-1"
    assert launcher.list_instances("other") == []


def test_concurrency_limit_and_gpu_assignment(store, tmp_path):
    lau = LocalLauncher(tmp_path / "gvar", max_concurrent=3, gpus=[0, 1], extra_env=FAST_ENV)
    reqs = [
        LaunchRequest("c", f"g{i}", 1, make_job(store, f"g{i}", steps=100, step_s=0.1), gpus=1)
        for i in range(3)
    ]
    try:
        lau.launch(reqs[0])
        lau.launch(reqs[1])
        with pytest.raises(CapacityError, match="needs 1 GPU"):
            lau.launch(reqs[2])
        seen = set()
        for r in reqs[:2]:
            deadline = time.time() + 10
            while not lau.worker_pids(r.instance_id) and time.time() < deadline:
                time.sleep(0.05)
            env = psutil.Process(lau.worker_pids(r.instance_id)[0]).environ()
            seen.add(env["CUDA_VISIBLE_DEVICES"])
            assert env["NSBI_INSTANCE_ID"] == r.instance_id
        assert seen == {"0", "1"}
        cpu_req = LaunchRequest("c", "cpu", 1, make_job(store, "cpu", steps=100, step_s=0.1))
        lau.launch(cpu_req)  # third slot, no GPU needed
        with pytest.raises(CapacityError, match="all 3 slots busy"):
            lau.launch(LaunchRequest("c", "cpu2", 1, make_job(store, "cpu2")))
        assert lau.free_slots() == 0
    finally:
        for st in lau.list_instances():
            lau.kill(st.instance_id)


def test_cancel_sigterms_the_group_and_the_worker_exits_preempted(store, launcher):
    req = LaunchRequest("c", "long", 1, make_job(store, "long", steps=1000, step_s=0.05))
    launcher.launch(req)
    job = store.child(layout.job_prefix("c", "long"))
    deadline = time.time() + 20
    while not job.list(layout.checkpoints_prefix(1)) and time.time() < deadline:
        time.sleep(0.05)
    t0 = time.time()
    launcher.cancel(req.instance_id)
    st = wait_done(launcher, req.instance_id)
    assert time.time() - t0 < 5
    assert (st.state, st.exit_code, st.detail) == (
        InstanceState.EXITED,
        EXIT_PREEMPTED,
        "cancelled",
    )
    exit_doc = json.loads(job.get_bytes(layout.exit_key(1)))
    assert exit_doc["status"] == "preempted" and exit_doc["exit_code"] == EXIT_PREEMPTED
    assert job.list(layout.checkpoints_prefix(1))


def test_time_limit_then_sigkill_after_grace_for_a_worker_that_ignores_sigterm(store, tmp_path):
    lau = LocalLauncher(
        tmp_path / "tvar", max_concurrent=1, gpus=[], grace_s=0.5, extra_env=FAST_ENV
    )
    req = LaunchRequest(
        "c",
        "hung",
        1,
        make_job(store, "hung", steps=1000, step_s=0.05, ignore_stop=True),
        time_limit_s=1.0,
    )
    lau.launch(req)
    t0 = time.time()
    st = wait_done(lau, req.instance_id)
    assert 1.0 < time.time() - t0 < 8
    assert (st.state, st.exit_code) == (InstanceState.EXITED, 128 + 9)  # the group got SIGKILL
    assert "time limit" in st.detail and "killed after" in st.detail
    assert lau.worker_pids(req.instance_id) == []
    assert not store.child(layout.job_prefix("c", "hung")).exists(
        layout.exit_key(1)
    )  # SIGKILL: no exit.json


def test_a_restarted_launcher_finds_running_and_finished_processes(store, tmp_path):
    var = tmp_path / "rvar"
    req = LaunchRequest("c", "r", 1, make_job(store, "r", steps=15, step_s=0.1))
    LocalLauncher(var, gpus=[], extra_env=FAST_ENV).launch(req)
    fresh = LocalLauncher(var, gpus=[], extra_env=FAST_ENV)  # no Popen objects: like a restart
    assert fresh.poll([req.instance_id])[req.instance_id].state is InstanceState.RUNNING
    assert fresh.launch(req).already_running
    st = wait_done(fresh, req.instance_id)
    assert (st.state, st.exit_code) == (InstanceState.EXITED, 0)  # from the wrapper's rc file


def test_recycled_pid_is_not_mistaken_for_the_worker(tmp_path):
    lau = LocalLauncher(tmp_path / "pvar", gpus=[])
    rec = {
        "instance_id": "c-x-1",
        "campaign": "c",
        "job": "x",
        "attempt": 1,
        "job_uri": "file:///nowhere",
        "pid": os.getpid(),
        "create_time": psutil.Process().create_time() - 1000.0,
        "started_at": 0.0,
        "deadline": None,
        "gpus": [],
        "log": "",
        "term_sent_at": None,
        "term_reason": "",
        "killed": False,
    }
    (lau.instances_dir / "c-x-1.json").write_text(json.dumps(rec))
    st = lau.poll(["c-x-1", "c-unknown-1"])
    assert st["c-x-1"].state is InstanceState.GONE
    assert (
        st["c-unknown-1"].state is InstanceState.GONE
        and st["c-unknown-1"].detail == "no such instance"
    )


def test_a_process_started_before_its_pid_was_recorded_is_found_by_marker(tmp_path):
    lau = LocalLauncher(tmp_path / "mvar", gpus=[])
    proc = subprocess.Popen(["sh", "-c", "sleep 30", MARKER + "c-m-1"], start_new_session=True)
    try:
        rec = {
            "instance_id": "c-m-1",
            "campaign": "c",
            "job": "m",
            "attempt": 1,
            "job_uri": "file:///x",
            "pid": None,
            "create_time": None,
            "started_at": time.time(),
            "deadline": None,
            "gpus": [],
            "log": "",
            "term_sent_at": None,
            "term_reason": "",
            "killed": False,
        }
        (lau.instances_dir / "c-m-1.json").write_text(json.dumps(rec))
        assert lau.launch(LaunchRequest("c", "m", 1, "file:///x")).already_running
        assert lau.poll(["c-m-1"])["c-m-1"].state is InstanceState.RUNNING
        lau.kill("c-m-1")
        proc.wait(timeout=5)
        assert lau.poll(["c-m-1"])["c-m-1"].state is InstanceState.GONE
    finally:
        if proc.poll() is None:
            proc.kill()


def test_registry_builds_the_local_launcher_under_nsbi_home(tmp_path):
    class S:
        home = tmp_path / "home"

    lau = get_launcher("local", S(), max_concurrent=3, gpus=[])
    assert isinstance(lau, LocalLauncher) and lau.max_concurrent == 3
    assert lau.var_dir == tmp_path / "home" / "launchers" / "local"
    with pytest.raises(Exception, match="unknown launcher 'nope'"):
        get_launcher("nope", S())


def test_forget_drops_a_finished_record_and_refuses_a_live_one(store, launcher):
    done = LaunchRequest("c", "done", 1, make_job(store, "done", steps=1, step_s=0.0))
    live = LaunchRequest("c", "live", 1, make_job(store, "live", steps=1000, step_s=0.05))
    launcher.launch(done)
    launcher.launch(live)
    wait_done(launcher, done.instance_id)
    with pytest.raises(Exception, match="still running"):
        launcher.forget(live.instance_id)
    launcher.forget(done.instance_id)
    names = sorted(p.name for p in launcher.instances_dir.iterdir())
    assert names == [
        f"{live.instance_id}.json"
    ]  # record and exit status of the finished one are gone
    assert launcher.log_path(done.instance_id).exists()  # the log stays
    assert [st.instance_id for st in launcher.list_instances()] == [live.instance_id]
    assert launcher.free_slots() == 1  # what is forgotten no longer takes a slot or a read
    launcher.forget("never-launched-1")  # unknown names are fine
