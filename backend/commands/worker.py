"""`nsbi worker <job-uri> --attempt N`: run one job attempt (what launchers start).

Exit codes: 0 succeeded, 1 failed, 2 bad spec / unreadable store, 75 preempted (SIGTERM or
cancel; resumable from the last checkpoint). ``exit.json`` in the attempt folder says the same.

``nsbi worker --check-gpu [--json]``: report JAX's devices and the driver's GPUs (nvidia-ml-py)
and exit 0 only when JAX runs on a GPU (``backend/gpu_check.py``); the GPU image's smoke test.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "job_uri",
        nargs="?",
        help="job folder in the artifact store, e.g. file:///abs/store/campaigns/c/jobs/j",
    )
    parser.add_argument("--attempt", type=int, help="attempt number (1, 2, ...); required")
    parser.add_argument(
        "--check-gpu",
        action="store_true",
        help="report JAX's devices and the GPUs the driver sees (name, memory) and exit: 0 when "
        "JAX runs on a GPU, 1 when not (no job is run)",
    )
    parser.add_argument("--json", action="store_true", help="with --check-gpu: print JSON")
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        help="seconds between heartbeats/flushes (default: NSBI_WORKER_INTERVAL_S or 5)",
    )


def run(args: argparse.Namespace) -> int:
    if args.check_gpu:
        import json

        from backend.gpu_check import check_gpu, format_check

        check = check_gpu()
        print(json.dumps(check.to_dict(), indent=2) if args.json else format_check(check))
        return 0 if check.ok else 1
    if args.job_uri is None or args.attempt is None:
        print("nsbi worker: give a job URI and --attempt N (or --check-gpu)", file=sys.stderr)
        return 2
    from backend.worker import run_attempt

    if args.attempt < 1:
        print(f"nsbi worker: --attempt must be >= 1, got {args.attempt}", file=sys.stderr)
        return 2
    outcome = run_attempt(args.job_uri, args.attempt, interval=args.interval, capture_output=True)
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
