"""How close does one ratio ensemble get to the truth on a benchmark problem, per training setting?

A study, not a test: it trains one ratio task of a benchmark problem (numerator against
denominator, as the analysis path does, on 70 % of the simulated events) and measures, on
pseudo-data at mu = 1, the ensemble's error against the exact log ratio relative to the
ratio's spread (noise/signal), the member error and spread, and the regression slope of the
learned on the true log ratio. docs/validation.md tabulates it for `interference`.

It also measures what that error does to mu-hat: on ``--datasets`` fresh pseudo-data sets at
mu = 1 a POI-only fit (nuisances at nominal, every other ratio exact) with the learned and
with the exact ratio; the mean and the scatter of their difference in units of the exact
sigma say how far one closure point may fall from the exact fit by network noise alone.
``--sign-model`` trains a numerator with negative weights as |w| against the denominator
times a classifier of its negative against its positive part (the usual NLO remedy).

    python -m benchmarks.ratio_noise --problem interference --scale 5 \\
        --config '{"max_steps": 10000, "patience": 10}' --json out.json
    python -m benchmarks.ratio_noise --problem negative_weights --numerator S --sign-model
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

TRAIN_SHARE = 0.7  # the analysis path keeps 30 % of every sample for evaluation


def _sign_model_log_ratio(num: Any, den: Any, config: Any) -> tuple[Any, int]:
    """log r for a signed numerator: |w| against den, times (1 - 2 f_neg) from a sign classifier."""
    from sbi_engine.ratio.train import train_ensemble
    from sbi_engine.sample import Sample

    w = num.weights
    pos = w > 0
    if pos.all():
        raise SystemExit(f"--sign-model: {num.source} has no negative weights")
    absolute = Sample(num.features, np.abs(w), num.names, num.source + " |w|")
    positive = Sample(num.features[pos], w[pos], num.names, num.source + " w>0")
    negative = Sample(num.features[~pos], -w[~pos], num.names, num.source + " w<0")
    abs_fit = train_ensemble(absolute, den, config)
    sign_fit = train_ensemble(negative, positive, config)
    w_pos, w_neg = float(w[pos].sum()), float(-w[~pos].sum())

    def log_ratio(x: Any) -> np.ndarray:
        log_abs = abs_fit.ensemble.log_ratio(x)[0].astype(np.float64)
        q = np.exp(sign_fit.ensemble.log_ratio(x)[0].astype(np.float64))  # p_neg / p_pos
        f_neg = w_neg * q / (w_pos + w_neg * q)
        signed = np.maximum((1.0 - 2.0 * f_neg) * (w_pos + w_neg) / (w_pos - w_neg), 1e-12)
        return log_abs + np.log(signed)

    return log_ratio, abs_fit.steps_run + sign_fit.steps_run


def _poi_only_nll(
    problem: Any, log_r: dict[str, np.ndarray], norm: dict[str, float]
) -> Callable[[float], float]:
    """The extended NLL in mu with nuisances at nominal, given per-process log ratios on the data."""
    yields = {c: problem.yield_(c) for c in problem.processes}
    rates = {c: yields[c] * np.exp(log_r[c]) / norm[c] for c in problem.processes}

    def nll(mu: float) -> float:
        m = {c: problem.coefficient(c, mu) for c in problem.processes}
        intensity = sum(m[c] * rates[c] for c in problem.processes)
        return float(
            -np.sum(np.log(np.maximum(intensity, 1e-300))) + sum(m[c] * yields[c] for c in m)
        )

    return nll


def _mu_hat(nll: Callable[[float], float]) -> float:
    from scipy.optimize import minimize_scalar

    return float(minimize_scalar(nll, bounds=(0.0, 6.0), method="bounded").x)


def _curvature_sigma(nll: Callable[[float], float], mu: float, h: float = 1e-3) -> float:
    """sigma from a finite-difference second derivative of the NLL (mu kept off the bound)."""
    mu = max(mu, 2 * h)
    second = (nll(mu + h) - 2 * nll(mu) + nll(mu - h)) / h**2
    return float(1.0 / np.sqrt(max(second, 1e-300)))


def fit_scatter(
    problem: Any, numerator: str, denominator: str, learned: Any, datasets: int
) -> dict[str, float]:
    """Learned minus exact POI-only mu-hat over fresh pseudo-data sets, in exact-sigma units."""
    ref = problem.reference
    norm_sample = problem.sample(ref, 30_000, seed=99)
    exact_norm = {c: 1.0 for c in problem.processes}
    learned_norm = dict(exact_norm)

    def learned_log_r(x: Any) -> np.ndarray:  # numerator against the reference
        return learned(x) + problem.log_ratio(denominator, x)

    # Both fits normalise the numerator on the same simulated sample, as the closure does, so its
    # own statistical fluctuation cancels in the difference.
    w = norm_sample.weights
    learned_norm[numerator] = float(np.sum(w * np.exp(learned_log_r(norm_sample))) / np.sum(w))
    exact_norm[numerator] = float(
        np.sum(w * np.exp(problem.log_ratio(numerator, norm_sample))) / np.sum(w)
    )
    diffs, sigmas = [], []
    for k in range(datasets):
        data = problem.pseudo_data(1.0, seed=1000 + k)
        exact = {c: problem.log_ratio(c, data) for c in problem.processes}
        swapped = {**exact, numerator: learned_log_r(data)}
        exact_nll = _poi_only_nll(problem, exact, exact_norm)
        mu_exact = _mu_hat(exact_nll)
        diffs.append(_mu_hat(_poi_only_nll(problem, swapped, learned_norm)) - mu_exact)
        sigmas.append(_curvature_sigma(exact_nll, mu_exact))
    d = np.asarray(diffs) / np.asarray(sigmas)
    return {
        "datasets": datasets,
        "learned_normalisation": learned_norm[numerator],
        "exact_normalisation": exact_norm[numerator],
        "dmu_mean_over_sigma": float(d.mean()),
        "dmu_sd_over_sigma": float(d.std(ddof=1)) if datasets > 1 else 0.0,
        "dmu_max_abs_over_sigma": float(np.abs(d).max()),
    }


def study(
    problem_name: str,
    numerator: str,
    denominator: str,
    scale: float,
    config: dict[str, Any],
    *,
    datasets: int = 20,
    sign_model: bool = False,
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
    if sign_model:
        learned, steps_run = _sign_model_log_ratio(num, den, TrainConfig(**settings))
        log_r, spread, members = learned(data), np.zeros(1), learned(data)[None, :]
    else:
        result = train_ensemble(num, den, TrainConfig(**settings))
        steps_run = result.steps_run

        def learned(x: Any) -> np.ndarray:
            return result.ensemble.log_ratio(x)[0].astype(np.float64)

        log_r, spread = result.ensemble.log_ratio(data)
        members = result.ensemble.member_log_ratios(data).astype(np.float64)
    train_s = round(time.perf_counter() - t0, 1)
    err = log_r - truth
    return {
        "problem": problem_name,
        "task": f"{numerator}_vs_{denominator}",
        "events_per_class": n,
        "config": settings,
        "sign_model": sign_model,
        "steps_run": steps_run,
        "train_s": train_s,
        "signal": float(np.std(truth)),
        "error": float(np.std(err)),
        "noise_to_signal": float(np.std(err) / np.std(truth)),
        "member_error": float(np.mean([np.std(m - truth) for m in members])),
        "member_spread": float(np.median(spread)),
        "slope": float(np.polyfit(truth, log_r, 1)[0]),
        "poi_only_fit": fit_scatter(problem, numerator, denominator, learned, datasets)
        if datasets
        else None,
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
    ap.add_argument(
        "--datasets", type=int, default=20, help="pseudo-data sets for the POI-only fit (0: none)"
    )
    ap.add_argument(
        "--sign-model", action="store_true", help="|w| classifier times a sign classifier"
    )
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args(argv)
    out = study(
        args.problem,
        args.numerator,
        args.denominator,
        args.scale,
        json.loads(args.config),
        datasets=args.datasets,
        sign_model=args.sign_model,
    )
    text = json.dumps(out, indent=2)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
