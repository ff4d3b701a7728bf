"""Database fixtures for the control-plane tests.

- `sqlite_engine`: a fresh in-memory SQLite (StaticPool), migrated to head.
- `sqlite_file_engine`: a fresh SQLite file in WAL mode under tmp_path, migrated to head.
- `pg_engine`: the real PostgreSQL on 127.0.0.1:5432, database `test` (override with
  NSBI_TEST_PG_URL), in a schema created for this test session and dropped afterwards; tables
  are emptied after each test. Skips with the connection error when the server is unreachable
  (fails instead when CI=true: .ci/run starts the server).
- `engine`: parametrised over both (the PostgreSQL case carries the `postgres` marker).
- `nsbi_home`: NSBI_HOME pointed at tmp_path and DATABASE_URL / NSBI_STORE cleared.
- `noop_kind` (autouse): workers started by a test, in process or as subprocesses, know the
  test-only "noop" job kind (`nsbi_testing.jobkinds`, via NSBI_JOB_KIND_MODULES and PYTHONPATH).
"""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from backend.db import create_engine, dispose_engines, init_db
from backend.db.models import SQLModel
from nsbi_testing import unavailable, worker_env

PG_URLS = (
    [os.environ["NSBI_TEST_PG_URL"]]
    if os.environ.get("NSBI_TEST_PG_URL")
    else [
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        "postgresql+psycopg://root@127.0.0.1:5432/test",
    ]
)


@pytest.fixture
def sqlite_engine():
    engine = init_db(create_engine("sqlite://"))
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_file_engine(tmp_path):
    engine = init_db(create_engine(f"sqlite:///{tmp_path / 'nsbi.db'}"))
    yield engine
    engine.dispose()


def _pg_url() -> tuple[str | None, str]:
    errors = []
    for url in PG_URLS:
        probe = create_engine(url)
        try:
            with probe.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return url, ""
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable here"
            errors.append(f"{url}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        finally:
            probe.dispose()
    return None, "; ".join(errors)


@pytest.fixture(scope="session")
def pg_session_engine():
    url, why = _pg_url()
    if url is None:
        unavailable(f"PostgreSQL not reachable ({why})", in_ci_because=".ci/run starts it")
    schema = f"nsbi_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.schema.CreateSchema(schema))
    engine = create_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    init_db(engine)
    yield engine
    engine.dispose()
    with admin.begin() as conn:
        conn.execute(sa.schema.DropSchema(schema, cascade=True))
    admin.dispose()


@pytest.fixture
def pg_engine(pg_session_engine):
    yield pg_session_engine
    tables = ", ".join(t.name for t in SQLModel.metadata.sorted_tables)
    with pg_session_engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE " + tables + " RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request):
    return request.getfixturevalue("sqlite_engine" if request.param == "sqlite" else "pg_engine")


@pytest.fixture
def nsbi_home(tmp_path, monkeypatch):
    monkeypatch.setenv("NSBI_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("NSBI_STORE", raising=False)
    dispose_engines()
    yield tmp_path / "home"
    dispose_engines()


@pytest.fixture(autouse=True)
def noop_kind(monkeypatch):
    for name, value in worker_env().items():
        monkeypatch.setenv(name, value)
