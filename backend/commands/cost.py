"""`nsbi cost [--campaign ID] [--csv] [--by KEYS] [--estimate FILE | --demo]`."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url", help="database URL (default: DATABASE_URL or SQLite under NSBI_HOME)"
    )
    parser.add_argument("--campaign", type=int, help="only this campaign")
    parser.add_argument(
        "--by",
        default="campaign",
        help="comma-separated grouping: campaign, day, machine, gpu, spot, kind, job (default: campaign)",
    )
    parser.add_argument("--csv", action="store_true", help="CSV on stdout instead of a table")
    est = parser.add_mutually_exclusive_group()
    est.add_argument(
        "--estimate", metavar="FILE", help="estimate a campaign config before launch (no database)"
    )
    est.add_argument("--demo", action="store_true", help="estimate the built-in demo campaign")


def run(args: argparse.Namespace) -> int:
    from backend import service
    from backend.campaigns import CampaignConfigError, demo_config, load_config
    from backend.commands._output import print_table, write_csv

    emit = write_csv if args.csv else print_table
    if args.estimate or args.demo:
        try:
            cfg = demo_config() if args.demo else load_config(args.estimate)
        except CampaignConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        est = service.estimate_campaign(cfg)
        rows: list[dict[str, Any]] = [
            {
                "job": j.name,
                "kind": j.kind,
                "hours": j.hours,
                "gpu_hours": j.gpu_hours,
                "price_per_hour": j.price_per_hour,
                "cost": j.cost,
            }
            for j in est.per_job
        ]
        emit(rows, ["job", "kind", "hours", "gpu_hours", "price_per_hour", "cost"])
        print(
            f"total: {est.machine_hours:.3f} machine-hours, {est.gpu_hours:.3f} GPU-hours, "
            f"{est.cost:.2f} {est.currency} (prices of {est.catalogue_date})",
            file=sys.stderr,
        )
        return 0
    from backend.db import get_engine, init_db

    keys = [k.strip() for k in args.by.split(",") if k.strip()]
    try:
        rows = service.cost_summary(
            tuple(keys), engine=init_db(get_engine(args.database_url)), campaign_id=args.campaign
        )
    except ValueError as exc:
        print(f"error: --by: {exc}", file=sys.stderr)
        return 2
    cols = [c for k in keys for c in (("campaign", "campaign_name") if k == "campaign" else (k,))]
    emit(rows, [*cols, "attempts", "hours", "gpu_hours", "cost"])
    if not args.csv:
        print(
            f"total: {sum(r['cost'] for r in rows):.4f} USD, {sum(r['gpu_hours'] for r in rows):.3f} GPU-hours",
            file=sys.stderr,
        )
    return 0
