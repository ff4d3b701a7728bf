"""Clocks disagree: two `nsbi controller` processes share a PostgreSQL database (a cluster of
this test's own), one with its wall clock 2 h behind, the other 2 h ahead (libfaketime:
LD_PRELOAD + FAKETIME), while the workers and the database run on the true time. So the
leader is 2 h off its workers and the database, and the two controllers are 4 h apart.

What must hold, and what would break with the wrong clock:

- heartbeats: the controller times a worker's heartbeat by its own clock when it first sees
  the segment (`backend.ingest`), never by the worker's timestamp, so with a 10 s heartbeat
  timeout no attempt is failed for a "lost heartbeat" (judged by the worker's clock, every
  beat would be 2 h old);
- the lease: expiry is the database's time (`backend.leader`), so the standby that runs 2 h
  ahead never takes a live leader's lease (the fencing token stays 1 while the leader
  lives), and once the leader is killed (SIGKILL) it takes over within TTL + renew, adopts
  the running workers and finishes the campaign.

Skipped when libfaketime (Debian package `faketime`) is not installed.

    pytest tests/faults/test_clock_skew.py -s
"""

from __future__ import annotations

import glob
import signal
import time

import pytest
from fault_kit import (
    attempt_row,
    audit,
    campaign_final,
    figures,
    job_points,
    kill_workers,
    lease_row,
    log_count,
    start_controller,
    stop_process,
    unavailable,
    wait_for,
)
from nsbi_ctl_testkit import JobDef, make_campaign
from sqlmodel import Session, select

from backend.db import create_engine, init_db
from backend.db.models import Job
from backend.stores import layout, open_store
from backend.stores.base import get_json, list_segments

STEPS = {"a": 60, "b": 60, "c": 10}
SKEW_S = 2 * 3600
LEASE = {"NSBI_CONTROLLER_LEASE_TTL_S": "3", "NSBI_CONTROLLER_LEASE_RENEW_S": "1"}
HEARTBEAT_TIMEOUT_S = 10.0  # any timeout under the 2 h skew shows a misjudged beat


pytestmark = pytest.mark.slow  # about 20-30 s on the 2-core machine


def _libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        unavailable("libfaketime is not installed (apt-get install faketime)")
    return found[0]


def _skewed(lib: str, offset: str) -> dict[str, str]:
    # the wall clock only: the monotonic clock (timeouts, the lease's local validity) stays
    return {"LD_PRELOAD": lib, "FAKETIME": offset, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def test_controllers_and_workers_with_clocks_hours_apart(pg_cluster, tmp_path):
    lib = _libfaketime()
    engine = init_db(create_engine(pg_cluster.url))
    store = tmp_path / "store"
    store.mkdir()
    cid = make_campaign(
        engine,
        [
            JobDef("a", {"steps": STEPS["a"], "step_s": 0.1}),
            JobDef("b", {"steps": STEPS["b"], "step_s": 0.1}),
            JobDef("c", {"steps": STEPS["c"], "step_s": 0.1}, deps=("a", "b")),
        ],
    )
    behind, ahead = tmp_path / "behind", tmp_path / "ahead"
    common = dict(heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S)
    leader = start_controller(
        behind, pg_cluster.url, store.as_uri(), env={**LEASE, **_skewed(lib, "-2h")}, **common
    )
    procs = [leader]
    try:
        holder, token = wait_for("a leader", lambda: (r := lease_row(engine)) and r[0] and r, 60)
        assert f":{leader.pid}:" in holder
        standby = start_controller(
            ahead, pg_cluster.url, store.as_uri(), env={**LEASE, **_skewed(lib, "+2h")}, **common
        )
        procs.append(standby)
        wait_for("the standby", lambda: log_count(ahead, "standby:") > 0, 60, procs)
        # the leader's view of a worker's heartbeat is its own (2 h slow) clock
        wait_for("jobs a and b under way", lambda: job_points(engine, "a") >= 2 * 25, 90, procs)
        seen_by_leader = attempt_row(engine, "a", 1).last_heartbeat
        for _ in range(20):  # 2 s: the standby, 4 h ahead, must not take a live lease
            assert lease_row(engine) == (holder, token)
            time.sleep(0.1)
        leader.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        leader.wait()
        procs.remove(leader)
        new_holder, new_token = wait_for(
            "the standby to take over",
            lambda: (r := lease_row(engine)) and r[0] != holder and r[0] is not None and r,
            30,
            procs,
        )
        handover_s = time.monotonic() - killed
        wait_for("the campaign", lambda: campaign_final(engine, cid), 120, procs)
        seen_by_new_leader = attempt_row(engine, "c", 1).last_heartbeat
    finally:
        for p in procs:
            stop_process(p)
        kill_workers(behind)
        kill_workers(ahead)
    assert f":{standby.pid}:" in new_holder and new_token == token + 1
    assert handover_s < 3 + 1 + 5  # TTL + renew, and some slack for a loaded machine
    result = audit(engine, cid, STEPS)
    # no attempt failed for a "lost heartbeat": one attempt per job, the workers adopted
    assert result["status"] == "SUCCEEDED" and set(result["attempts"].values()) == {1}, result
    # the skew was real: workers stamp true time, each controller its own
    with Session(engine) as s:
        uris = dict(s.exec(select(Job.name, Job.uri)).all())
    worker_t = {
        name: get_json(js, list_segments(js, layout.heartbeat_prefix(1))[-1][1])["t"]
        for name, js in ((n, open_store(uris[n])) for n in ("a", "c"))
    }
    leader_skew = seen_by_leader.timestamp() - worker_t["a"]
    new_leader_skew = seen_by_new_leader.timestamp() - worker_t["c"]
    assert -SKEW_S - 120 < leader_skew < -SKEW_S + 120, leader_skew
    assert SKEW_S - 120 < new_leader_skew < SKEW_S + 120, new_leader_skew
    figures(
        "clock skew: controllers -2 h and +2 h, workers and database on true time",
        handover_s=round(handover_s, 1),
        leader_minus_worker_s=round(leader_skew),
        new_leader_minus_worker_s=round(new_leader_skew),
        **result,
    )
    engine.dispose()
