"""False alarms and power of the ensemble checks, measured with the exact ratios.

A study, not a test: for each benchmark problem and seed it simulates fresh evaluation-size
samples (30 % of the problem's simulation, as the analysis path holds out), puts the exact
ratio (or the exact log ratio times ``--slope``, a ratio too flat) where the trained ensemble
would stand, and runs every check of `sbi_engine.result_checks.ensemble_checks`. With slope 1
every failure is a false alarm. It reports per check and per problem how often a task, and an
analysis (any of its tasks), fails, and how often the logistic calibration slope
(reported, not a gate) is more than 3 errors from 1, under the current rules and under the rules before the
look-elsewhere calibration, the overconfidence reading of saturation and the AUC's null error
(the same events, read without those fields).

    python -m benchmarks.check_null --seeds 20 --json null.json
    python -m benchmarks.check_null --seeds 5 --slope 0.8 --json flat.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

NEW_FIELDS = ("auc_null_error", "overconfident_fraction")  # absent in diagnostics before them
NEW_CURVE_FIELDS = ("global_deviation", "tested_bins")


def legacy(diag: dict[str, Any]) -> dict[str, Any]:
    """The diagnostics dict as stored before the corrections, read with the old rules."""
    out = {k: v for k, v in diag.items() if k not in NEW_FIELDS}
    out["calibration"] = [
        {k: v for k, v in c.items() if k not in NEW_CURVE_FIELDS} for c in diag["calibration"]
    ]
    return out


def run(problems: list[str], seeds: int, slope: float) -> dict[str, Any]:
    from sbi_engine.problems import get_problem
    from sbi_engine.problems.null_checks import truth_diagnostics
    from sbi_engine.result_checks import ensemble_checks

    rules = ("current", "before")
    task_fail: dict[str, Counter[str]] = {r: Counter() for r in rules}  # check -> tasks
    analysis_fail: dict[str, Counter[str]] = {r: Counter() for r in rules}  # problem -> seeds
    tasks_seen = 0
    slope_beyond_3: Counter[str] = Counter()  # task kind -> |b - 1| > 3 errors
    slope_seen: Counter[str] = Counter()
    rows: list[dict[str, Any]] = []
    for name in problems:
        problem = get_problem(name)
        for seed in range(seeds):
            t0 = time.perf_counter()
            diags = truth_diagnostics(problem, seed, slope=slope)
            failed_any = dict.fromkeys(rules, False)
            for task, diag in diags.items():
                tasks_seen += 1
                b, err = diag.get("logit_slope"), diag.get("logit_slope_error")
                kind = "process" if "_vs_" in task else "systematic"
                if b is not None and err:
                    slope_seen[kind] += 1
                    slope_beyond_3[kind] += abs(b - 1.0) > 3.0 * err
                    rows.append(
                        {
                            "problem": name,
                            "seed": seed,
                            "task": task,
                            "check": "logit_slope (not gating)",
                            "value": b,
                            "error": err,
                            "passed": abs(b - 1.0) <= 3.0 * err,
                        }
                    )
                for rule, d in (("current", diag), ("before", legacy(diag))):
                    recs = ensemble_checks(task, d)
                    for rec in recs:
                        if not rec.passed:
                            task_fail[rule][rec.name] += 1
                            failed_any[rule] = True
                        if rule == "current":
                            rows.append(
                                {
                                    "problem": name,
                                    "seed": seed,
                                    "task": task,
                                    "check": rec.name,
                                    "value": rec.value,
                                    "limit": rec.threshold,
                                    "passed": rec.passed,
                                }
                            )
            for rule in rules:
                analysis_fail[rule][name] += failed_any[rule]
            print(
                f"{name} seed {seed}: {len(diags)} tasks, "
                f"{'FAIL' if failed_any['current'] else 'pass'} "
                f"(before: {'FAIL' if failed_any['before'] else 'pass'}), "
                f"{time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    analyses = len(problems) * seeds
    return {
        "slope": slope,
        "seeds": seeds,
        "problems": problems,
        "tasks": tasks_seen,
        "analyses": analyses,
        "task_failures": {r: dict(task_fail[r]) for r in rules},
        "analysis_failures": {r: dict(analysis_fail[r]) for r in rules},
        "logit_slope_beyond_3_errors": {
            k: f"{slope_beyond_3[k]} of {slope_seen[k]}" for k in sorted(slope_seen)
        },
        "analysis_failure_rate": {
            r: sum(analysis_fail[r].values()) / analyses if analyses else float("nan")
            for r in rules
        },
        "rows": rows,
    }


def study_main(
    argv: list[str] | None,
    doc: str,
    run_study: Callable[[list[str], int, float], dict[str, Any]],
    seeds: int,
    slope_help: str,
) -> int:
    """The command line of a study over benchmark problems, seeds and a slope: parse, run,
    print the summary (everything but ``rows``) and write the whole result to ``--json``."""
    from sbi_engine.problems import list_problems

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--problems", default=",".join(list_problems()))
    ap.add_argument("--seeds", type=int, default=seeds)
    ap.add_argument("--slope", type=float, default=1.0, help=slope_help)
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args(argv)
    problems = [p for p in args.problems.split(",") if p]
    unknown = sorted(set(problems) - set(list_problems()))
    if unknown:
        ap.error(f"--problems: unknown {unknown}; known: {list_problems()}")
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")
    out = run_study(problems, args.seeds, args.slope)
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


def main(argv: list[str] | None = None) -> int:
    return study_main(argv, __doc__ or "", run, 10, "r-hat = exp(slope x exact log r)")


if __name__ == "__main__":
    raise SystemExit(main())
