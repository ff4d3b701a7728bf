"""`nsbi campaign create (FILE | --demo) | launch ID | cancel ID | retry ID | status [ID]`.

Everything except `create` only writes an intent; the controller acts on it. `status` shows
each campaign's result status: "checks passed", or "needs review" with the failed checks
(value against threshold), stored when the campaign settled (`backend.result_status`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url", help="database URL (default: DATABASE_URL or SQLite under NSBI_HOME)"
    )
    sub = parser.add_subparsers(dest="campaign_command", metavar="ACTION")
    p = sub.add_parser(
        "create", help="validate a campaign config and create its jobs (not launched)"
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("file", nargs="?", help="campaign config (.toml, .yaml or .yml)")
    src.add_argument("--demo", action="store_true", help="use the built-in demo campaign")
    p.add_argument("--owner", default="local", help="who owns the campaign (default: local)")
    p.add_argument("--launch", action="store_true", help="also request the launch right away")
    for name, text in (
        ("launch", "request the launch of a campaign's jobs"),
        ("cancel", "request cancellation of a campaign (or of some of its jobs)"),
        ("retry", "request a retry of a campaign's failed jobs (or of some jobs)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("id", type=int, help="campaign id")
        if name != "launch":
            p.add_argument(
                "--job",
                type=int,
                action="append",
                dest="jobs",
                metavar="JOB_ID",
                help="only this job (repeatable)",
            )
    p = sub.add_parser("status", help="campaigns and their progress, or one campaign in detail")
    p.add_argument("id", type=int, nargs="?", help="campaign id (default: list all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _doc(status) -> dict | None:
    return status.to_dict() if status is not None else None


def _print_result_status(status, campaign_status: str, print_table) -> None:
    """'result: checks passed (N checks)' or 'result: needs review: ...' and the failed checks."""
    from backend.result_status import FINAL, badge

    so_far = (
        " (so far: the campaign is not final)"
        if campaign_status not in FINAL and status is not None
        else ""
    )
    print(f"result: {badge(status, campaign_status) or 'no result status recorded'}{so_far}")
    if status is not None and status.failed:
        print_table(
            [
                {
                    "check": r.name,
                    "task": r.task or "-",
                    "value": r.value,
                    "threshold": f"{'>=' if r.direction == 'above' else '<='} {r.threshold:.4g}",
                    "message": r.message,
                }
                for r in status.failed
            ],
            ["check", "task", "value", "threshold", "message"],
        )


def _engine(args: argparse.Namespace):
    from backend.db import get_engine, init_db

    return init_db(get_engine(args.database_url))


def run(args: argparse.Namespace) -> int:
    from backend import service
    from backend.campaigns import CampaignConfigError, demo_config, load_config
    from backend.commands._output import print_table
    from backend.result_status import campaign_result_status, result_statuses, short_label

    action = getattr(args, "campaign_command", None)
    if action is None:
        print(
            "nsbi campaign: give an action: create, launch, cancel, retry or status",
            file=sys.stderr,
        )
        return 2
    try:
        engine = _engine(args)
        if action == "create":
            cfg = demo_config() if args.demo else load_config(args.file)
            est = service.estimate_campaign(cfg)
            cid = service.create_campaign(cfg, owner=args.owner, engine=engine)
            n = len(est.per_job)
            print(
                f"created campaign {cid} ({cfg.name!r}): {n} jobs; estimate {est.machine_hours:.2f} machine-hours, "
                f"{est.gpu_hours:.2f} GPU-hours, {est.cost:.2f} {est.currency} (prices of {est.catalogue_date})"
            )
            if args.launch:
                service.request_launch(cid, engine=engine)
                print(f"launch requested for campaign {cid}")
            return 0
        if action == "launch":
            n = service.request_launch(args.id, engine=engine)
            print(f"launch requested for campaign {args.id}: {n} pending jobs marked to run")
            return 0
        if action == "cancel":
            n = service.request_cancel(
                campaign_id=None if args.jobs else args.id, job_ids=args.jobs, engine=engine
            )
            print(f"cancel requested for {n} job(s) of campaign {args.id}")
            return 0
        if action == "retry":
            n = service.request_retry(
                campaign_id=None if args.jobs else args.id, job_ids=args.jobs, engine=engine
            )
            print(f"retry requested for {n} failed job(s) of campaign {args.id}")
            return 0
        if args.id is None:
            rows = service.list_campaigns(engine=engine)
            checked = result_statuses([r.id for r in rows], engine=engine, failing_so_far=True)
            if args.json:
                print(
                    json.dumps(
                        [{**asdict(r), "result_status": _doc(checked.get(r.id))} for r in rows],
                        default=str,
                        indent=2,
                    )
                )
                return 0
            table = [
                {
                    **asdict(r),
                    "progress": f"{100 * r.progress:.0f}%",
                    "cost": r.cost_usd,
                    "running": r.counts["RUNNING"] + r.counts["LAUNCHING"],
                    "failed": r.counts["FAILED"],
                    "done": r.counts["SUCCEEDED"],
                    "budget": r.budget_usd,
                    "estimate": r.estimate_cost_usd,
                    "result": short_label(checked.get(r.id), r.status),
                }
                for r in rows
            ]
            print_table(
                table,
                [
                    "id",
                    "name",
                    "status",
                    "n_jobs",
                    "done",
                    "running",
                    "failed",
                    "progress",
                    "cost",
                    "estimate",
                    "budget",
                    "created_at",
                    "result",
                ],
            )
            return 0
        d = service.get_campaign(args.id, engine=engine)
        checked_one = campaign_result_status(
            args.id, engine=engine
        )  # stored, else from the results so far
        if args.json:
            print(
                json.dumps({**asdict(d), "result_status": _doc(checked_one)}, default=str, indent=2)
            )
            return 0
        s = d.summary
        print(
            f"campaign {s.id} {s.name!r}: {s.status}, {s.n_jobs} jobs, {100 * s.progress:.0f}% done, "
            f"launcher {s.launcher}, owner {s.owner}"
        )
        _print_result_status(checked_one, s.status, print_table)
        print(
            f"cost so far {s.cost_usd:.4f} USD ({s.gpu_hours:.3f} GPU-hours); estimate {s.estimate_cost_usd:.4f} USD; "
            f"budget {'none' if s.budget_usd is None else f'{s.budget_usd:.2f} USD'}"
        )
        print(f"budget check: {d.budget.reason}")
        print_table(
            [{"kind": k, **v} for k, v in sorted(d.counts_by_kind.items())],
            ["kind", *[st for st in s.counts if any(st in v for v in d.counts_by_kind.values())]],
        )
        return 0
    except CampaignConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (service.NotFound, service.IntentError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
