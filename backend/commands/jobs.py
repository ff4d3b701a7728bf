"""`nsbi jobs [--campaign ID] [--state S]`: one page of the job table."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from backend.states import JobStatus

COLUMNS = [
    "id",
    "campaign_id",
    "name",
    "kind",
    "status",
    "attempts",
    "recoveries",
    "last_heartbeat",
    "cost_usd",
    "status_reason",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url", help="database URL (default: DATABASE_URL or SQLite under NSBI_HOME)"
    )
    parser.add_argument("--campaign", type=int, help="only jobs of this campaign")
    parser.add_argument(
        "--state",
        action="append",
        type=str.upper,
        choices=[s.value for s in JobStatus],
        help="only jobs in this state (repeatable)",
    )
    parser.add_argument(
        "--kind", choices=["train", "fit", "impacts", "scan", "toys"], help="only jobs of this kind"
    )
    parser.add_argument("--limit", type=int, default=50, help="rows per page (default 50)")
    parser.add_argument("--offset", type=int, default=0, help="skip this many rows")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from backend import service
    from backend.commands._output import print_table
    from backend.db import get_engine, init_db

    engine = init_db(get_engine(args.database_url))
    rows, total = service.list_jobs(
        campaign_id=args.campaign,
        states=args.state,
        kind=args.kind,
        offset=args.offset,
        limit=args.limit,
        engine=engine,
    )
    if args.json:
        print(
            json.dumps({"total": total, "jobs": [asdict(r) for r in rows]}, default=str, indent=2)
        )
        return 0
    print_table([asdict(r) for r in rows], COLUMNS)
    shown = f"{args.offset + 1}-{args.offset + len(rows)}" if rows else "0"
    print(f"({shown} of {total} jobs)", file=sys.stderr)
    return 0
