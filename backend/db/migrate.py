"""Alembic, driven from code: no alembic.ini and no network needed.

`init_db(engine)` upgrades the database to the newest revision (creating it when fresh);
`nsbi db upgrade` calls the same function. The migration scripts live in
`backend/db/migrations/versions/` and ship inside the package.
"""

from __future__ import annotations

from pathlib import Path

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


def upgrade(engine: Engine | None = None, revision: str = "head") -> str | None:
    """Run the migrations up to `revision` on `engine`; returns the revision reached."""
    engine = resolve_engine(engine)
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return current_revision(engine)


def init_db(engine: Engine | None = None) -> Engine:
    """Bring the database to the newest schema (idempotent) and return the engine."""
    engine = resolve_engine(engine)
    upgrade(engine)
    return engine
