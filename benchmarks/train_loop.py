"""``nsbi bench train-loop``: wall time of whole trainings, validation passes included.

``nsbi bench train`` times the compiled training steps alone; a real training also runs a
validation pass over every validation event each ``eval_every`` steps. On millions of events that
pass, not the steps, set the cost (a pass over 1.4M events is the arithmetic of 456 training
steps of 1024), so ``TrainConfig.eval_budget_share`` spaces the passes out. This benchmark trains
the same ensemble twice on two shifted Gaussians, same seeds and step budget, early stopping off:
once with a pass every ``eval_every`` steps (the baseline: ``eval_budget_share`` 1000) and once
with the default rule, and reports each run's wall time, its number of validation passes, the
speed-up (baseline time over default time, measured in the same process) and each run's best
validation loss, which must agree (the rule changes when the loss is read, not what is learned).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

SCHEMA = "nsbi-bench-train-loop/1"
BASELINE_SHARE = 1000.0  # a validation pass every eval_every steps at any realistic size


def gaussian_samples(events: int, features: int, seed: int = 0) -> tuple[Any, Any]:
    """Numerator N(0.1, 1) against denominator N(0, 1) in ``features`` dimensions."""
    from sbi_engine.data import Sample

    rng = np.random.default_rng(seed)
    names = tuple(f"x{i}" for i in range(features))
    ones = np.ones(events)
    return (
        Sample(rng.normal(0.1, 1.0, (events, features)), ones, names, "numerator"),
        Sample(rng.normal(0.0, 1.0, (events, features)), ones, names, "denominator"),
    )


def time_loop(numerator: Any, denominator: Any, config: Any) -> dict[str, Any]:
    """One whole ``train_ensemble`` call: wall time, passes, interval, best validation loss."""
    from sbi_engine.ratio import train_ensemble

    t0 = time.perf_counter()
    result = train_ensemble(numerator, denominator, config)
    seconds = time.perf_counter() - t0
    training = result.ensemble.metadata["training"]
    passes = {r["step"] for r in result.history if r["name"] == "val_loss"}
    return {
        "seconds": seconds,
        "steps_run": int(result.steps_run),
        "eval_interval": int(training["eval_interval"]),
        "validation_passes": len(passes),
        "best_val_loss": float(np.mean([m["best_val_loss"] for m in training["members"]])),
    }


def run_bench(events: int, steps: int, members: int, features: int) -> dict[str, Any]:
    """Baseline (a pass every eval_every steps) and the default rule, same data and seeds."""
    from benchmarks.train import device_info
    from sbi_engine.ratio import TrainConfig

    numerator, denominator = gaussian_samples(events, features)
    default = TrainConfig(members=members, max_steps=steps, patience=10**6, strategy="vmap")
    baseline = default.replace(eval_budget_share=BASELINE_SHARE)
    runs = {
        "baseline_every_eval_every": time_loop(numerator, denominator, baseline),
        "default_eval_budget_share": time_loop(numerator, denominator, default),
    }
    base, new = runs["baseline_every_eval_every"], runs["default_eval_budget_share"]
    return {
        "schema": SCHEMA,
        "device": device_info(),
        "events_per_class": events,
        "features": features,
        "members": members,
        "steps": steps,
        "eval_every": default.eval_every,
        "eval_budget_share": default.eval_budget_share,
        "runs": runs,
        "speedup": base["seconds"] / new["seconds"],
        "best_val_loss_rel_diff": abs(new["best_val_loss"] - base["best_val_loss"])
        / abs(base["best_val_loss"]),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Time whole ratio trainings (validation passes included): a pass every eval_every "
        "steps against the default eval_budget_share rule; write JSON."
    )
    parser.add_argument("--json", metavar="FILE", help="write the report here (default: print it)")
    parser.add_argument(
        "--events", type=float, default=1e6, help="simulated events per class (default 1e6)"
    )
    parser.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    parser.add_argument("--members", type=int, default=4, help="ensemble members (default 4)")
    parser.add_argument("--features", type=int, default=4, help="input features (default 4)")


def run(args: argparse.Namespace) -> int:
    events = int(args.events)
    if events < 1000 or args.steps < 1 or args.members < 1 or args.features < 1:
        print(
            "nsbi bench train-loop: --events must be >= 1000 and --steps, --members, "
            "--features >= 1",
            file=sys.stderr,
        )
        return 2
    report = run_bench(events, args.steps, args.members, args.features)
    text = json.dumps(report, indent=2, sort_keys=True)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
        runs = report["runs"]
        print(
            f"wrote {args.json}: {runs['baseline_every_eval_every']['seconds']:.1f} s with a "
            f"validation pass every {report['eval_every']} steps, "
            f"{runs['default_eval_budget_share']['seconds']:.1f} s with one every "
            f"{runs['default_eval_budget_share']['eval_interval']}: x{report['speedup']:.2f}",
            file=sys.stderr,
        )
    else:
        print(text)
    return 0
