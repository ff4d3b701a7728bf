"""The worker runtime: store layout, checkpoints across attempts, exit records, SIGTERM, and
the real "train" kind on a tiny configuration."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backend.resources import ResourceSampler
from backend.stores import layout, open_store, put_json
from backend.stores.base import decode_jsonl, get_json, list_segments
from backend.worker import (
    EXIT_BAD_SPEC,
    EXIT_FAILED,
    EXIT_PREEMPTED,
    EXIT_SUCCEEDED,
    AttemptWriter,
    StoreCheckpointer,
    run_attempt,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def job(tmp_path):
    store = open_store((tmp_path / "store").as_uri(), create=True)
    return store.child(layout.job_prefix("c", "j"))


def metrics_of(job, attempt: int) -> list[dict]:
    return [
        r
        for _, k in list_segments(job, layout.metrics_prefix(attempt))
        for r in decode_jsonl(job.get_bytes(k))
    ]


def test_noop_attempt_writes_the_documented_layout(job):
    put_json(job, layout.SPEC, {"kind": "noop", "params": {"steps": 5, "step_s": 0.01}})
    out = run_attempt(job.uri, 1, install_signals=False, interval=0.05)
    assert (out.status, out.exit_code, out.error) == ("succeeded", EXIT_SUCCEEDED, None)
    exit_doc = get_json(job, layout.exit_key(1))
    assert (
        exit_doc["status"] == "succeeded"
        and exit_doc["exit_code"] == 0
        and exit_doc["attempt"] == 1
    )
    result = get_json(job, layout.result_key(1))
    assert result["kind"] == "noop" and result["artifacts"]["noop"] == job.uri_for(
        "attempts/1/artifacts/noop.json"
    )
    loss = sorted((r["step"], r["value"]) for r in metrics_of(job, 1) if r["name"] == "loss")
    assert loss == [(s, 1.0 / s) for s in range(1, 6)]  # every step once, in order
    assert list_segments(job, layout.heartbeat_prefix(1))  # at least the first and final beat
    (sample, *_) = [
        r
        for _, k in list_segments(job, layout.resources_prefix(1))
        for r in decode_jsonl(job.get_bytes(k))
    ]
    assert sample["rss_bytes"] > 10_000_000 and sample["gpus"] == [] and "cpu_percent" in sample


def test_failure_and_bad_spec_are_recorded_in_exit_json(job):
    put_json(
        job,
        layout.SPEC,
        {
            "kind": "noop",
            "params": {"steps": 4, "step_s": 0.0, "fail_on_attempts": [1], "fail_at_step": 2},
        },
    )
    out = run_attempt(job.uri, 1, install_signals=False, interval=0.05)
    assert (out.status, out.exit_code) == ("failed", EXIT_FAILED)
    doc = get_json(job, layout.exit_key(1))
    assert doc["status"] == "failed" and "deliberate failure at step 2" in doc["error"]
    assert not job.exists(layout.result_key(1))
    put_json(job, layout.SPEC, {"kind": "nonsense"})
    out = run_attempt(job.uri, 2, install_signals=False)
    assert out.exit_code == EXIT_BAD_SPEC and "unknown job kind 'nonsense'" in out.error
    assert get_json(job, layout.exit_key(2))["exit_code"] == EXIT_BAD_SPEC
    job.delete(layout.SPEC)
    out = run_attempt(job.uri, 3, install_signals=False)
    assert out.exit_code == EXIT_BAD_SPEC and "spec.json: no such object" in out.error


def test_job_kinds_come_from_the_registry_and_the_named_modules_only(job, monkeypatch):
    """Production knows no "noop"; NSBI_JOB_KIND_MODULES adds it; a broken name fails for good."""
    put_json(job, layout.SPEC, {"kind": "noop", "params": {"steps": 1, "step_s": 0.0}})
    monkeypatch.delenv("NSBI_JOB_KIND_MODULES")
    out = run_attempt(job.uri, 1, install_signals=False)
    assert out.exit_code == EXIT_BAD_SPEC and "unknown job kind 'noop'" in out.error
    monkeypatch.setenv("NSBI_JOB_KIND_MODULES", "nsbi_testing.no_such_module")
    out = run_attempt(job.uri, 2, install_signals=False)
    assert (out.exit_code, out.retryable) == (EXIT_FAILED, False) and "no_such_module" in out.error
    assert get_json(job, layout.exit_key(2))["retryable"] is False
    monkeypatch.setenv("NSBI_JOB_KIND_MODULES", " nsbi_testing.jobkinds ,")
    assert run_attempt(job.uri, 3, install_signals=False, interval=0.05).exit_code == EXIT_SUCCEEDED


def test_checkpointer_resumes_from_the_newest_checkpoint_of_any_attempt(job):
    first = StoreCheckpointer(job, 1, keep=2)
    assert first.load_latest() is None
    for step in (10, 20, 30):
        first.save(step, f"a1-{step}".encode())
    assert [s for s, _ in list_segments(job, layout.checkpoints_prefix(1))] == [20, 30]  # keeps 2
    second = StoreCheckpointer(job, 2)
    assert second.load_latest() == (30, b"a1-30")
    second.save(40, b"a2-40")
    assert StoreCheckpointer(job, 3).load_latest() == (40, b"a2-40")
    # a later attempt never reads checkpoints of attempts after it
    assert StoreCheckpointer(job, 1).load_latest() == (30, b"a1-30")


def test_metrics_reach_the_store_before_the_checkpoint_that_covers_them(job):
    writer = AttemptWriter(job, 1)
    ckpt = StoreCheckpointer(job, 1, before_save=writer.flush_metrics)
    writer.add_metrics([{"member": 0, "step": 7, "epoch": None, "name": "x", "value": 1.5}])
    ckpt.save(7, b"state")
    assert metrics_of(job, 1) == [
        {"member": 0, "step": 7, "epoch": None, "name": "x", "value": 1.5}
    ]


def test_each_evaluation_reaches_the_store_while_the_job_runs(job):
    """Metrics are written within about a second of each report, not only at the heartbeat
    interval (30 s here) or at a checkpoint; resource samples keep the interval's rate."""
    import threading

    steps = 8
    put_json(
        job,
        layout.SPEC,
        {"kind": "noop", "params": {"steps": steps, "step_s": 0.6, "checkpoint_every": 1000}},
    )
    seen: list[int] = []  # the newest step in the store, polled while the attempt runs
    runner = threading.Thread(
        target=lambda: seen.append(run_attempt(job.uri, 1, install_signals=False, interval=30.0))
    )
    runner.start()
    polled: list[int] = []
    while runner.is_alive():
        steps_now = [r["step"] for r in metrics_of(job, 1) if r["name"] == "loss"]
        polled.append(max(steps_now, default=0))
        time.sleep(0.2)
    runner.join()
    assert seen[0].exit_code == EXIT_SUCCEEDED
    growth = sorted(set(polled) - {0, steps})
    assert len(growth) >= steps // 2, polled  # most evaluations seen on their own before the end
    assert sorted(r["step"] for r in metrics_of(job, 1) if r["name"] == "loss") == list(
        range(1, steps + 1)
    )


