"""Engine factory and session helpers.

`get_engine()` builds one engine per URL (cached): SQLite in WAL mode with foreign keys on and
a busy timeout (the controller and the dashboard share the file), or PostgreSQL through psycopg 3
(`postgresql://` URLs are mapped to `postgresql+psycopg://`). Nothing is created at import time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import StaticPool
from sqlmodel import Session

from backend.settings import get_settings

_ENGINES: dict[str, Engine] = {}
_LOCK = threading.Lock()


def normalise_url(url: str) -> str:
    """Map bare PostgreSQL URLs onto the psycopg 3 driver that this project installs."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def create_engine(url: str, *, echo: bool = False, connect_args: dict | None = None) -> Engine:
    """A new engine for `url` (not cached): SQLite gets WAL, foreign keys and a busy timeout.

    connect_args go to the DB-API driver (e.g. {"options": "-csearch_path=s"} for psycopg).
    """
    url = normalise_url(url)
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        database = u.database or ""
        memory = database in ("", ":memory:") or "mode=memory" in url
        kwargs: dict = {
            "connect_args": {"check_same_thread": False, "timeout": 30, **(connect_args or {})}
        }
        if memory:
            kwargs["poolclass"] = StaticPool
        else:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, echo=echo, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_on_connect(memory))
        return engine
    return sa.create_engine(url, echo=echo, pool_pre_ping=True, connect_args=connect_args or {})


def _sqlite_on_connect(memory: bool):
    def on_connect(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        if not memory:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return on_connect


def get_engine(url: str | None = None) -> Engine:
    """The cached engine for `url` (default: `DATABASE_URL` from the settings)."""
    url = normalise_url(url or get_settings().database_url)
    with _LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            engine = _ENGINES[url] = create_engine(url)
        return engine


def dispose_engines() -> None:
    """Close every cached engine (tests, and processes that fork)."""
    with _LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()


def resolve_engine(engine: Engine | None) -> Engine:
    return engine if engine is not None else get_engine()


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception.

    Objects stay readable after the commit (expire_on_commit=False) so callers can copy
    values out; services still return plain dataclasses, not these rows.
    """
    session = Session(resolve_engine(engine), expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
