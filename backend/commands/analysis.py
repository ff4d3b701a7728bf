"""`nsbi analysis validate FILE` and `nsbi analysis run FILE [--backend local|gce] [--report-dir DIR]`.

validate prints every problem of the file (file:line: key: message) and exits 2 if there is
any; otherwise a short summary of what a run would do: jobs per stage and how many of them
earlier runs already did (reused, not run again).

run validates (problems: exit 2, nothing created), creates the campaign, drives it with an
in-process controller (or watches the one `nsbi up` runs, or the controller that leads the
database: one controller per database, `backend.leader`), shows progress, and writes the
report folder (result.json, plots, summary.md). Exit 0 when the campaign succeeded and its
checks passed, 3 when it succeeded but its result needs review (a failed check: see
`backend.result_status`), 1 if it failed or was cancelled, 2 for an invalid file.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="analysis_command", metavar="ACTION")
    p = sub.add_parser("validate", help="check an analysis file; print every problem with its line")
    p.add_argument("file", help="analysis file (.yaml)")
    p.add_argument(
        "--no-data", action="store_true", help="do not read the samples (check the file only)"
    )
    p = sub.add_parser("run", help="run an analysis end to end and write its report")
    p.add_argument("file", help="analysis file (.yaml)")
    p.add_argument(
        "--backend",
        choices=("local", "gce", "slurm"),
        default=None,
        help="where jobs run (default: the file's backend.launcher, else local)",
    )
    p.add_argument(
        "--report-dir", default=None, help="report folder (default: the file's report.dir)"
    )
    p.add_argument(
        "--no-reuse", action="store_true", help="run every job even if an earlier run did it"
    )
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="create and launch the campaign, then return (a running controller carries it)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _problems(path: str, check_data: bool) -> list[str]:
    from backend.analysis import validate_analysis

    return [str(p) for p in validate_analysis(path, check_data=check_data)]


def _report_problems(path: str, problems: list[str]) -> int:
    for line in problems:
        print(line, file=sys.stderr)
    print(f"{path}: {len(problems)} problem(s); nothing was created", file=sys.stderr)
    return 2


def _preview(analysis) -> str:
    """Jobs per stage and how many an earlier run already did (when a database exists)."""
    from backend import service
    from backend.analysis.cache import memo_read_only

    try:
        with memo_read_only():  # validation creates nothing, not even <NSBI_HOME>/checksums.json
            plan = service.analysis_plan(analysis.campaign_config())
    except Exception as exc:  # noqa: BLE001 - the preview is a courtesy; validation already passed
        return f"(no job preview: {exc})"
    parts = [f"{kind} {n}" for kind, n in plan["kinds"].items()]
    reuse = plan.get("reused")
    tail = (
        f"; {len(reuse)} of {plan['n_jobs']} already done by earlier runs"
        if reuse is not None
        else ""
    )
    return f"{plan['n_jobs']} jobs ({', '.join(parts)}){tail}"


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "analysis_command", None)
    if action is None:
        print("nsbi analysis: give an action: validate or run", file=sys.stderr)
        return 2
    from backend.analysis import AnalysisError, load_analysis

    if action == "validate":
        problems = _problems(args.file, check_data=not args.no_data)
        if problems:
            return _report_problems(args.file, problems)
        analysis = load_analysis(args.file, check_data=False)
        print(
            f"{args.file}: valid analysis {analysis.name!r} (sha256 {analysis.file_hash[:12]}); "
            f"would run {_preview(analysis)}"
        )
        return 0
    from backend.analysis.cache import CacheKeyError
    from backend.analysis.run import run_analysis
    from backend.campaigns import CampaignConfigError

    try:
        summary = run_analysis(
            args.file,
            backend=args.backend,
            report_dir=args.report_dir,
            progress=not args.quiet,
            reuse=not args.no_reuse,
            wait=not args.no_wait,
        )
    except AnalysisError as exc:
        return _report_problems(args.file, [str(p) for p in exc.problems])
    except (CacheKeyError, CampaignConfigError) as exc:  # a sample vanished after validation, ...
        return _report_problems(args.file, [f"{args.file}: {exc}"])
    except KeyboardInterrupt:
        print(
            "\nnsbi analysis: interrupted; the campaign stays active and any controller (nsbi controller, "
            "nsbi up) carries it on",
            file=sys.stderr,
        )
        return 130
    if args.no_wait:
        print(
            f"campaign {summary.campaign_id} created and launched ({summary.status}); "
            f"{len(summary.reused)} jobs reused"
        )
        return 0
    mu = "n/a" if summary.mu_hat is None else f"{summary.mu_hat:.4f} +- {summary.sigma:.4f}"
    print(
        f"campaign {summary.campaign_id}: {summary.status} in {summary.seconds:.1f} s; "
        f"{len(summary.ran)} jobs ran, {len(summary.reused)} reused"
    )
    print(f"mu-hat = {mu}")
    if summary.report is not None:
        print(f"report: {summary.report.summary}")
        if summary.report.export_problem:
            print(f"note: plots written as HTML ({summary.report.export_problem})")
    if summary.result_status:
        print(f"result: {summary.result_status.get('summary')}")
    return summary.exit_code
