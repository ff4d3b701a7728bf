"""Alembic, driven from code: no alembic.ini and no network needed.

`init_db(engine)` upgrades the database to the newest revision (creating it when fresh);
`nsbi db upgrade` calls the same function. The migration scripts live in
`backend/db/migrations/versions/` and ship inside the package.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from backend.db.engine import resolve_engine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(engine: Engine | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations (and at `engine`'s URL)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        cfg.set_main_option(
            "sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%")
        )
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - a broken install
        raise RuntimeError(f"no migrations in {MIGRATIONS_DIR}")
    return head


def current_revision(engine: Engine | None = None) -> str | None:
    with resolve_engine(engine).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


# pg_advisory_xact_lock key of schema upgrades: controllers started together migrate in turn
UPGRADE_LOCK_KEY = 0x6E736269  # "nsbi"


@contextmanager
def _upgrade_lock(engine: Engine, conn: sa.Connection) -> Iterator[None]:
    """One schema upgrade at a time per database, across processes: a PostgreSQL advisory lock
    held by the upgrade's transaction, or an flock beside a SQLite file (in-memory: nothing)."""
    if engine.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": UPGRADE_LOCK_KEY})
        yield
        return
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or "mode=memory" in str(engine.url):
        yield
        return
    with open(f"{database}.upgrade-lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def upgrade(engine: Engine | None = None, revision: str = "head") -> str | None:
    """Run the migrations up to `revision` on `engine`; returns the revision reached.

    Safe to call from several processes at once (controllers starting together): they take
    turns, and the later ones find the schema already at `revision`."""
    engine = resolve_engine(engine)
    cfg = alembic_config(engine)
    with engine.begin() as conn, _upgrade_lock(engine, conn):
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return current_revision(engine)


def init_db(engine: Engine | None = None) -> Engine:
    """Bring the database to the newest schema (idempotent) and return the engine."""
    engine = resolve_engine(engine)
    upgrade(engine)
    return engine
