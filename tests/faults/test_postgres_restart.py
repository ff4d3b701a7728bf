"""PostgreSQL goes away mid-campaign: `pg_ctl restart -m fast` (every connection dropped, open
transactions aborted), then `pg_ctl stop -m fast` for 10 s (longer than the leader lease's
10 s TTL) and start again. The database is a cluster of this test's own on another loopback
port (`pg_cluster`), never the shared server on 5432.

Workers need no database, so they keep training through it; the controller's passes fail
while the server is down and must pick up where they stopped: the same controller keeps its
lease (same fencing token), ingests what the workers wrote meanwhile, launches the next job,
and the campaign succeeds with one attempt per job and no metric point lost.

    pytest tests/faults/test_postgres_restart.py -s
"""

from __future__ import annotations

import time

import pytest
from fault_kit import (
    audit,
    campaign_final,
    figures,
    job_points,
    kill_workers,
    lease_row,
    log_count,
    metric_count,
    start_controller,
    stop_process,
    wait_for,
)
from nsbi_ctl_testkit import JobDef, make_campaign

from backend.db import create_engine, init_db

STEPS = {"a": 60, "b": 60, "c": 20}
OUTAGE_S = 10.0


pytestmark = pytest.mark.slow  # about 20-30 s on the 2-core machine


def test_postgresql_restarted_and_stopped_mid_campaign(pg_cluster, tmp_path):
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
    home = tmp_path / "home"
    ctl = start_controller(home, pg_cluster.url, store.as_uri())
    try:
        holder, token = wait_for("a leader", lambda: (r := lease_row(engine)) and r[0] and r, 60)
        wait_for("jobs a and b under way", lambda: job_points(engine, "a") >= 2 * 10, 90, [ctl])
        # 1. a fast restart: connections dropped, open transactions aborted
        pg_cluster.restart()
        restarted = time.monotonic()
        seen = metric_count(engine)
        wait_for("new points after the restart", lambda: metric_count(engine) > seen, 30, [ctl])
        restart_recovery_s = time.monotonic() - restarted
        # 2. down for longer than the lease's TTL
        pg_cluster.stop()
        time.sleep(OUTAGE_S)
        pg_cluster.start()
        back = time.monotonic()
        seen = metric_count(engine)
        wait_for("new points after the outage", lambda: metric_count(engine) > seen, 60, [ctl])
        outage_recovery_s = time.monotonic() - back
        wait_for("the campaign", lambda: campaign_final(engine, cid), 120, [ctl])
        assert ctl.poll() is None  # the controller rode it out, it did not exit
        after = lease_row(engine)
    finally:
        stop_process(ctl)
        kill_workers(home)
    # the same controller led throughout: it renewed its own lease once the server was back
    assert after == (holder, token), (after, holder, token)
    result = audit(engine, cid, STEPS)
    assert result["status"] == "SUCCEEDED" and set(result["attempts"].values()) == {1}, result
    failed_passes = log_count(home, "failed: database error")
    figures(
        "PostgreSQL restarted, then stopped 10 s",
        restart_recovery_s=round(restart_recovery_s, 1),
        outage_recovery_s=round(outage_recovery_s, 1),
        failed_passes=failed_passes,
        **result,
    )
    engine.dispose()
