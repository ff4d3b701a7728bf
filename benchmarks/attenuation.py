"""Does the noise shrinkage of the learned log ratios help the fit? (regression dilution)

On `interference` the learned SBI/B ratio's network noise is 60-74 % of the part of the log
ratio that the profiled nuisance shapes cannot mimic, and the profiled fit with learned ratios
had 0.50-0.61 of the exact fit's sigma and mu-hat 0.6 sigma low (docs/validation.md): noise in
the regressor reads as information. The classical errors-in-variables remedy shrinks the noisy
part towards its fitted value by lambda = 1 - noise^2 / var(residual); the fit does this when
``options.shrink_noise`` is on (`sbi_engine.noise_shrinkage`, opt-in since session 9).

Training goes through the analysis path with the default training settings, as `nsbi closure`
does (backend/commands/closure.py); then, on ``--datasets`` fresh pseudo-data sets at
``--mu-true`` (not the training events), three profiled fits with the same normalisation
sample: exact ratios, learned ratios without the shrinkage, learned ratios with it.

    python -m benchmarks.attenuation --problem interference --datasets 5 --json out.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _fit_summary(result: Any) -> dict[str, Any]:
    return {
        "mu_hat": float(result.values["mu"]),
        "sigma": float(result.errors["mu"]),
        "converged": bool(result.converged),
    }


def logit_slope(spec: dict, ensembles: dict, task: str, proc: str) -> tuple[float, float]:
    """Slope b (and its error) of a weighted logistic regression of the label on the learned
    log ratio over the evaluation events of ``proc`` (1) and the reference (0), classes weighted
    to equal totals: b > 1 means the learned ratio is too flat on events it never saw."""
    from sbi_engine.learned_ratios import task_ratios
    from sbi_engine.ratio.diagnostics import logit_slope as slope_of
    from sbi_engine.sample_specs import load_sample_spec

    params = spec["params"]
    den = load_sample_spec(params["processes"][params["reference"]], role="eval")
    num = load_sample_spec(params["processes"][proc], role="eval")
    t = task_ratios(
        task,
        ensembles[task],
        np.concatenate([num.features, den.features]),
        den.features,
        den.weights,
    ).nominal
    return slope_of(t[: len(num)], t[len(num) :], num.weights, den.weights)


def one_dataset(
    problem: Any, spec: dict, ensembles: dict, norm: Any, data: Any, slopes: dict | None = None
) -> dict:
    """Exact, learned (no shrinkage), learned with the noise shrinkage and, with ``slopes``
    ({process: b}), learned with each process log ratio multiplied by its logit slope: profiled
    fits on one pseudo-data set."""
    from sbi_engine.fit import fit
    from sbi_engine.fit.variations import Variant, refit_variants
    from sbi_engine.fit_jobs import build_learned_fit
    from sbi_engine.problems import exact_workspace

    raw_spec = copy.deepcopy(spec)
    raw_spec["params"].setdefault("options", {})["shrink_noise"] = False
    exact = _fit_summary(fit(exact_workspace(problem, data, norm)))
    raw = build_learned_fit(raw_spec, ensembles, data=data)
    raw_result = fit(raw.workspace)
    learned = _fit_summary(raw_result)
    lf = build_learned_fit(spec, ensembles, data=data)
    corrected = _fit_summary(fit(lf.workspace))
    info = {x.task: x.to_dict() for x in lf.shrinkage}
    s = exact["sigma"]
    out: dict[str, Any] = {}
    if slopes:
        v = np.asarray(raw.workspace.data.norm_weights, dtype=np.float64)[raw.norm_rows]
        ratios = {}
        for proc, task in raw.process_task.items():
            log_r = raw.ratios[task].nominal * slopes[proc]
            log_r -= np.log(np.sum(v * np.exp(log_r[raw.norm_rows])) / np.sum(v))
            ratios[proc] = np.exp(log_r)
        fits = refit_variants(raw.workspace, [Variant(ratios=ratios)], init=raw_result)
        j = list(fits.names).index("mu")
        out = {
            "recalibrated_dmu_in_sigma": (float(fits.theta[0, j]) - exact["mu_hat"]) / s,
            "recalibrated_sigma_ratio": float(fits.errors[0, j]) / s,
        }
    return out | {
        "n_events": len(data),
        "exact": exact,
        "learned": learned,
        "corrected": corrected,
        "tasks": info,
        "learned_dmu_in_sigma": (learned["mu_hat"] - exact["mu_hat"]) / s,
        "learned_sigma_ratio": learned["sigma"] / s,
        "corrected_dmu_in_sigma": (corrected["mu_hat"] - exact["mu_hat"]) / s,
        "corrected_sigma_ratio": corrected["sigma"] / s,
    }


def _mean_sd(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if a.size > 1 else 0.0}


def study(
    problem_name: str,
    mu_true: float,
    datasets: int,
    workdir: Path,
    seed: int = 0,
    events_scale: float = 1.0,
    training: dict | None = None,
) -> dict[str, Any]:
    from backend.analysis.run import run_analysis
    from backend.commands.closure import _analysis_file, _fit_spec, _local
    from sbi_engine.problems import get_problem
    from sbi_engine.sample_specs import load_sample_spec

    problem = get_problem(problem_name)
    t0 = time.monotonic()
    path = _analysis_file(problem, workdir / problem_name, seed, events_scale, training)
    summary = run_analysis(
        path, backend="local", report_dir=workdir / problem_name / "report", progress=False
    )
    if summary.status != "SUCCEEDED":
        raise SystemExit(f"analysis campaign {summary.campaign_id} ended {summary.status}")
    train_s = time.monotonic() - t0
    spec = copy.deepcopy(_fit_spec(summary.campaign_id))
    spec["params"]["mu_true"] = mu_true
    spec["params"].setdefault("options", {})["shrink_noise"] = True
    ensembles = _local(summary.result["ensembles"])
    params = spec["params"]
    norm = load_sample_spec(params["processes"][params["reference"]], role="eval")
    process_tasks = {t["process"]: n for n, t in params["tasks"].items() if t["kind"] == "process"}
    slopes = {p: logit_slope(spec, ensembles, t, p) for p, t in process_tasks.items()}
    print(f"logit slopes on evaluation events: {slopes}", file=sys.stderr, flush=True)
    rows = []
    for k in range(datasets):
        data = problem.pseudo_data(mu_true, seed=seed + 5000 + k)  # not the closure's seeds
        row = one_dataset(
            problem, spec, ensembles, norm, data, {p: b for p, (b, _) in slopes.items()}
        )
        rows.append(row)
        lam = ", ".join(f"{t} {i['lambda']:.3f}" for t, i in row["tasks"].items())
        print(
            f"{problem_name} data set {k}: exact {row['exact']['mu_hat']:.3f} +- "
            f"{row['exact']['sigma']:.3f}; learned dmu {row['learned_dmu_in_sigma']:+.2f} sigma, "
            f"ratio {row['learned_sigma_ratio']:.2f}; corrected dmu "
            f"{row['corrected_dmu_in_sigma']:+.2f}, ratio {row['corrected_sigma_ratio']:.2f}; "
            f"lambda {lam}",
            file=sys.stderr,
            flush=True,
        )
    tasks = sorted(rows[0]["tasks"]) if rows else []
    return {
        "problem": problem_name,
        "mu_true": mu_true,
        "datasets": datasets,
        "campaign": summary.campaign_id,
        "logit_slopes": {p: {"b": b, "error": e} for p, (b, e) in slopes.items()},
        "train_s": train_s,
        "seconds": time.monotonic() - t0,
        "summary": {
            key: _mean_sd([r[key] for r in rows])
            for key in (
                "learned_dmu_in_sigma",
                "learned_sigma_ratio",
                "corrected_dmu_in_sigma",
                "corrected_sigma_ratio",
                "recalibrated_dmu_in_sigma",
                "recalibrated_sigma_ratio",
            )
        }
        | {f"lambda {t}": _mean_sd([r["tasks"][t]["lambda"] for r in rows]) for t in tasks}
        | {
            f"noise_to_signal {t}": _mean_sd([r["tasks"][t]["noise_to_signal"] for r in rows])
            for t in tasks
        },
        "per_dataset": rows,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="interference")
    ap.add_argument("--mu-true", type=float, default=1.0)
    ap.add_argument("--datasets", type=int, default=5, help="fresh pseudo-data sets")
    ap.add_argument("--seed", type=int, default=0, help="seed of the samples (as nsbi closure)")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="samples, analysis file, report (default <NSBI_HOME>/attenuation)",
    )
    ap.add_argument("--events-scale", type=float, default=1.0, help="smoke runs: 0.1")
    ap.add_argument(
        "--training", type=json.loads, default=None, help="training overrides (smoke runs)"
    )
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args(argv)
    if args.workdir is None:
        from backend.settings import Settings

        args.workdir = Settings.from_env().home / "attenuation"
    os.makedirs(args.workdir, exist_ok=True)
    out = study(
        args.problem,
        args.mu_true,
        args.datasets,
        args.workdir,
        args.seed,
        args.events_scale,
        args.training,
    )
    text = json.dumps(out, indent=2, default=float)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(json.dumps(out["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
