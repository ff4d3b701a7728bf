"""`nsbi worker <job-uri> --attempt N`: run one job attempt (what launchers start).

Exit codes: 0 succeeded, 1 failed, 2 bad spec / unreadable store, 75 preempted (SIGTERM or
cancel; resumable from the last checkpoint). ``exit.json`` in the attempt folder says the same.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "job_uri",
        help="job folder in the artifact store, e.g. file:///abs/store/campaigns/c/jobs/j",
    )
    parser.add_argument("--attempt", type=int, required=True, help="attempt number (1, 2, ...)")
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        help="seconds between heartbeats/flushes (default: NSBI_WORKER_INTERVAL_S or 5)",
    )


def run(args: argparse.Namespace) -> int:
    from backend.worker import run_attempt

    if args.attempt < 1:
        print(f"nsbi worker: --attempt must be >= 1, got {args.attempt}", file=sys.stderr)
        return 2
    outcome = run_attempt(args.job_uri, args.attempt, interval=args.interval)
    line = f"nsbi worker: attempt {args.attempt} of {args.job_uri}: {outcome.status} (exit {outcome.exit_code})"
    print(
        line if not outcome.error else f"{line}\n{outcome.error}",
        file=sys.stderr if outcome.exit_code else sys.stdout,
    )
    return outcome.exit_code


def main(argv: list[str] | None = None) -> int:
    """Direct entry (``python -m backend.commands.worker``): what launchers run, so a worker
    never pays for, or depends on, importing the other command groups."""
    parser = argparse.ArgumentParser(prog="nsbi worker", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
