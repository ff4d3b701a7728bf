"""`nsbi db upgrade | current`: run the Alembic migrations (works offline, on a fresh SQLite)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url", help="database URL (default: DATABASE_URL or SQLite under NSBI_HOME)"
    )
    sub = parser.add_subparsers(dest="db_command", metavar="ACTION")
    sub.add_parser("upgrade", help="create or migrate the database to the newest schema")
    sub.add_parser("current", help="print the schema revision of the database")


def run(args: argparse.Namespace) -> int:
    from backend.db.engine import get_engine
    from backend.db.migrate import current_revision, head_revision, upgrade

    action = getattr(args, "db_command", None)
    if action is None:
        print("nsbi db: give an action: upgrade or current", file=sys.stderr)
        return 2
    engine = get_engine(args.database_url)
    where = engine.url.render_as_string(hide_password=True)
    if action == "upgrade":
        rev = upgrade(engine)
        print(f"database {where} at revision {rev} (head {head_revision()})")
        return 0
    rev = current_revision(engine)
    print(f"database {where}: revision {rev or 'none (not initialised)'}; head {head_revision()}")
    return 0
