"""Spec errors are not retried (issue 16, finding 7).

A sample file that goes missing after the campaign was validated makes the worker's sample
loading fail; that is a *spec error* (``exit.json``: ``"failure_kind": "spec_error"``,
``"retryable": false``), and the controller fails the job at once with the worker's located
message: one attempt although retries were allowed (on GCE each retry is a VM boot). And
``nsbi campaign create`` refuses a config whose sample file is missing before anything is stored.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backend.stores import open_store
from backend.stores.base import get_json
from backend.worker import EXIT_BAD_SPEC, is_spec_error, run_attempt

REPO = Path(__file__).resolve().parents[2]


def _config(sample: Path, retry_limit: int = 2) -> str:
    spec = json.dumps({"path": str(sample), "features": ["x", "y"]})
    return f"""
name: missing-sample
backend: {{launcher: local, machine_type: local, max_concurrency: 1, retry_limit: {retry_limit}}}
processes:
  S: {spec}
  B: {{demo: {{process: B, n: 500, seed: 3}}}}
reference: B
training:
  ensemble_size: 1
  members_per_job: 1
  params: {{hidden_layers: 1, width: 8, max_steps: 20, eval_every: 10, batch_size: 64}}
fit: {{enabled: false}}
"""


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        NSBI_HOME=str(tmp_path / "home"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite'}",
        NSBI_STORE=(tmp_path / "store").as_uri(),
        NSBI_WORKER_INTERVAL_S="0.5",
    )
    return env


def _nsbi(
    args: list[str], env: dict[str, str], timeout: float = 240
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "backend.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _rows(db: Path, sql: str) -> list[tuple]:
    if not db.exists():
        return []
    with sqlite3.connect(db) as con:
        try:
            return list(con.execute(sql))
        except sqlite3.OperationalError:  # no such table: nothing was stored
            return []


def test_campaign_create_refuses_a_missing_sample_file_before_storing(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(_config(tmp_path / "nowhere.npz"))
    out = _nsbi(["campaign", "create", str(cfg)], _env(tmp_path), timeout=120)
    assert out.returncode == 2, out.stderr
    assert f"{cfg}:" in out.stderr  # the file, then line and key
    assert "processes.S.path" in out.stderr and "file not found" in out.stderr
    assert _rows(tmp_path / "db.sqlite", "select id from campaign") == []


def test_engine_input_errors_are_spec_errors():
    from backend.jobkinds import JobSpecError
    from sbi_engine.sample import DataError

    assert is_spec_error(DataError("x.npz: file not found"))
    assert is_spec_error(JobSpecError("params.numerator: ..."))
    assert not is_spec_error(RuntimeError("the store hiccupped"))
    assert not is_spec_error(ValueError("some numerical trouble"))


def test_train_job_with_a_missing_sample_records_a_spec_error(tmp_path):
    job_uri = (tmp_path / "job").as_uri()
    store = open_store(job_uri, create=True)
    spec = {
        "kind": "train",
        "params": {
            "numerator": {"path": str(tmp_path / "gone.npz"), "features": ["x"]},
            "denominator": {"demo": {"process": "B", "n": 100, "seed": 1}},
        },
    }
    store.put_bytes("spec.json", json.dumps(spec).encode())
    outcome = run_attempt(job_uri, 1, install_signals=False, interval=0.2)
    assert (outcome.status, outcome.exit_code, outcome.retryable) == (
        "failed",
        EXIT_BAD_SPEC,
        False,
    )
    exit_doc = get_json(store, "attempts/1/exit.json")
    assert exit_doc["failure_kind"] == "spec_error"
    assert exit_doc["error"].startswith("params.numerator: ")
    assert "gone.npz: file not found" in exit_doc["error"]


def _reweighted_train_job(tmp_path, **sample_keys) -> tuple[str, object]:
    """A train job of SBI (the B events with SBI weights) against B: (job URI, its store)."""
    from sbi_engine.problems import get_problem

    files = get_problem("interference_reweighted").write_samples(
        tmp_path / "samples", events_scale=0.002
    )
    job_uri = (tmp_path / "job").as_uri()
    store = open_store(job_uri, create=True)
    sample = {"format": "parquet", "features": ["m", "c"], "weight": "weight", **sample_keys}
    spec = {
        "kind": "train",
        "params": {
            "task": "SBI_vs_B",
            "numerator": {**sample, "path": str(files["SBI"])},
            "denominator": {**sample, "path": str(files["B"])},
            "train": {"members": 1, "hidden_layers": 1, "width": 8, "max_steps": 20},
        },
    }
    store.put_bytes("spec.json", json.dumps(spec).encode())
    return job_uri, store


def test_train_job_on_reweighted_samples_split_apart_records_a_spec_error(tmp_path):
    """SBI written as the B events with other weights, both split by the row hash (which
    includes the weight): the job refuses before training and names the remedy."""
    job_uri, store = _reweighted_train_job(tmp_path)
    outcome = run_attempt(job_uri, 1, install_signals=False, interval=0.2)
    assert (outcome.status, outcome.exit_code, outcome.retryable) == (
        "failed",
        EXIT_BAD_SPEC,
        False,
    )
    error = get_json(store, "attempts/1/exit.json")["error"]
    assert error.startswith("params.numerator/denominator: ")
    assert "hold the same 1000 events" in error and "split_by" in error


def test_train_job_on_reweighted_samples_split_by_event_trains_paired(tmp_path):
    """The remedy the refusal above names: with `split_by: event` on both samples the job
    trains, paired, and says so in its summary."""
    from backend.stores.layout import result_key

    job_uri, store = _reweighted_train_job(tmp_path, split_by="event")
    outcome = run_attempt(job_uri, 1, install_signals=False, interval=0.2)
    assert outcome.status == "succeeded", get_json(store, "attempts/1/exit.json")
    summary = get_json(store, result_key(1))["summary"]
    assert summary["paired"] is True and summary["diagnostics"]["paired"] is True
    assert summary["split"]["numerator"]["method"] == "split_by"
    assert summary["split"]["numerator"]["sizes"] == summary["split"]["denominator"]["sizes"]


@pytest.mark.timeout(600)
def test_sample_deleted_after_validation_fails_the_job_once_with_the_message(tmp_path):
    sample = tmp_path / "S.npz"
    rng = np.random.default_rng(0)
    np.savez(sample, x=rng.normal(size=300), y=rng.normal(size=300))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(_config(sample, retry_limit=3))
    env = _env(tmp_path)
    out = _nsbi(["campaign", "create", str(cfg), "--launch"], env, timeout=120)
    assert out.returncode == 0, out.stderr
    sample.unlink()  # gone after validation, before any worker reads it
    (tmp_path / "store").mkdir()
    out = _nsbi(["controller", "--until-idle", "--interval", "0.5", "--quiet"], env)
    assert out.returncode == 0, out.stderr[-3000:]
    db = tmp_path / "db.sqlite"
    (campaign_status,) = _rows(db, "select status from campaign")[0]
    assert campaign_status == "FAILED"
    jobs = _rows(db, "select id, name, status, status_reason from job")
    s_jobs = [j for j in jobs if j[1].startswith("train-S")]
    assert s_jobs, jobs
    for job_id, name, status, reason in s_jobs:
        assert status == "FAILED", (name, status, reason)
        attempts = _rows(
            db, f"select attempt_no, exit_code, failure_reason from attempt where job_id = {job_id}"
        )
        assert len(attempts) == 1, attempts  # not retried although retry_limit is 3
        (_, code, why) = attempts[0]
        assert code == EXIT_BAD_SPEC
        assert why.startswith("spec error (exit code 2; not retried): params.numerator: ")
        assert f"{sample}: file not found" in why
        assert reason == why
