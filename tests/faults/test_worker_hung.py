"""A worker hangs: SIGSTOP freezes it mid-run (no heartbeat, no exit). The controller must see
the heartbeat stop, kill the frozen process, fail the attempt and retry the job from its
checkpoint; the campaign completes with no attempt running beside another and no metric
point lost.

    pytest tests/faults/test_worker_hung.py -s
"""

from __future__ import annotations

import os
import signal
import time

import psutil
from fault_kit import (
    attempt_row,
    audit,
    campaign_final,
    figures,
    job_points,
    kill_workers,
    start_controller,
    stop_process,
    wait_for,
)
from nsbi_ctl_testkit import JobDef, make_campaign

from backend.db import create_engine, init_db
from backend.states import JobStatus

HEARTBEAT_TIMEOUT_S = 6.0
STEPS = {"a": 50, "b": 30}


def _worker_pid(job_uri: str, attempt_no: int) -> int:
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "backend.commands.worker" in cmd and job_uri in cmd and str(attempt_no) in cmd:
            return proc.pid
    raise AssertionError(f"no worker process for {job_uri} attempt {attempt_no}")


def test_a_hung_worker_is_detected_killed_and_retried(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'nsbi.db'}"
    engine = init_db(create_engine(db_url))
    store = tmp_path / "store"
    store.mkdir()
    cid = make_campaign(
        engine, [JobDef(name, {"steps": n, "step_s": 0.1}) for name, n in STEPS.items()]
    )
    home = tmp_path / "home"
    ctl = start_controller(home, db_url, store.as_uri(), heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S)
    try:
        wait_for("job a halfway", lambda: job_points(engine, "a") >= 2 * 15, 90, [ctl])
        pid = _worker_pid(_job_uri(engine, "a"), 1)
        os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        failed = wait_for(
            "the hung attempt failed",
            lambda: (a := attempt_row(engine, "a", 1)) and a.status == JobStatus.FAILED and a,
            HEARTBEAT_TIMEOUT_S + 30,
            [ctl],
        )
        detected_s = time.monotonic() - stopped_at
        wait_for("the retry's first metrics", lambda: job_points(engine, "a", 2) > 0, 60, [ctl])
        recovered_s = time.monotonic() - stopped_at
        wait_for("the campaign", lambda: campaign_final(engine, cid), 120, [ctl])
    finally:
        stop_process(ctl)
        kill_workers(home)
    assert "lost heartbeat" in failed.failure_reason, failed.failure_reason
    # the frozen process was killed (SIGKILL reaches a stopped process), not left behind
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    result = audit(engine, cid, STEPS)
    assert result["status"] == "SUCCEEDED" and result["attempts"] == {"a": 2, "b": 1}, result
    figures(
        "worker hung (SIGSTOP)",
        detected_s=round(detected_s, 1),
        recovery_s=round(recovered_s, 1),
        reason=failed.failure_reason,
        **result,
    )
    engine.dispose()


def _job_uri(engine, name: str) -> str:
    from sqlmodel import Session, select

    from backend.db.models import Job

    with Session(engine) as s:
        return s.exec(select(Job.uri).where(Job.name == name)).one()
