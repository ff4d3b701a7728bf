"""`nsbi problems list [--json]` and `nsbi problems generate NAME DIR [--mu-true 1] [--seed 0] [--events-scale 1]`.

Benchmark problems with exact likelihoods (`sbi_engine/problems`), for validating learned
density ratios. `generate` writes DIR/<sample>.parquet for every nominal and systematic
sample, DIR/data.parquet (Poisson pseudo-data at mu_true drawn from the true mixture),
DIR/analysis.yaml (an analysis file over those samples: `nsbi analysis validate / run`) and
DIR/truth.json (the exact-ratio reference fit of data.parquet from the project's fit and from
an independent NumPy + iminuit NLL, with yields and settings).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="problems_command", metavar="ACTION")
    p = sub.add_parser("list", help="the benchmark problems with a one-line description")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p = sub.add_parser(
        "generate", help="write samples, pseudo-data, analysis.yaml and truth.json for a problem"
    )
    p.add_argument("name", help="problem name (see `nsbi problems list`)")
    p.add_argument("dir", type=Path, help="output folder (created)")
    p.add_argument("--mu-true", type=float, default=1.0, help="mu of the pseudo-data (default 1)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of every sample and of the pseudo-data (default 0)",
    )
    p.add_argument(
        "--events-scale",
        type=float,
        default=1.0,
        help="multiplies the events per simulated sample (default 1: 100k-150k per sample)",
    )
    p.add_argument(
        "--asimov",
        action="store_true",
        help="the analysis fits Asimov data at mu_true instead of the pseudo-data file",
    )
    p.add_argument(
        "--no-truth", action="store_true", help="skip the reference fits (truth.json without fits)"
    )


def _list(args: argparse.Namespace) -> int:
    from sbi_engine.problems import get_problem, list_problems

    rows: list[dict[str, Any]] = []
    for name in list_problems():
        p = get_problem(name)
        rows.append(
            {
                "name": name,
                "description": p.description,
                "processes": list(p.processes),
                "reference": p.reference,
                "features": list(p.feature_names),
                "nuisances": list(p.nuisances),
                "norm_only": list(p.norm_only),
                "expected_events_mu1": round(p.expected_events(1.0), 3),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name'].ljust(width)}  {r['description']}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    import numpy as np
    import yaml

    from sbi_engine.data import Sample
    from sbi_engine.problems import exact_reference_fit, get_problem, read_parquet

    try:
        problem = get_problem(args.name)
    except ValueError as exc:
        print(f"nsbi problems generate: {exc}", file=sys.stderr)
        return 2
    if not (args.mu_true >= 0 and args.events_scale > 0):
        print(
            "nsbi problems generate: --mu-true must be >= 0 and --events-scale > 0", file=sys.stderr
        )
        return 2
    t0 = time.perf_counter()
    out: Path = args.dir
    out.mkdir(parents=True, exist_ok=True)
    files = problem.write_samples(out, seed=args.seed, events_scale=args.events_scale)
    data_seed = 1000 * args.seed + 999  # the samples use 1000 * seed + 1, 2, ...
    data_path = problem.write_pseudo_data(out / "data.parquet", args.mu_true, seed=data_seed)
    config = problem.analysis_config(
        out, mu_true=args.mu_true, observed=None if args.asimov else "data.parquet", relative_to=out
    )
    header = (
        f"# Benchmark problem {problem.name} (exact likelihood), written by `nsbi problems generate`.\n"
        f"# mu_true = {args.mu_true:g}, seed = {args.seed}, events scale = {args.events_scale:g};"
        " the exact-ratio reference fit is in truth.json.\n"
    )
    (out / "analysis.yaml").write_text(header + yaml.safe_dump(config, sort_keys=False))

    names = problem.feature_names
    norm = read_parquet(files[problem.reference], names)
    if args.asimov:
        parts = [
            (read_parquet(files[c], names), problem.coefficient(c, args.mu_true))
            for c in problem.processes
        ]
        parts = [(s, m) for s, m in parts if m != 0.0]
        data = Sample(
            np.concatenate([s.features for s, _ in parts]),
            np.concatenate([s.weights * m for s, m in parts]),
            names,
            f"Asimov at mu={args.mu_true:g} from the samples",
        )
    else:
        data = read_parquet(data_path, names, weight=False)
    truth = {
        "problem": problem.name,
        "description": problem.description,
        "mu_true": args.mu_true,
        "seed": args.seed,
        "pseudo_data_seed": data_seed,
        "events_scale": args.events_scale,
        "data": "asimov" if args.asimov else data_path.name,
        "n_data_events": len(data),
        "expected_events": problem.expected_events(args.mu_true),
        "processes": list(problem.processes),
        "reference": problem.reference,
        "coefficients": dict(problem.coefficients),
        "yields": {c: problem.yield_(c) for c in problem.processes},
        "nuisances": {k: list(problem.shape_processes.get(k, ())) for k in problem.nuisances},
        "norm_only": {k: {c: list(v) for c, v in e.items()} for k, e in problem.norm_only.items()},
        "features": list(names),
        "samples": {k: p.name for k, p in files.items()},
        "normalisation_sample": files[problem.reference].name,
    }
    if not args.no_truth:
        truth["reference_fit"] = exact_reference_fit(problem, data, norm)
    (out / "truth.json").write_text(json.dumps(truth, indent=2, default=float) + "\n")
    what = (
        f"Asimov data at mu={args.mu_true:g} ({len(data)} weighted events)"
        if args.asimov
        else f"{data_path.name} ({len(data)} events)"
    )
    print(
        f"{problem.name}: wrote {len(files)} samples, {what}, analysis.yaml, "
        f"truth.json to {out} in {time.perf_counter() - t0:.1f} s"
    )
    if "reference_fit" in truth:
        fit = truth["reference_fit"]
        ref = fit["numpy_minuit"]
        print(
            f"exact-ratio fit: mu-hat = {fit['mu_hat']:.4f} +- {fit['sigma']:.4f} (project), "
            f"{ref['mu_hat']:.4f} +- {ref['sigma']:.4f} (NumPy + iminuit)"
        )
    print(f"next: nsbi analysis validate {out / 'analysis.yaml'}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.problems_command == "list":
        return _list(args)
    if args.problems_command == "generate":
        return _generate(args)
    print("usage: nsbi problems {list,generate} ...", file=sys.stderr)
    return 2
