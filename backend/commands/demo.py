"""`nsbi demo`: the whole analysis chain headless, in a few minutes on a laptop CPU.

Simulates the built-in off-shell demo samples, trains a small ratio ensemble per process
against the reference (B), fits mu on weighted Asimov events with the learned ratios and,
for comparison, with the exact analytic ones. Needs no database and no controller.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--events",
        type=int,
        default=40_000,
        help="training events per class and task (default 40000)",
    )
    parser.add_argument(
        "--members", type=int, default=2, help="ensemble members per ratio task (default 2)"
    )
    parser.add_argument(
        "--steps", type=int, default=1500, help="maximum training steps per member (default 1500)"
    )
    parser.add_argument(
        "--mu", type=float, default=1.0, help="true mu of the Asimov dataset (default 1)"
    )
    parser.add_argument(
        "--asimov-events",
        type=int,
        default=20_000,
        help="simulated events per process for the Asimov dataset",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for simulation and training")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="artifact folder (default <NSBI_HOME>/demo/<timestamp>)",
    )


def run(args: argparse.Namespace) -> int:
    from backend.settings import Settings
    from sbi_engine.pipeline import demo_ratio_tasks, ensemble_log_ratio, fit_demo_asimov
    from sbi_engine.ratio import TrainConfig, train_ensemble
    from sbi_engine.sample_specs import load_sample_spec

    t0 = time.perf_counter()
    out = args.out or Settings.from_env().home / "demo" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    # phi is an angle: (cos, sin) inputs remove a ~0.1 bias in log r at the phi = +-pi seam.
    config = TrainConfig(
        members=args.members,
        max_steps=args.steps,
        seed=args.seed,
        periodic_features=("phi",),
        bootstrap=args.members > 4,
    )

    log_ratios = {}
    for task in demo_ratio_tasks(args.events, seed=args.seed):
        print(
            f"[{time.perf_counter() - t0:5.1f}s] training {task.name}: {config.members} x "
            f"{config.hidden_layers}x{config.width} {config.activation} on {args.events} events per class",
            flush=True,
        )
        result = train_ensemble(
            load_sample_spec(task.numerator),
            load_sample_spec(task.denominator),
            config,
            progress=True,
        )
        path = out / f"ensemble_{task.name}.npz"
        result.ensemble.save(path)
        log_ratios[task.process] = ensemble_log_ratio(result.ensemble)

    print(
        f"[{time.perf_counter() - t0:5.1f}s] fitting mu on Asimov data (mu = {args.mu:g})",
        flush=True,
    )
    report = fit_demo_asimov(
        log_ratios, mu_true=args.mu, n_per_process=args.asimov_events, seed=args.seed + 20_000
    )
    (out / "fit_result.json").write_text(
        json.dumps(report.to_dict(), indent=2, sort_keys=True, default=float)
    )

    print()
    print(report.summary())
    print(f"artifacts: {out}")
    print(f"total time: {time.perf_counter() - t0:.1f}s")
    return 0 if report.converged else 1
