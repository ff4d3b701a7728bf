"""Fixtures for the analysis tests: a control-plane home (SQLite + local store) per module."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # for `import analysis_testkit`


@pytest.fixture(scope="module")
def analysis_home(tmp_path_factory):
    """NSBI_HOME, DATABASE_URL and NSBI_STORE in a fresh folder, shared by one test module."""
    from backend.db import dispose_engines, get_engine, init_db

    home = tmp_path_factory.mktemp("analysis-home")
    (home / "store").mkdir()
    url = f"sqlite:///{home / 'nsbi.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NSBI_HOME", str(home))
        mp.setenv("DATABASE_URL", url)
        mp.setenv("NSBI_STORE", f"file://{home / 'store'}")
        mp.setenv("NSBI_LOCAL_GRACE_S", "5")
        init_db(get_engine(url))
        yield home
        dispose_engines()


@pytest.fixture(scope="module")
def pg_engine_module():
    """The real PostgreSQL (NSBI_TEST_PG_URL, default the local `test` database) in a schema
    of its own for this module; skipped with the reason when the server is unreachable."""
    import os
    import uuid

    import sqlalchemy as sa

    from backend.db import create_engine, init_db

    url = os.environ.get("NSBI_TEST_PG_URL") or "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    admin = create_engine(url)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable here"
        admin.dispose()
        pytest.skip(f"PostgreSQL not reachable ({type(exc).__name__}: {str(exc).splitlines()[0]})")
    schema = f"nsbi_analysis_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with admin.begin() as conn:
        conn.execute(sa.schema.CreateSchema(schema))
    engine = init_db(create_engine(url, connect_args={"options": f"-csearch_path={schema}"}))
    yield engine
    engine.dispose()
    with admin.begin() as conn:
        conn.execute(sa.schema.DropSchema(schema, cascade=True))
    admin.dispose()
