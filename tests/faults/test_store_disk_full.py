"""The store's disk fills up mid-campaign. The local store lives on a small tmpfs of its own
(`mount -t tmpfs -o size=...`, so root is needed; the test skips with the reason otherwise);
while two workers run, a filler file takes every free byte.

- **Space never returns**: each write of the workers fails with ENOSPC (`StoreError: cannot
  write ...: No space left on device`); their attempts fail, the retries fail the same way,
  and the campaign ends FAILED: the jobs with that message as their reason, the job that
  depends on them cancelled. Every object stored before the disk filled is still there,
  byte for byte, and every metric point in the store is in the database.
- **Space returns** after the campaign failed (the filler deleted) and the user retries the
  failed jobs (`backend.intents.request_retry`, what `nsbi campaign retry` and the dashboard
  do): each job resumes from its newest checkpoint and the campaign succeeds.

A full store fails an attempt within a second or so (the worker's next checkpoint or first
heartbeat cannot be written) and the retries fail as fast, so a disk full for only a few
seconds still spends the jobs' automatic retries; what was stored stays, and a retry after
space returns loses nothing.

    pytest tests/faults/test_store_disk_full.py -s
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from fault_kit import (
    audit,
    campaign_final,
    figures,
    job_points,
    kill_workers,
    start_controller,
    stop_process,
    unavailable,
    wait_for,
)
from nsbi_ctl_testkit import JobDef, make_campaign
from sqlmodel import Session, select

from backend.db import create_engine, init_db
from backend.db.models import Attempt, Job
from backend.intents import request_retry
from backend.states import JobStatus
from backend.stores import layout, open_store
from backend.stores.base import get_json, list_segments

STEPS = {"a": 60, "b": 60, "c": 10}
SIZE = "8m"


@pytest.fixture
def small_disk():
    """A tmpfs of SIZE bytes mounted on a fresh folder, unmounted afterwards."""
    where = Path(tempfile.mkdtemp(prefix="nsbi-full-"))
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0755", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        where.rmdir()
        unavailable(f"cannot mount a {SIZE} tmpfs for the store: {out.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
        where.rmdir()


def _fill(disk: Path) -> Path:
    """Take every free byte of ``disk`` with one file; return it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 20, 1 << 12, 1):  # big blocks, then the last pages and bytes
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def _campaign(engine) -> int:
    return make_campaign(
        engine,
        [
            JobDef(name, {"steps": STEPS[name], "step_s": 0.1, "checkpoint_every": 5}, deps=deps)
            for name, deps in (("a", ()), ("b", ()), ("c", ("a", "b")))
        ],
    )


def test_store_disk_full_for_good_fails_the_campaign_cleanly(small_disk, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'nsbi.db'}"  # the database is on another disk
    engine = init_db(create_engine(db_url))
    store = small_disk / "store"
    store.mkdir()
    cid = _campaign(engine)
    home = tmp_path / "home"
    ctl = start_controller(home, db_url, store.as_uri())
    try:
        wait_for("jobs a and b under way", lambda: job_points(engine, "a") >= 2 * 10, 90, [ctl])
        _fill(small_disk)
        full_at = time.monotonic()
        before = _snapshot(store)
        wait_for("the campaign", lambda: campaign_final(engine, cid), 120, [ctl])
        failed_after_s = time.monotonic() - full_at
        assert ctl.poll() is None
    finally:
        stop_process(ctl)
        kill_workers(home)
    after = _snapshot(store)
    changed = {k for k in before if after.get(k) != before[k]}
    assert not changed, f"stored objects lost or changed on the full disk: {sorted(changed)[:10]}"
    result = audit(engine, cid, STEPS)
    assert result["status"] == "FAILED", result
    assert result["jobs"] == {"a": "FAILED", "b": "FAILED", "c": "CANCELLED"}, result
    for name in ("a", "b"):
        assert "No space left on device" in result["reasons"][name], result["reasons"]
    with Session(engine) as s:
        reasons = [a.failure_reason for a in s.exec(select(Attempt))]
    assert all("No space left on device" in r for r in reasons), reasons
    figures(
        "store disk full (for good)",
        failed_after_s=round(failed_after_s, 1),
        objects_before=len(before),
        objects_kept=len(before) - len(changed),
        **result,
    )
    engine.dispose()


def test_space_returns_and_a_retry_resumes_from_the_checkpoints(small_disk, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'nsbi.db'}"
    engine = init_db(create_engine(db_url))
    store = small_disk / "store"
    store.mkdir()
    steps = {"a": STEPS["a"], "b": STEPS["b"]}
    cid = make_campaign(
        engine,
        [JobDef(n, {"steps": k, "step_s": 0.1, "checkpoint_every": 5}) for n, k in steps.items()],
    )
    home = tmp_path / "home"
    ctl = start_controller(home, db_url, store.as_uri())
    try:
        wait_for("jobs a and b under way", lambda: job_points(engine, "a") >= 2 * 10, 90, [ctl])
        filler = _fill(small_disk)
        before = _snapshot(store)
        wait_for("the campaign failed", lambda: campaign_final(engine, cid), 120, [ctl])
        first = audit(engine, cid, steps)  # failed cleanly, nothing lost so far
        filler.unlink()  # space returns; the user retries the failed jobs
        freed = time.monotonic()
        assert request_retry(cid, engine=engine) == 2
        wait_for("the campaign again", lambda: campaign_final(engine, cid), 120, [ctl])
        done_s = time.monotonic() - freed
    finally:
        stop_process(ctl)
        kill_workers(home)
    after = _snapshot(store)
    # checkpoints rotate (each attempt keeps its newest two), every other object stays
    changed = {k for k in before if after.get(k) != before[k] and "/checkpoints/" not in k}
    assert not changed, sorted(changed)[:10]
    assert first["status"] == "FAILED", first
    result = audit(engine, cid, steps)
    assert result["status"] == "SUCCEEDED", result
    with Session(engine) as s:  # the retries resumed from the checkpoints, not from step 0
        done = s.exec(
            select(Job.uri, Attempt.attempt_no)
            .join(Attempt, Attempt.job_id == Job.id)
            .where(Attempt.status == JobStatus.SUCCEEDED)
        ).all()
    resumed, newest = {}, {}
    for uri, n in done:
        js, name = open_store(uri), uri.rsplit("/", 1)[-1]
        resumed[name] = get_json(js, layout.result_key(n))["summary"]["resumed_from"]
        earlier = [
            st for k in range(1, n) for st, _ in list_segments(js, layout.checkpoints_prefix(k))
        ]
        newest[name] = max(earlier, default=None)
    assert resumed == newest and resumed["a-1"] >= 10, (resumed, newest)
    figures(
        "store disk full, space back, user retry",
        failed_first=first["reasons"],
        completed_after_retry_s=round(done_s, 1),
        resumed_from=resumed,
        **result,
    )
    engine.dispose()
