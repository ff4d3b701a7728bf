"""False alarms and power of the calibration-effect check, measured with the exact ratios.

A study, not a test: for each benchmark problem and seed, the exact workspace is fitted on fresh
pseudo-data at mu = 1, and every ratio task in turn is recalibrated on fresh evaluation-size
samples and the fit redone (`sbi_engine.problems.null_checks.truth_calibration_effects`), as a
fit job does with a trained ensemble. With ``--slope 1`` the recalibration has nothing to
correct, so every shift is the method's own and every failure a false alarm; with ``--slope
0.8`` the task's log ratio is made 20 % too flat first, and the shift is its effect on mu.

    python -m benchmarks.calibration_effect_null --seeds 5 --json null.json
    python -m benchmarks.calibration_effect_null --seeds 2 --slope 0.8 --json flat.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np


def run(problems: list[str], seeds: int, slope: float) -> dict[str, Any]:
    from sbi_engine.problems import get_problem
    from sbi_engine.problems.null_checks import truth_calibration_effects

    rows: list[dict[str, Any]] = []
    for name in problems:
        problem = get_problem(name)
        for seed in range(seeds):
            t0 = time.perf_counter()
            recs = truth_calibration_effects(problem, seed, slope=slope)
            for r in recs:
                rows.append({"problem": name, "seed": seed, **r})
            print(
                f"{name} seed {seed}: {len(recs)} tasks, failed "
                f"{sum(not r['passed'] for r in recs)}, largest shift "
                f"{max((r['value'] or 0.0) for r in recs):.3f} sigma, "
                f"{time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    values = np.array([r["value"] for r in rows if r["value"] is not None])
    errors = np.array([r.get("error", np.nan) for r in rows if r["value"] is not None])
    limit = rows[0]["threshold"] if rows else float("nan")
    harmless = np.isfinite(errors) & (values + np.nan_to_num(errors, nan=np.inf) <= limit)
    return {
        "slope": slope,
        "seeds": seeds,
        "problems": problems,
        "tasks": len(rows),
        "failed": int(sum(not r["passed"] for r in rows)),
        "shown_harmless": int(harmless.sum()),
        "shift_median": float(np.median(values)) if values.size else float("nan"),
        "shift_p95": float(np.quantile(values, 0.95)) if values.size else float("nan"),
        "shift_max": float(values.max()) if values.size else float("nan"),
        "noise_median": float(np.nanmedian(errors)) if errors.size else float("nan"),
        "limit": limit,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    from sbi_engine.problems import list_problems

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default=",".join(list_problems()))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--slope", type=float, default=1.0, help="log r-hat = slope x exact log r")
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args(argv)
    problems = [p for p in args.problems.split(",") if p]
    unknown = sorted(set(problems) - set(list_problems()))
    if unknown:
        ap.error(f"--problems: unknown {unknown}; known: {list_problems()}")
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")
    out = run(problems, args.seeds, args.slope)
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
