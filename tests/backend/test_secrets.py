"""Secrets stay where they belong (issue 16, finding 6).

* A local worker inherits an allow-listed environment: never the dashboard password, a
  database URL (workers have no database access) or anything named like a credential.
* `nsbi up` prints the database URL with its password masked, and its controller does not get
  the dashboard's password (read back from the real processes' /proc/<pid>/environ).
* `.streamlit/secrets.toml` is git-ignored and, with the other secrets, kept out of the image's
  build context by `.dockerignore`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

from backend.commands.up import masked_url
from backend.launchers import InstanceState, LaunchRequest
from backend.launchers.local import LocalLauncher, worker_environment

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "hunter2-dashboard-pw"
DB_PASSWORD = "hunter2-database-pw"

CONTROLLER_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/nsbi",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONPATH": "/opt/plugins",
    "NSBI_HOME": "/var/lib/nsbi",
    "NSBI_STORE": "gs://bucket/prefix",
    "NSBI_WORKER_INTERVAL_S": "0.5",
    "NSBI_JOB_KIND_MODULES": "plugins.kinds",
    "NSBI_GCS_PROJECT": "proj",
    "GOOGLE_APPLICATION_CREDENTIALS": "/etc/nsbi/sa.json",
    "STORAGE_EMULATOR_HOST": "http://127.0.0.1:9023",
    "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
    "JAX_PLATFORMS": "cpu",
    "CUDA_HOME": "/usr/local/cuda",
    # what must not reach a worker
    "NSBI_DASHBOARD_PASSWORD": PASSWORD,
    "NSBI_DASHBOARD_ALLOWED_HOSTS": "dash.example",
    "DATABASE_URL": f"postgresql+psycopg://nsbi:{DB_PASSWORD}@db:5432/nsbi",
    "PGPASSWORD": DB_PASSWORD,
    "GITHUB_TOKEN": "ghp_secret",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "OPENAI_API_KEY": "sk-secret",
    "NSBI_SOME_TOKEN": "tok",
    "SSH_AUTH_SOCK": "/tmp/ssh-agent.sock",
    "EDITOR": "vim",
}
KEPT = {
    k
    for k in CONTROLLER_ENV
    if k.startswith(("PATH", "HOME", "LANG", "LC_", "PYTHONPATH", "XLA_", "JAX_", "CUDA_"))
    or k in ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST")
    or (k.startswith("NSBI_") and not k.startswith("NSBI_DASHBOARD_") and "TOKEN" not in k)
}


def test_worker_environment_is_an_allow_list():
    env = worker_environment(CONTROLLER_ENV)
    assert set(env) == KEPT
    assert all(env[k] == CONTROLLER_ENV[k] for k in env)
    assert PASSWORD not in json.dumps(env) and DB_PASSWORD not in json.dumps(env)
    # names the operator lists (NSBI_LOCAL_PASS_ENV) are passed as asked
    assert worker_environment(CONTROLLER_ENV, ["EDITOR"])["EDITOR"] == "vim"


def _probe_launcher(tmp_path: Path, **kwargs) -> tuple[LocalLauncher, Path]:
    """A real local launcher whose "interpreter" writes the environment it was started with."""
    out = tmp_path / "worker-env.json"
    probe = tmp_path / "probe-python"
    probe.write_text(
        f"#!{sys.executable}\nimport json, os\n"
        f"json.dump(dict(os.environ), open({str(out)!r}, 'w'))\n"
    )
    probe.chmod(0o755)
    return LocalLauncher(tmp_path / "var", gpus=[], python=str(probe), **kwargs), out


def _run(launcher: LocalLauncher, out: Path, request: LaunchRequest) -> dict[str, str]:
    launcher.launch(request)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = launcher.poll(request.instance_id)[request.instance_id]
        if status.state is InstanceState.EXITED:
            assert status.exit_code == 0, launcher.log_path(request.instance_id).read_text()
            return json.loads(out.read_text())
        time.sleep(0.05)
    raise AssertionError("the probe worker did not exit")


def test_a_local_worker_does_not_inherit_the_controllers_secrets(tmp_path, monkeypatch):
    """Reproduces the finding: before, the worker got os.environ whole (the password too)."""
    for name, value in CONTROLLER_ENV.items():
        if name not in ("PATH", "HOME"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("NSBI_LOCAL_PASS_ENV", "EDITOR")
    launcher, out = _probe_launcher(tmp_path, extra_env={"NSBI_WORKER_INTERVAL_S": "0.2"})
    env = _run(
        launcher, out, LaunchRequest("c", "j", 1, "file:///x", env={"ASKED_FOR": "yes-secret"})
    )
    text = json.dumps(env)
    assert PASSWORD not in text and DB_PASSWORD not in text
    for name in (
        "NSBI_DASHBOARD_PASSWORD",
        "NSBI_DASHBOARD_ALLOWED_HOSTS",
        "DATABASE_URL",
        "PGPASSWORD",
        "GITHUB_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "OPENAI_API_KEY",
        "NSBI_SOME_TOKEN",
        "SSH_AUTH_SOCK",
    ):
        assert name not in env, name
    # what a worker needs is still there
    assert env["PATH"] == os.environ["PATH"] and env["NSBI_STORE"] == "gs://bucket/prefix"
    assert env["XLA_FLAGS"] == CONTROLLER_ENV["XLA_FLAGS"] and env["JAX_PLATFORMS"] == "cpu"
    assert env["GOOGLE_APPLICATION_CREDENTIALS"] == "/etc/nsbi/sa.json"
    assert env["NSBI_WORKER_INTERVAL_S"] == "0.2"  # extra_env wins over the inherited value
    assert env["NSBI_INSTANCE_ID"] == "c-j-1" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["ASKED_FOR"] == "yes-secret"  # the controller's explicit request env goes through
    assert env["EDITOR"] == "vim"  # NSBI_LOCAL_PASS_ENV
    assert env["JAX_COMPILATION_CACHE_DIR"].endswith("jax-cache")


def test_the_noop_worker_still_runs_with_the_allow_listed_environment(tmp_path, monkeypatch):
    """The real worker (test job kind via NSBI_JOB_KIND_MODULES + PYTHONPATH) runs to the end."""
    from backend.stores import layout, open_store, put_json

    monkeypatch.setenv("NSBI_DASHBOARD_PASSWORD", PASSWORD)
    store = open_store((tmp_path / "store").as_uri(), create=True)
    prefix = layout.job_prefix("c", "j")
    put_json(store.child(prefix), layout.SPEC, {"kind": "noop", "params": {"steps": 2}})
    launcher = LocalLauncher(tmp_path / "var", gpus=[], extra_env={"NSBI_WORKER_INTERVAL_S": "0.2"})
    req = LaunchRequest("c", "j", 1, store.uri_for(prefix))
    launcher.launch(req)
    deadline = time.monotonic() + 60
    while (st := launcher.poll(req.instance_id)[req.instance_id]).state.is_alive():
        assert time.monotonic() < deadline, "worker still running"
        time.sleep(0.1)
    assert (st.state, st.exit_code) == (InstanceState.EXITED, 0), launcher.log_path(
        req.instance_id
    ).read_text()


# ----------------------------------------------------------------------------- nsbi up


def test_masked_url():
    assert masked_url("postgresql+psycopg://nsbi:s3cr%40t@db:5432/nsbi") == (
        "postgresql+psycopg://nsbi:***@db:5432/nsbi"
    )
    assert masked_url("sqlite:////var/lib/nsbi/nsbi.db") == "sqlite:////var/lib/nsbi/nsbi.db"
    assert masked_url("file:///var/lib/nsbi/store") == "file:///var/lib/nsbi/store"
    assert "pw" not in masked_url("not a url://user:pw@host")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _up(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    full = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NSBI_STORE")}
    full.update(NSBI_HOME=str(tmp_path / "var"), **env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", "up", "--port", str(port), *args],
        cwd=ROOT,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    return proc, port


def _wait_healthy(proc: subprocess.Popen, port: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.read() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError("nsbi up: the dashboard never became healthy")


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    return out


@pytest.mark.slow
def test_up_masks_the_database_password_even_when_the_database_is_unreachable(tmp_path):
    url = f"postgresql+psycopg://nsbi:{DB_PASSWORD}@127.0.0.1:9/nsbi"
    proc, _ = _up(tmp_path, "--no-controller", DATABASE_URL=url)
    out, _ = proc.communicate(timeout=60)  # it stops by itself: no database to upgrade
    assert proc.returncode != 0
    assert "nsbi up: database postgresql+psycopg://nsbi:***@127.0.0.1:9/nsbi" in out, out
    assert DB_PASSWORD not in out


PG_ADMIN_URL = (
    os.environ.get("NSBI_TEST_PG_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.mark.slow
@pytest.mark.postgres
def test_up_prints_the_database_url_with_its_password_masked(tmp_path):
    """Reproduces the finding on a real PostgreSQL: `nsbi up` used to print the URL as given."""
    admin = sa.create_engine(
        PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        with admin.connect() as c:
            c.execute(sa.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable here"
        pytest.skip(f"PostgreSQL not reachable ({type(exc).__name__})")
    name = f"nsbi_secrets_{uuid.uuid4().hex[:10]}"
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        base = sa.engine.make_url(PG_ADMIN_URL)
        # the local server trusts loopback connections, so any password gets in
        url = base.set(password=DB_PASSWORD, database=name).render_as_string(hide_password=False)
        proc, port = _up(tmp_path, "--no-controller", DATABASE_URL=url)
        try:
            _wait_healthy(proc, port)
        finally:
            out = _stop(proc)
        masked = f"{base.drivername}://{base.username}:***@{base.host}:{base.port}/{name}"
        assert f"nsbi up: database {masked}" in out, out
        assert DB_PASSWORD not in out
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.slow
def test_up_gives_the_dashboard_password_to_the_dashboard_only(tmp_path):
    proc, port = _up(tmp_path, "--tick", "0.5", NSBI_DASHBOARD_PASSWORD=PASSWORD)
    try:
        _wait_healthy(proc, port)
        children = psutil.Process(proc.pid).children()
        by_role = {}
        for child in children:
            cmd = " ".join(child.cmdline())
            role = (
                "controller" if "controller" in cmd else "dashboard" if "streamlit" in cmd else "?"
            )
            by_role[role] = child.environ()
        assert set(by_role) == {"controller", "dashboard"}, by_role.keys()
        assert "NSBI_DASHBOARD_PASSWORD" not in by_role["controller"]
        assert PASSWORD not in json.dumps(by_role["controller"])
        assert by_role["dashboard"]["NSBI_DASHBOARD_PASSWORD"] == PASSWORD
    finally:
        out = _stop(proc)
    assert PASSWORD not in out


# ----------------------------------------------------------------------------- ignore files


def test_streamlit_secrets_are_git_ignored():
    for path in (".streamlit/secrets.toml", ".env", ".env.local"):
        done = subprocess.run(
            ["git", "check-ignore", "-q", "--no-index", path], cwd=ROOT, capture_output=True
        )
        assert done.returncode == 0, f"{path} is not git-ignored"
    done = subprocess.run(
        ["git", "check-ignore", "-q", "--no-index", ".streamlit/config.toml"], cwd=ROOT
    )
    assert done.returncode == 1, ".streamlit/config.toml must stay tracked"


def _dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent folder
    matches everything under it; `*` stays inside one path element, `**` crosses them."""

    def regex(pattern: str) -> re.Pattern[str]:
        out = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return re.compile(out + r"\Z")

    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.lstrip("!").strip("/")
        if any(regex(pattern).match(p) for p in prefixes):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    for path in (
        ".streamlit/secrets.toml",
        ".env",
        ".env.production",
        "deploy/.env",
        ".venv/bin/python",
        ".git/config",
        "var/nsbi.db",
        "tests/dashboard/test_security.py",
        "backend/__pycache__/settings.cpython-311.pyc",
        "examples/root-samples/s.root",
        "keys/id_ed25519",
        "server.pem",
    ):
        assert _dockerignore_excludes(patterns, path), f"{path} would be in the image"
    # everything the Dockerfile copies is still there
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = re.findall(r"^COPY\s+(.+?)\s+\S+$", dockerfile, flags=re.M)
    sources = [s for line in copied for s in line.split()]
    assert ".streamlit/config.toml" in sources and "app.py" in sources
    assert ".streamlit" not in sources  # never the whole folder (secrets.toml lives there)
    for path in (
        *sources,
        ".streamlit/config.toml",
        "backend/data/prices.toml",
        "sbi_engine/schemas/workspace.schema.json",
        "dashboard/pages/campaigns.py",
    ):
        assert not _dockerignore_excludes(patterns, path), f"{path} is needed by the image"


def test_the_new_settings_parse(tmp_path):
    from backend.settings import Settings

    s = Settings.from_env(
        {
            "NSBI_HOME": str(tmp_path),
            "NSBI_LOCAL_PASS_ENV": " WANDB_MODE, ,HF_HOME ",
            "NSBI_DASHBOARD_ALLOWED_HOSTS": "dash.example.org, *.lab.example",
            "NSBI_ANALYSIS_DIR": str(tmp_path / "a" / ".." / "analyses-here"),
        }
    )
    assert s.local.pass_env == ("WANDB_MODE", "HF_HOME")
    assert s.dashboard.allowed_hosts == ("dash.example.org", "*.lab.example")
    assert s.analysis_dir == tmp_path / "analyses-here"
    plain = Settings.from_env({"NSBI_HOME": str(tmp_path)})
    assert (plain.local.pass_env, plain.dashboard.allowed_hosts) == ((), ())
    assert plain.dashboard.analysis_dir is None and plain.analysis_dir == tmp_path / "analyses"
