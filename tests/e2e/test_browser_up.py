"""The whole stack as a user meets it: `nsbi up`, a click on "Demo campaign", and the Monitor
page showing real workers training, with the loss curve growing without a reload.

Nothing is seeded: the controller launches real worker processes through the local launcher
and the dashboard reads what the controller ingests.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "dashboard"))

from dash_browser import chromium_page, free_port, screenshot, wait_healthy, wait_title  # noqa: E402
from test_dash_browser import LOSS_MAX_STEP_JS, _metric  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def _kill_workers(home: Path) -> None:
    """Workers run in their own process groups (so a job survives a controller restart);
    the test owns them, so it ends every process that works under its home."""
    for proc in psutil.process_iter(["cmdline"]):
        if str(home) in " ".join(proc.info["cmdline"] or []):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _campaign_count(home: Path) -> int:
    import sqlite3

    db = home / "nsbi.db"
    if not db.is_file():
        return 0
    with sqlite3.connect(db) as conn:
        try:
            return conn.execute("select count(*) from campaign").fetchone()[0]
        except sqlite3.OperationalError:  # schema not there yet
            return 0


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def test_demo_campaign_from_the_browser_trains_live(tmp_path):
    home = tmp_path / "var"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NSBI_STORE")}
    env.update(NSBI_HOME=str(home), BROWSER_PATH="/usr/bin/chromium")
    log = open(tmp_path / "up.log", "w")
    up = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "up", "--port", str(port), "--tick", "0.5"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, up, timeout_s=120)
        with chromium_page() as page:
            page.goto(base)
            wait_title(page)
            page.get_by_role("button", name="Demo campaign").click()
            _wait(lambda: _campaign_count(home) > 0, 60, "the demo campaign in the database")
            page.get_by_role("link", name="Monitor").click()
            wait_title(page)
            page.evaluate("() => { window.__noReload = 'same document'; }")

            # real workers: a job reaches RUNNING, then the loss curve appears and grows
            _wait(
                lambda: (
                    (_metric(page, "Running") or "0") not in ("0", None)
                    or (_metric(page, "Succeeded") or "0") not in ("0", None)
                ),
                180,
                "a running job",
            )
            _wait(lambda: page.evaluate(LOSS_MAX_STEP_JS) > 0, 240, "a loss curve")
            done = int(_metric(page, "Succeeded") or 0)
            _wait(
                lambda: int(_metric(page, "Succeeded") or 0) > done,
                240,
                "more jobs to succeed on screen",
            )
            assert page.evaluate("() => window.__noReload") == "same document"  # no reload happened
            screenshot(page, "up-demo-monitor-live", show=page.locator(".js-plotly-plot").first)
    finally:
        os.killpg(up.pid, signal.SIGINT)
        try:
            up.wait(timeout=30)
        finally:
            _kill_workers(home)
            log.close()
    assert up.returncode == 0, (tmp_path / "up.log").read_text()[-3000:]
