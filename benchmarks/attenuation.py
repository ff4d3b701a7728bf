"""Does an attenuation (regression-dilution) correction of the learned log ratios help the fit?

A study, not adopted code. On `interference` the learned SBI/B ratio's network noise is 60-74 %
of the part of the log ratio that the profiled nuisance shapes cannot mimic, and the profiled
fit with learned ratios has 0.50-0.61 of the exact fit's sigma and mu-hat 0.6 sigma low
(docs/validation.md, "The misses and their causes"): noise in the regressor reads as
information. The classical errors-in-variables remedy shrinks the noisy part towards its
fitted value by lambda = 1 - noise^2 / var(residual).

For every process ratio task: the nominal learned log ratio is regressed on [1, nuisance shape
directions] by weighted least squares over the data rows (as ``TaskRatios.signal`` does), and
only the residual is shrunk by lambda (noise^2: mean over the data rows of the member variance
of log r, ``TaskRatios.noise`` squared; var(residual): ``TaskRatios.signal`` with the shape
directions, squared). The same coefficients and lambda are applied to every row (data and
normalisation), and the ratio is renormalised on the normalisation sample (E_ref[r] = 1).

Training goes through the analysis path with the default training settings, as `nsbi closure`
does (backend/commands/closure.py); then, on ``--datasets`` fresh pseudo-data sets at
``--mu-true`` (not the training events), three profiled fits with the same normalisation
sample: exact ratios, learned ratios, learned ratios with the correction (a refit of the
learned workspace with the corrected ratio arrays, `sbi_engine.fit.variations`).

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


def attenuated_ratios(
    lf: Any, force_lambda: float | None = None
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, float | None]]]:
    """Corrected ratio arrays {process: r (n_rows,)} and, per task, lambda, noise and signal
    (``force_lambda`` 1: the uncorrected ratios through the same path, a check of the refit)."""
    from sbi_engine.learned_uncertainty import nuisance_shape_directions

    ws = lf.workspace
    rows = np.asarray(lf.data_rows)
    norm_rows = np.asarray(lf.norm_rows)
    w = np.abs(np.asarray(ws.data.weights, dtype=np.float64)[rows])
    shapes_all = nuisance_shape_directions(ws, np.arange(ws.n_events))
    design_all = np.column_stack([np.ones(ws.n_events), shapes_all])
    design = design_all[rows]
    v = np.asarray(ws.data.norm_weights, dtype=np.float64)[norm_rows]
    ratios: dict[str, np.ndarray] = {}
    info: dict[str, dict[str, float | None]] = {}
    for proc, task in sorted(lf.process_task.items()):
        r = lf.ratios[task]
        x = r.nominal[rows]
        sw = np.sqrt(w)
        coef, *_ = np.linalg.lstsq(design * sw[:, None], x * sw, rcond=None)
        resid = x - design @ coef
        mean = np.sum(w * resid) / np.sum(w)
        resid_var = float(np.sum(w * (resid - mean) ** 2) / np.sum(w))
        noise2 = r.noise(rows) ** 2
        lam = float(max(0.0, 1.0 - noise2 / resid_var)) if resid_var > 0 else 1.0
        if force_lambda is not None:
            lam = force_lambda
        fitted = design_all @ coef
        log_r = fitted + lam * (r.nominal - fitted)
        log_r -= np.log(np.sum(v * np.exp(log_r[norm_rows])) / np.sum(v))  # E_ref[r] = 1
        ratios[proc] = np.exp(log_r)
        info[task] = {
            "lambda": lam,
            "noise": float(np.sqrt(noise2)),
            "signal": float(np.sqrt(resid_var)),
            "noise_to_signal": float(np.sqrt(noise2 / resid_var)) if resid_var > 0 else None,
            "shape_directions": int(shapes_all.shape[1]),
        }
    return ratios, info


def _fit_summary(result: Any) -> dict[str, Any]:
    return {
        "mu_hat": float(result.values["mu"]),
        "sigma": float(result.errors["mu"]),
        "converged": bool(result.converged),
    }


def one_dataset(problem: Any, spec: dict, ensembles: dict, norm: Any, data: Any) -> dict:
    """Exact, learned and attenuation-corrected profiled fits on one pseudo-data set."""
    from sbi_engine.fit import fit
    from sbi_engine.fit.variations import Variant, refit_variants
    from sbi_engine.fit_jobs import build_learned_fit
    from sbi_engine.problems import exact_workspace

    lf = build_learned_fit(spec, ensembles, data=data)
    exact = _fit_summary(fit(exact_workspace(problem, data, norm)))
    learned_result = fit(lf.workspace)
    learned = _fit_summary(learned_result)
    ratios, info = attenuated_ratios(lf)
    same, _ = attenuated_ratios(lf, force_lambda=1.0)
    fits = refit_variants(
        lf.workspace, [Variant(ratios=ratios, label="attenuated"), Variant(ratios=same)]
    )
    j = list(fits.names).index("mu")
    corrected = {
        "mu_hat": float(fits.theta[0, j]),
        "sigma": float(fits.errors[0, j]),
        "converged": bool(fits.converged[0]),
        # lambda = 1 through the same refit path: must reproduce the learned fit
        "check_lambda1_mu_hat": float(fits.theta[1, j]),
        "check_lambda1_sigma": float(fits.errors[1, j]),
    }
    s = exact["sigma"]
    return {
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
    ensembles = _local(summary.result["ensembles"])
    params = spec["params"]
    norm = load_sample_spec(params["processes"][params["reference"]], role="eval")
    rows = []
    for k in range(datasets):
        data = problem.pseudo_data(mu_true, seed=seed + 5000 + k)  # not the closure's seeds
        row = one_dataset(problem, spec, ensembles, norm, data)
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
        "train_s": train_s,
        "seconds": time.monotonic() - t0,
        "summary": {
            key: _mean_sd([r[key] for r in rows])
            for key in (
                "learned_dmu_in_sigma",
                "learned_sigma_ratio",
                "corrected_dmu_in_sigma",
                "corrected_sigma_ratio",
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
