"""How close does one ratio ensemble get to the truth on a benchmark problem, per training setting?

A study, not a test: it trains one ratio task of a benchmark problem (numerator against
denominator, as the analysis path does, on 70 % of the simulated events) and measures, on
pseudo-data at mu = 1, the ensemble's error against the exact log ratio relative to the
ratio's spread (noise/signal), the member error and spread, and the regression slope of the
learned on the true log ratio. docs/validation.md tabulates it for `interference`.

    python -m benchmarks.ratio_noise --problem interference --scale 5 \\
        --config '{"max_steps": 10000, "patience": 10}' --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

TRAIN_SHARE = 0.7  # the analysis path keeps 30 % of every sample for evaluation


def study(
    problem_name: str, numerator: str, denominator: str, scale: float, config: dict[str, Any]
) -> dict[str, Any]:
    from sbi_engine.problems import get_problem
    from sbi_engine.ratio.config import TrainConfig
    from sbi_engine.ratio.train import train_ensemble

    problem = get_problem(problem_name)
    n = int(100_000 * TRAIN_SHARE * scale)
    num = problem.sample(numerator, n, seed=1)
    den = problem.sample(denominator, n, seed=2)
    data = problem.pseudo_data(1.0, seed=7)
    truth = problem.log_ratio(numerator, data) - problem.log_ratio(denominator, data)
    settings = {"members": 4, "bootstrap": True, **config}
    t0 = time.perf_counter()
    result = train_ensemble(num, den, TrainConfig(**settings))
    log_r, spread = result.ensemble.log_ratio(data)
    members = result.ensemble.member_log_ratios(data).astype(np.float64)
    err = log_r - truth
    return {
        "problem": problem_name,
        "task": f"{numerator}_vs_{denominator}",
        "events_per_class": n,
        "config": settings,
        "steps_run": result.steps_run,
        "train_s": round(time.perf_counter() - t0, 1),
        "signal": float(np.std(truth)),
        "error": float(np.std(err)),
        "noise_to_signal": float(np.std(err) / np.std(truth)),
        "member_error": float(np.mean([np.std(m - truth) for m in members])),
        "member_spread": float(np.median(spread)),
        "slope": float(np.polyfit(truth, log_r, 1)[0]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="interference")
    ap.add_argument("--numerator", default="SBI")
    ap.add_argument("--denominator", default="B")
    ap.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="simulated events per sample in units of 100k (70 %% train)",
    )
    ap.add_argument("--config", default="{}", help="TrainConfig overrides as JSON")
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args(argv)
    out = study(args.problem, args.numerator, args.denominator, args.scale, json.loads(args.config))
    text = json.dumps(out, indent=2)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
