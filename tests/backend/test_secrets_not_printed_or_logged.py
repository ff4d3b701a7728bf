"""The database password is never printed or logged (issue 16, finding 6: "secrets never
printed or logged").

`nsbi up` masking its URL is checked in test_secrets.py. Here the other commands that open the
database print or log nothing of the password either: `nsbi db upgrade` / `db current`,
`nsbi controller` at INFO level running a real campaign with real local workers (its log,
the workers' logs, controller.json and everything else it writes under NSBI_HOME and in the
store), `nsbi jobs` and `nsbi cost`; and the same commands against an unreachable server,
whose connection errors must not quote the URL.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from nsbi_ctl_testkit import (
    FAST_ENV,
    JobDef,
    campaign_status,
    fresh_postgres_url,
    make_campaign,
    postgres_available,
)

from backend.db import create_engine
from backend.states import CampaignStatus
from nsbi_testing import unavailable, worker_env

REPO = Path(__file__).resolve().parents[2]
DB_PASSWORD = "hunter2-db-Pw-3141"


def _nsbi(args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "backend.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    return done.returncode, done.stdout


def _env(tmp_path: Path, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "DATABASE_URL")}
    env.update(
        FAST_ENV,
        **worker_env(),
        NSBI_HOME=str(tmp_path / "home"),
        NSBI_STORE=(tmp_path / "store").as_uri(),
        DATABASE_URL=url,
    )
    return env


def _files_holding(folder: Path, secret: str) -> list[str]:
    return [
        str(p)
        for p in folder.rglob("*")
        if p.is_file() and secret.encode() in p.read_bytes()  # logs, JSON, SQLite, ...
    ]


@pytest.mark.postgres
def test_commands_and_a_running_controller_never_show_the_database_password(tmp_path):
    if not postgres_available():
        unavailable(
            "PostgreSQL on 127.0.0.1:5432 is not reachable", in_ci_because=".ci/run starts it"
        )
    (tmp_path / "store").mkdir()
    with fresh_postgres_url() as plain:
        # the local server trusts loopback connections: any password gets in
        url = sa.engine.make_url(plain).set(password=DB_PASSWORD)
        url_text = url.render_as_string(hide_password=False)
        assert DB_PASSWORD in url_text
        env = _env(tmp_path, url_text)
        outputs = {}
        for args in (["db", "upgrade"], ["db", "current"]):
            code, out = _nsbi(args, env)
            assert code == 0, out
            assert "postgres:***@127.0.0.1" in out, out  # it does name the database, masked
            outputs[" ".join(args)] = out
        engine = create_engine(url_text)
        try:
            cid = make_campaign(
                engine, [JobDef("a", {"steps": 3}), JobDef("b", {"steps": 3}, deps=("a",))]
            )
            code, out = _nsbi(["controller", "--until-idle", "--interval", "0.2"], env, 180)
            assert code == 0, out
            assert "leader: this controller" in out  # INFO logging was on
            outputs["controller"] = out
            assert campaign_status(engine, cid) == CampaignStatus.SUCCEEDED
        finally:
            engine.dispose()
        for args in (["jobs"], ["cost"], ["campaign", "status", str(cid)]):
            code, out = _nsbi(args, env)
            assert code == 0, out
            outputs[" ".join(args)] = out
    for what, out in outputs.items():
        assert DB_PASSWORD not in out, f"nsbi {what} printed the password:\n{out}"
    # workers ran and logged (their logs live under NSBI_HOME); none holds the password
    assert list((tmp_path / "home").rglob("*.log")), "no worker log was written"
    assert _files_holding(tmp_path / "home", DB_PASSWORD) == []
    assert _files_holding(tmp_path / "store", DB_PASSWORD) == []


def test_connection_errors_do_not_quote_the_url(tmp_path):
    """An unreachable server (port 9): every command fails, none prints the password."""
    url = f"postgresql+psycopg://nsbi:{DB_PASSWORD}@127.0.0.1:9/nsbi"
    (tmp_path / "store").mkdir()
    env = _env(tmp_path, url)
    for args in (["db", "upgrade"], ["controller", "--once"], ["jobs"]):
        code, out = _nsbi(args, env, 60)
        assert code != 0, out
        assert "127.0.0.1" in out, out  # the connection error says where it tried
        assert DB_PASSWORD not in out, f"nsbi {' '.join(args)}:\n{out}"