def test_resource_samples_come_at_a_steady_rate(job):
    put_json(job, layout.SPEC, {"kind": "noop", "params": {"steps": 12, "step_s": 0.25}})
    assert run_attempt(job.uri, 1, install_signals=False, interval=0.5).exit_code == 0
    times = [
        r["time"]
        for _, k in list_segments(job, layout.resources_prefix(1))
        for r in decode_jsonl(job.get_bytes(k))
    ]
    gaps = [b - a for a, b in zip(times, times[1:-1])]  # the last one is the final flush
    assert len(times) >= 5 and all(0.3 < g < 0.8 for g in gaps), gaps


def test_resource_sampler_reports_this_process():
    rec = ResourceSampler().sample()
    assert rec["rss_bytes"] > 10_000_000 and 0 <= rec["system_memory_percent"] <= 100
    assert abs(rec["time"] - time.time()) < 5


def sigterm_after_first_checkpoint(job, env=None) -> tuple[int, float, str]:
    """Run a worker on `job`, SIGTERM it once its first checkpoint exists; (exit code, seconds
    from the signal to the exit, output)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "backend.commands.worker",
            job.uri,
            "--attempt",
            "1",
            "--interval",
            "0.1",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 30
        while not list_segments(job, layout.checkpoints_prefix(1)) and time.time() < deadline:
            time.sleep(0.05)
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=25)
        return rc, time.time() - t0, proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_checkpoints_and_exits_preempted_quickly(job):
    put_json(job, layout.SPEC, {"kind": "noop", "params": {"steps": 10_000, "step_s": 0.02}})
    rc, waited, _ = sigterm_after_first_checkpoint(job)
    assert rc == EXIT_PREEMPTED and waited < 25
    doc = get_json(job, layout.exit_key(1))
    assert (
        doc["status"] == "preempted"
        and doc["exit_code"] == EXIT_PREEMPTED
        and "SIGTERM" in doc["error"]
    )
    last = max(s for s, _ in list_segments(job, layout.checkpoints_prefix(1)))
    steps = [r["step"] for r in metrics_of(job, 1) if r["name"] == "loss"]
    assert steps == list(range(1, max(steps) + 1)) and max(steps) >= last


TINY_TRAIN = {
    "task": "S_vs_B",
    "members": [4, 5],
    "numerator": {"demo": {"process": "S", "n": 3000, "seed": 1}},
    "denominator": {"demo": {"process": "B", "n": 3000, "seed": 2}},
    "train": {
        "hidden_layers": 1,
        "width": 16,
        "members": 2,
        "max_steps": 60,
        "eval_every": 10,
        "checkpoint_every": 10,
        "batch_size": 256,
        "learning_rate": 0.01,
        "patience": 100,
        "seed": 3,
    },
}


def start_worker(job, attempt: int, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "backend.commands.worker",
            job.uri,
            "--attempt",
            str(attempt),
            "--interval",
            "0.2",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.slow
def test_train_kind_preempted_then_resumed_from_checkpoint(job, tmp_path):
    """The real engine: attempt 1 gets SIGTERM (checkpoint + exit 75), attempt 2 resumes.
    Both share a JAX compilation cache, as workers started by the local launcher do."""
    from sbi_engine.ratio import Ensemble

    env = {
        **os.environ,
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax-cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "NSBI_WORKER_STOP_GRACE_S": "300",
    }  # a loaded CI box may take >15 s to reach the first interval
    put_json(job, layout.SPEC, {"kind": "train", "name": "train-S", "params": TINY_TRAIN})
    proc = start_worker(job, 1, env)
    try:
        deadline = time.time() + 60
        while not list_segments(job, layout.heartbeat_prefix(1)) and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(
            signal.SIGTERM
        )  # arrives during JAX import/compile: stops at the first interval
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == EXIT_PREEMPTED, proc.stdout.read().decode()
    assert get_json(job, layout.exit_key(1))["status"] == "preempted"
    ckpts = [s for s, _ in list_segments(job, layout.checkpoints_prefix(1))]
    assert ckpts and max(ckpts) < 60

    proc = start_worker(job, 2, env)
    rc = proc.wait(timeout=180)
    assert rc == EXIT_SUCCEEDED, proc.stdout.read().decode()
    result = get_json(job, layout.result_key(2))
    s = result["summary"]
    assert s["resumed_from"] == max(ckpts) and s["steps_total"] == 60
    assert s["steps_run"] == 60 - max(ckpts) < 60  # fewer steps than from scratch
    assert s["task"] == "S_vs_B" and s["members"] == [4, 5]
    recs = metrics_of(job, 2)
    assert {r["name"] for r in recs} >= {"train_loss", "val_loss"}
    assert min(r["step"] for r in recs) > max(ckpts) and all(
        math.isfinite(r["value"]) for r in recs
    )
    # the ensemble in the store is a complete, loadable 2-member ensemble
    ens = Ensemble.load(Path(result["artifacts"]["ensemble"].removeprefix("file://")))
    assert ens.metadata["members"] == 2 and ens.metadata["training"]["complete"] is True
    assert ens.metadata["training"]["steps_run"] == 60


def test_a_job_that_ignores_the_stop_request_is_interrupted_after_the_grace(job):
    put_json(
        job,
        layout.SPEC,
        {"kind": "noop", "params": {"steps": 10_000, "step_s": 0.5, "ignore_stop": True}},
    )
    env = {**os.environ, "NSBI_WORKER_STOP_GRACE_S": "1"}
    rc, waited, out = sigterm_after_first_checkpoint(job, env)
    assert rc == EXIT_PREEMPTED and 1.0 <= waited < 5, (rc, waited, out)
    doc = get_json(job, layout.exit_key(1))
    assert doc["status"] == "preempted" and "did not stop within 1 s" in doc["error"]
