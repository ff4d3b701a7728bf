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


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
WILDCARD_ADDRESSES = ("", "0.0.0.0", "::")


def _machine_hosts() -> list[str]:
    """This machine's names and interface addresses: how browsers on the network reach it."""
    import socket

    import psutil

    names = [socket.gethostname(), socket.getfqdn()]
    addresses = [
        a.address.split("%", 1)[0]  # an IPv6 link-local address carries its zone
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family in (socket.AF_INET, socket.AF_INET6)
    ]
    return [h for h in (*names, *addresses) if h]


def allowed_hosts(host: str, configured: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Streamlit's `server.allowedHosts`: the Host header values the dashboard accepts.

    A request whose Host is not listed gets no websocket, which is what stops DNS rebinding
    (a page on an attacker's domain that resolves to this server). The loopback names are
    always in (a rebinding page's Host is the attacker's name, never `localhost`);
    NSBI_DASHBOARD_ALLOWED_HOSTS (`configured`) adds the names users reach the dashboard by.
    Without it: the bind address, or when bound to all interfaces this machine's names and
    addresses.
    """
    hosts = list(LOOPBACK_HOSTS)
    bind = host.strip().strip("[]")
    if configured:
        hosts += configured
    elif bind in WILDCARD_ADDRESSES:
        hosts += _machine_hosts()
    else:
        hosts.append(bind)
    return list(dict.fromkeys(h.lower() for h in hosts if h))


def _dashboard_command(host: str, port: int, hosts: list[str] | None = None) -> list[str]:
    cmd = [
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
        # also in .streamlit/config.toml; repeated here so a stray config cannot turn them off
        "--server.enableXsrfProtection",
        "true",
        "--server.enableCORS",
        "true",
    ]
    for allowed in hosts if hosts is not None else allowed_hosts(host):
        cmd += ["--server.allowedHosts", allowed]
    return cmd


def masked_url(url: str) -> str:
    """A database URL fit for a log: the password replaced by ***."""
    if "@" not in url:  # no credentials in it: printed as given
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: mask whatever sits between : and @
        import re

        return re.sub(r"(//[^/:@]*:)[^/@]*@", r"\1***@", url)


# The controller and the workers it starts never need the dashboard's settings (its login).
DASHBOARD_ONLY_PREFIX = "NSBI_DASHBOARD_"


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
    print(f"nsbi up: database {masked_url(settings.database_url)}", flush=True)
    (settings.home / "store").mkdir(parents=True, exist_ok=True)
    init_db(get_engine(settings.database_url)).dispose()
    env = dict(
        os.environ,
        NSBI_HOME=str(settings.home),
        DATABASE_URL=settings.database_url,
        NSBI_STORE=settings.store_uri,
    )
    controller_env = {k: v for k, v in env.items() if not k.startswith(DASHBOARD_ONLY_PREFIX)}
    hosts = allowed_hosts(args.host, settings.dashboard.allowed_hosts)
    print(f"nsbi up: artifact store {masked_url(settings.store_uri)}", flush=True)
    print(f"nsbi up: dashboard answers to host names {', '.join(hosts)}", flush=True)

    procs: list[subprocess.Popen] = []
    if not args.no_controller:
        procs.append(subprocess.Popen(_controller_command(args.tick), env=controller_env))
    app = _app_path()
    procs.append(
        subprocess.Popen(_dashboard_command(args.host, args.port, hosts), env=env, cwd=app.parent)
    )
    print(
        f"nsbi up: dashboard at http://{args.host}:{args.port}  (Ctrl-C stops everything)",
        flush=True,
    )

    def _on_term(signum, frame):  # SIGTERM behaves like Ctrl-C
        raise KeyboardInterrupt

    # SIGINT too, explicitly: a process started in the background of a shell without job
    # control (or under nohup-like wrappers) inherits SIGINT ignored, and Python then installs
    # no KeyboardInterrupt handler; the controller child handles it and would exit first.
    signal.signal(signal.SIGINT, _on_term)
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
