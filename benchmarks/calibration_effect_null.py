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
    from benchmarks.check_null import study_main

    return study_main(argv, __doc__ or "", run, 3, "log r-hat = slope x exact log r")


if __name__ == "__main__":
    raise SystemExit(main())
