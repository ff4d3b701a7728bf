"""Engine factory, migrations and the table constraints, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel, select

from backend.db import (
    Attempt,
    Campaign,
    Job,
    MetricPoint,
    create_engine,
    get_engine,
    init_db,
    session_scope,
)
from backend.db.engine import normalise_url
from backend.db.migrate import current_revision, head_revision
from backend.settings import Settings


def test_settings_defaults_and_overrides(tmp_path):
    s = Settings.from_env({"NSBI_HOME": str(tmp_path)})
    assert s.home == tmp_path
    assert s.database_url == f"sqlite:///{tmp_path / 'nsbi.db'}"
    assert s.store_uri == f"file://{tmp_path / 'store'}"
    s = Settings.from_env(
        {
            "NSBI_HOME": str(tmp_path),
            "DATABASE_URL": "postgresql://u@h/db",
            "NSBI_STORE": "gs://b/p",
        }
    )
    assert (s.database_url, s.store_uri) == ("postgresql://u@h/db", "gs://b/p")


def test_postgres_urls_use_psycopg3():
    assert normalise_url("postgresql://u@h:5432/db").startswith("postgresql+psycopg://")
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"


def test_fresh_sqlite_file_is_wal_and_at_head(sqlite_file_engine):
    with sqlite_file_engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert current_revision(sqlite_file_engine) == head_revision()
    init_db(sqlite_file_engine)  # idempotent
    assert current_revision(sqlite_file_engine) == head_revision()


def test_get_engine_is_cached_per_url_and_follows_database_url(nsbi_home, monkeypatch):
    e1 = get_engine()
    assert e1 is get_engine() and str(nsbi_home / "nsbi.db") in str(e1.url)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{nsbi_home / 'other.db'}")
    assert get_engine() is not e1 and "other.db" in str(get_engine().url)


def test_migrations_match_the_models(engine):
    """Alembic's autogenerate finds nothing to add: the migrated schema equals the models."""
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata
        )
    assert diff == []


def test_db_upgrade_command_initialises_offline(tmp_path, capsys):
    """`nsbi db upgrade` on a fresh SQLite path creates the file with every table."""
    import argparse

    from backend.commands import db as db_cmd

    db = tmp_path / "sub" / "fresh.db"
    parser = argparse.ArgumentParser()
    db_cmd.add_arguments(parser)
    assert db_cmd.run(parser.parse_args(["--database-url", f"sqlite:///{db}", "upgrade"])) == 0
    assert f"revision {head_revision()}" in capsys.readouterr().out
    tables = set(sa.inspect(create_engine(f"sqlite:///{db}")).get_table_names())
    assert {t.name for t in SQLModel.metadata.sorted_tables} <= tables
    assert db_cmd.run(parser.parse_args(["--database-url", f"sqlite:///{db}", "current"])) == 0
    assert f"revision {head_revision()}" in capsys.readouterr().out


def test_timestamps_come_back_aware_utc(engine):
    t = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    with session_scope(engine) as s:
        c = Campaign(name="x", config_hash="h", created_at=t)
        s.add(c)
    with session_scope(engine) as s:
        back = s.exec(select(Campaign)).one().created_at
    assert back.tzinfo is not None and back.utcoffset() == timedelta(0)
    assert back == t


def test_naive_datetimes_are_refused(sqlite_engine):
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        with session_scope(sqlite_engine) as s:
            s.add(Campaign(name="x", config_hash="h", created_at=datetime(2026, 1, 1)))


def test_unique_keys_and_cascade(engine):
    with session_scope(engine) as s:
        c = Campaign(name="x", config_hash="h")
        s.add(c)
        s.flush()
        j = Job(campaign_id=c.id, name="j", kind="train")
        s.add(j)
        s.flush()
        s.add(Attempt(job_id=j.id, attempt_no=1, launcher="local"))
        s.add(MetricPoint(job_id=j.id, name="loss", member=0, step=1, attempt_no=1, value=1.0))
    with pytest.raises(sa.exc.IntegrityError):
        with session_scope(engine) as s:
            s.add(Attempt(job_id=j.id, attempt_no=1, launcher="local"))
    with pytest.raises(sa.exc.IntegrityError):
        with session_scope(engine) as s:
            s.add(Job(campaign_id=c.id, name="j", kind="train"))
    with pytest.raises(sa.exc.IntegrityError):
        with session_scope(engine) as s:
            s.add(MetricPoint(job_id=j.id, name="loss", member=0, step=1, attempt_no=1, value=2.0))
    with session_scope(engine) as s:
        s.delete(s.get(Campaign, c.id))
    with session_scope(engine) as s:
        assert s.exec(select(sa.func.count()).select_from(MetricPoint)).one() == 0
        assert s.exec(select(sa.func.count()).select_from(Attempt)).one() == 0


def test_dashboard_indexes_exist(engine):
    insp = sa.inspect(engine)
    idx = {i["name"] for t in ("job", "attempt", "event") for i in insp.get_indexes(t)}
    assert {
        "ix_job_campaign_id_status",
        "ix_job_status_desired_state",
        "ix_attempt_status",
        "ix_event_job_id_time",
        "ix_event_campaign_id_time",
    } <= idx
    assert insp.get_pk_constraint("metric_point")["constrained_columns"] == [
        "job_id",
        "name",
        "member",
        "step",
        "attempt_no",
    ]


def test_upgrade_from_each_revision(sqlite_file_engine, tmp_path):
    """A database created at the first revision upgrades to head and then matches the models."""
    from backend.db.migrate import upgrade

    e = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    assert upgrade(e, "0001") == "0001"
    assert "ix_job_campaign_id_id" not in {i["name"] for i in sa.inspect(e).get_indexes("job")}
    assert upgrade(e) == head_revision()
    with e.connect() as conn:
        assert (
            compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata
            )
            == []
        )


def _new_campaign_row(name: str) -> dict:
    now = datetime.now(UTC)
    return {
        "name": name,
        "config_hash": "h",
        "description": "",
        "config": {},
        "code_version": "",
        "owner": "x",
        "status": "CREATED",
        "launcher": "local",
        "max_concurrency": 1,
        "retry_limit": 0,
        "estimate_gpu_hours": 0.0,
        "estimate_cost_usd": 0.0,
        "created_at": now,
        "updated_at": now,
    }


def test_wal_lets_the_controller_commit_while_the_dashboard_reads(sqlite_file_engine):
    """A long read (dashboard) does not block a commit (controller), and the reader keeps its
    snapshot. In rollback-journal mode the commit would fail here with 'database is locked'."""
    e = sqlite_file_engine
    with e.begin() as conn:
        conn.execute(sa.insert(Campaign.__table__), [_new_campaign_row("before")])
    reader = e.raw_connection()  # the DB-API connection, to hold a read transaction open
    try:
        cur = reader.cursor()
        cur.execute("BEGIN")
        assert cur.execute("SELECT name FROM campaign").fetchall() == [("before",)]
        with e.connect() as writer:
            writer.exec_driver_sql("PRAGMA busy_timeout=0")
            writer.execute(sa.insert(Campaign.__table__), [_new_campaign_row("after")])
            writer.commit()
        assert cur.execute("SELECT name FROM campaign").fetchall() == [("before",)]  # its snapshot
        cur.execute("COMMIT")
        assert cur.execute("SELECT name FROM campaign ORDER BY id").fetchall() == [
            ("before",),
            ("after",),
        ]
    finally:
        reader.close()
