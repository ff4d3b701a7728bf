"""`nsbi up`: the whole local stack in one command (what `make run` starts).

Initialises the database (Alembic upgrade), then runs the controller and the Streamlit
dashboard as child processes. Ctrl-C (or SIGTERM) stops both and waits for them, so no
orphaned process keeps the port or the database busy.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

REPO_ROOT = Path(__file__).resolve().parents[2]


def _app_path() -> Path:
    """app.py from the source checkout, or from the working directory (installed image)."""
    for candidate in (REPO_ROOT / "app.py", Path.cwd() / "app.py"):
        if candidate.is_file():
            return candidate
    raise SystemExit("nsbi up: cannot find app.py (run from the project folder)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="dashboard bind address (default 127.0.0.1; any other address requires a login)",
    )
    parser.add_argument("--port", type=int, default=8501, help="dashboard port (default 8501)")
    parser.add_argument("--no-controller", action="store_true", help="start only the dashboard")
    parser.add_argument(
        "--tick", type=float, default=2.0, help="controller reconcile interval in seconds"
    )


def _dashboard_command(host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(_app_path()),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]


def _controller_command(tick: float) -> list[str]:
    return [sys.executable, "-m", "backend.cli", "controller", "--interval", str(tick)]


def _stop(procs: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(args: argparse.Namespace) -> int:
    from backend.db import get_engine, init_db
    from backend.settings import Settings

    settings = Settings.from_env()
    (settings.home / "store").mkdir(parents=True, exist_ok=True)
    init_db(get_engine(settings.database_url)).dispose()
    env = dict(
        os.environ,
        NSBI_HOME=str(settings.home),
        DATABASE_URL=settings.database_url,
        NSBI_STORE=settings.store_uri,
    )
    print(f"nsbi up: database {settings.database_url}", flush=True)
    print(f"nsbi up: artifact store {settings.store_uri}", flush=True)

    procs: list[subprocess.Popen] = []
    if not args.no_controller:
        procs.append(subprocess.Popen(_controller_command(args.tick), env=env))
    app = _app_path()
    procs.append(
        subprocess.Popen(_dashboard_command(args.host, args.port), env=env, cwd=app.parent)
    )
    print(
        f"nsbi up: dashboard at http://{args.host}:{args.port}  (Ctrl-C stops everything)",
        flush=True,
    )

    def _on_term(signum, frame):  # SIGTERM behaves like Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_term)
    try:
        while True:
            for proc in procs:
                code = proc.poll()
                if code is not None:
                    argv = cast(
                        list[str], proc.args
                    )  # every process here is started from an argv list
                    print(
                        f"nsbi up: {argv[2:4]} exited with code {code}; stopping", file=sys.stderr
                    )
                    _stop(procs)
                    return code or 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nnsbi up: stopping controller and dashboard ...", flush=True)
        _stop(procs)
        return 0
