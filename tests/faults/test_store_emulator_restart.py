"""The object store goes away mid-campaign: the Cloud Storage emulator (gcp-storage-emulator,
the GCS store of these tests) is killed while two workers write heartbeats, metric segments
and checkpoints into it, stays down for 8 s, and is started again on the same port with the
same data folder (its on-disk mode, with files written crash-safe by `emulator_main.py`,
keeps every object it acknowledged).

Workers and the controller retry store calls with backoff (`backend.stores.gcs`, up to
NSBI_GCS_RETRY_DEADLINE_S), so both wait the outage out: the campaign succeeds with one
attempt per job, and every metric point written before, during (held back, then sent) and
after the outage is in the database.

    pytest tests/faults/test_store_emulator_restart.py -s
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from fault_kit import (
    REPO,
    audit,
    campaign_final,
    figures,
    free_port,
    job_points,
    kill_workers,
    metric_count,
    start_controller,
    stop_process,
    wait_for,
)
from nsbi_ctl_testkit import JobDef, make_campaign

from backend.db import create_engine, init_db

EMULATOR_MAIN = Path(__file__).with_name("emulator_main.py")  # crash-safe files, see there
STEPS = {"a": 40, "b": 40, "c": 10}
OUTAGE_S = 8.0


pytestmark = pytest.mark.slow  # about 20-30 s on the 2-core machine


class Emulator:
    """gcp-storage-emulator as its own process, objects kept on disk in ``data``."""

    def __init__(self, data, port: int, log) -> None:
        self.data, self.port, self.log = data, port, log
        self.proc: subprocess.Popen | None = None
        self.host = f"http://127.0.0.1:{port}"

    def start(self) -> None:
        cmd = [sys.executable, str(EMULATOR_MAIN), "--data-dir", str(self.data)]
        cmd += ["start", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--default-bucket", "b", "--quiet"]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for("the emulator", self._answers, 30)

    def _answers(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.host}/storage/v1/b/b", timeout=1):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)


def test_storage_emulator_stopped_and_restarted_mid_campaign(tmp_path, monkeypatch):
    port = free_port()
    log = open(tmp_path / "emulator.log", "ab")  # noqa: SIM115 - closed below
    emulator = Emulator(tmp_path / "gcs-data", port, log)
    emulator.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.host)  # for the audit's reads
    store_uri = f"gs://b/faults-{uuid.uuid4().hex[:8]}"
    db_url = f"sqlite:///{tmp_path / 'nsbi.db'}"
    engine = init_db(create_engine(db_url))
    cid = make_campaign(
        engine,
        [
            JobDef(name, {"steps": STEPS[name], "step_s": 0.1, "checkpoint_every": 5}, deps=deps)
            for name, deps in (("a", ()), ("b", ()), ("c", ("a", "b")))
        ],
    )
    home = tmp_path / "home"
    ctl = start_controller(
        home,
        db_url,
        store_uri,
        env={"STORAGE_EMULATOR_HOST": emulator.host, "NSBI_WORKER_INTERVAL_S": "0.5"},
    )
    try:
        wait_for("jobs a and b under way", lambda: job_points(engine, "a") >= 2 * 10, 90, [ctl])
        emulator.kill()
        down_at = time.monotonic()
        time.sleep(OUTAGE_S)
        seen = metric_count(engine)
        emulator.start()
        back = time.monotonic()
        wait_for("new points after the outage", lambda: metric_count(engine) > seen, 60, [ctl])
        recovery_s = time.monotonic() - back
        wait_for("the campaign", lambda: campaign_final(engine, cid), 120, [ctl])
        assert ctl.poll() is None
    finally:
        stop_process(ctl)
        kill_workers(home)
    try:
        result = audit(engine, cid, STEPS)
    finally:
        emulator.kill()
        log.close()
    assert result["status"] == "SUCCEEDED" and set(result["attempts"].values()) == {1}, result
    figures(
        "storage emulator killed, restarted after 8 s",
        outage_s=round(back - down_at, 1),
        recovery_s=round(recovery_s, 1),
        **result,
    )
    engine.dispose()
