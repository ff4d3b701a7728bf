"""`nsbi up` (what `make run` starts): dashboard health, controller running, clean Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.read().decode()
    except OSError:
        return None


# exec'd with SIGINT ignored (kept across exec), as a background job of a shell without job
# control starts it; no preexec_fn: forking a process that runs JAX threads can deadlock
_EXEC_IGNORING_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


@pytest.mark.parametrize("sigint_ignored", [False, True], ids=["terminal", "background-job"])
def test_up_serves_dashboard_runs_controller_and_stops_on_ctrl_c(tmp_path, sigint_ignored):
    """Also when started with SIGINT ignored (a background job of a shell without job control
    inherits that): `nsbi up` must still stop cleanly, not report its controller's exit as a
    failure (exit 1 before the fix)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NSBI_STORE")}
    env["NSBI_HOME"] = str(tmp_path / "var")
    proc = subprocess.Popen(
        [
            *([sys.executable, "-c", _EXEC_IGNORING_SIGINT] if sigint_ignored else []),
            sys.executable,
            "-m",
            "backend.cli",
            "up",
            "--port",
            str(port),
            "--tick",
            "0.5",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        health = None
        while time.monotonic() < deadline and health != "ok":
            assert proc.poll() is None, proc.stdout.read()
            health = get(f"http://127.0.0.1:{port}/_stcore/health")
            time.sleep(0.5)
        assert health == "ok"
        assert (tmp_path / "var" / "nsbi.db").is_file()
        status = tmp_path / "var" / "controller.json"
        while time.monotonic() < deadline and not status.is_file():
            time.sleep(0.5)
        ticks = json.loads(status.read_text())["ticks"]
        assert ticks >= 1
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends to the group
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "stopping controller and dashboard" in out
    assert get(f"http://127.0.0.1:{port}/_stcore/health") is None
