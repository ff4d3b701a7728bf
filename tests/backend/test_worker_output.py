"""The worker copies its stdout and stderr into the store (attempts/<N>/output/) while it runs,
so the dashboard shows an attempt's output whatever the launcher (a GCE VM keeps its own log on
the instance)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from sqlmodel import Session

from backend.db import create_engine, init_db
from backend.db.models import Attempt, Campaign, Job
from backend.listings import job_attempts
from backend.stores import layout, open_store, put_json
from backend.stores.base import list_segments
from backend.worker import EXIT_FAILED
from backend.worker_output import OutputBuffer, read_output_tail

REPO = Path(__file__).resolve().parents[2]


def _worker(job, attempt: int = 1) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "backend.commands.worker", job.uri, "--attempt", str(attempt)]
        + ["--interval", "0.2"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stored(job, attempt: int = 1) -> str:
    return "".join(
        job.get_bytes(k).decode() for _, k in list_segments(job, layout.output_prefix(attempt))
    )


def test_the_buffer_keeps_the_newest_output_and_says_what_it_dropped():
    buf = OutputBuffer(max_pending=10)
    buf.add("0123456789")
    buf.add("abc")
    text = buf.drain()
    assert text.endswith("3456789abc") and "3 characters of output dropped" in text
    assert buf.drain() == ""
    buf.add("new")
    buf.put_back("refused ")  # a segment the store did not take goes back in front
    assert buf.drain() == "refused new"


def test_the_worker_copies_its_output_to_the_store_while_it_runs(tmp_path):
    job = open_store((tmp_path / "store").as_uri(), create=True).child(layout.job_prefix("c", "j"))
    steps = 25
    put_json(
        job, layout.SPEC, {"kind": "noop", "params": {"steps": steps, "step_s": 0.1, "echo": True}}
    )
    proc = _worker(job)
    seen_while_running = ""
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            text = _stored(job)
            if "noop step" in text:
                seen_while_running = text
                break
            time.sleep(0.1)
        log, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, log
    # some output was in the store before the job ended, and every line is there at the end
    assert "noop step 1 of" in seen_while_running
    assert f"noop step {steps} of {steps}" not in seen_while_running
    stored = _stored(job)
    assert [f"noop step {s} of {steps}" for s in range(1, steps + 1)] == [
        line for line in stored.splitlines() if line.startswith("noop step")
    ]
    # the launcher's own log (here the pipe) still gets everything too
    assert f"noop step {steps} of {steps}" in log

    # the tail: the newest bytes, flagged as truncated when older output is left out
    text, truncated = read_output_tail(job, 1, 40)
    assert len(text.encode()) <= 40 and stored.endswith(text) and truncated
    assert read_output_tail(job, 1, 1 << 20) == (stored, False)
    assert read_output_tail(job, 2, 100) is None


def test_a_failed_attempt_stores_its_traceback_and_the_dashboard_reads_it(tmp_path):
    job = open_store((tmp_path / "store").as_uri(), create=True).child(layout.job_prefix("c", "j"))
    put_json(
        job,
        layout.SPEC,
        {
            "kind": "noop",
            "params": {"steps": 4, "step_s": 0.01, "echo": True, "fail_on_attempts": [1]},
        },
    )
    proc = _worker(job)
    log, _ = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_FAILED, log
    stored = _stored(job)
    assert "noop step 2 of 4" in stored
    assert stored.rstrip().endswith(
        "RuntimeError: noop job: deliberate failure at step 2 on attempt 1"
    )
    assert "Traceback (most recent call last)" in stored

    # a GCE attempt: its VM's log is not readable here, the stored copy is shown instead
    engine = create_engine(f"sqlite:///{tmp_path / 'nsbi.db'}")
    init_db(engine)
    with Session(engine) as s:
        camp = Campaign(name="c", config_hash="0" * 64, status="ACTIVE", launcher="gce")
        s.add(camp)
        s.flush()
        j = Job(campaign_id=camp.id, name="j", kind="train", spec={}, uri=job.uri)
        s.add(j)
        s.flush()
        s.add(Attempt(job_id=j.id, attempt_no=1, status="FAILED", launcher="gce", instance_id="vm"))
        s.add(
            Attempt(job_id=j.id, attempt_no=2, status="RUNNING", launcher="gce", instance_id="vm2")
        )
        s.commit()
        job_id = j.id
    first, second = job_attempts(job_id, engine=engine)
    assert first["output"] == stored and first["output_note"] == "copied to the store by the worker"
    assert (
        second["output"] is None and second["output_note"] == "the worker has stored no output yet"
    )
