"""The demo analysis as plain functions: ratio tasks, Asimov data, and the fit of mu.

Why here: `nsbi demo` (headless) and the control plane's worker (a "fit" job after the
training jobs) run the same steps; keeping them in the engine means a notebook can too.

The demo uses B as the reference hypothesis, so the ratio tasks are S/B and SBI/B and
r_B = 1. With per-event ratios r_c = p_c / p_B the expected density is
nu(mu) p(x|mu) / p_B(x) = sum_c m_c(mu) nu_c r_c(x), which is what the fit workspace needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .demo import DemoProblem, default_problem
from .precision import enable_float64
from .sample import Sample

REFERENCE = "B"
COEFFICIENTS = {"S": "mu - sqrt(mu)", "SBI": "sqrt(mu)", "B": "1 - sqrt(mu)"}
RATIO_PROCESSES = ("S", "SBI")  # processes that need a trained ratio against the reference

LogRatioFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class RatioTask:
    """One classifier ensemble to train: numerator sample spec against denominator spec."""

    name: str
    process: str
    numerator: dict
    denominator: dict

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def demo_ratio_tasks(
    n_per_class: int = 50_000, seed: int = 0, n_nuisances: int = 3
) -> list[RatioTask]:
    """The demo's ratio tasks (each process against the reference B) as sample specs.

    Numerator and denominator use distinct seeds so no event is shared between classes.
    """
    ref = {
        "demo": {
            "process": REFERENCE,
            "n": n_per_class,
            "seed": seed + 1000,
            "n_nuisances": n_nuisances,
        }
    }
    return [
        RatioTask(
            name=f"{proc}_vs_{REFERENCE}",
            process=proc,
            numerator={
                "demo": {
                    "process": proc,
                    "n": n_per_class,
                    "seed": seed + 1 + i,
                    "n_nuisances": n_nuisances,
                }
            },
            denominator=ref,
        )
        for i, proc in enumerate(RATIO_PROCESSES)
    ]


def asimov_sample(problem: DemoProblem, mu: float, n_per_process: int, seed: int) -> Sample:
    """Weighted Asimov events at `mu`: each process's own simulation times its coefficient.

    Events are fresh draws (seeds far from the training ones), so the fit never sees
    training events. Processes whose coefficient vanishes at `mu` contribute no events.
    The weights sum to nu(mu) up to the simulation's statistical precision.
    """
    from .fit import parse_expression

    parts: list[Sample] = []
    for i, (proc, expr) in enumerate(COEFFICIENTS.items()):
        coeff = float(parse_expression(expr, ["mu"], where=f"process {proc!r}")({"mu": mu}, np))
        if abs(coeff) < 1e-12:
            continue
        s = problem.sample(proc, n_per_process, seed=seed + 7919 * (i + 1))
        parts.append(
            Sample(s.features, s.weights * coeff, s.names, f"asimov[{proc} x {coeff:.4g}]")
        )
    return Sample(
        np.concatenate([p.features for p in parts]),
        np.concatenate([p.weights for p in parts]),
        parts[0].names,
        f"demo Asimov at mu={mu}",
    )


def exact_log_ratios(problem: DemoProblem) -> dict[str, LogRatioFn]:
    """The analytic log r_c(x) = log p_c(x) / p_B(x), for comparison with trained ensembles."""

    def ratio(proc: str) -> LogRatioFn:
        return lambda x: problem.log_ratio(proc, REFERENCE, x)

    return {proc: ratio(proc) for proc in RATIO_PROCESSES}


def normalised(log_ratios: Mapping[str, LogRatioFn], reference: Sample) -> dict[str, LogRatioFn]:
    """Shift each log r-hat so that E_ref[r-hat] = 1 on `reference` (as `learned_ratios.task_ratios`
    does for the members of trained ensembles)."""

    def shifted(fn: LogRatioFn, shift: float) -> LogRatioFn:
        return lambda x: np.asarray(fn(x)) - shift

    out: dict[str, LogRatioFn] = {}
    for proc, fn in log_ratios.items():
        shift = float(
            np.log(
                np.sum(reference.weights * np.exp(fn(reference.features)))
                / np.sum(reference.weights)
            )
        )
        out[proc] = shifted(fn, shift)
    return out


def demo_workspace(problem: DemoProblem, data: Sample, log_ratios: Mapping[str, LogRatioFn]):
    """A POI-only fit workspace for the demo, with per-event ratios from `log_ratios`."""
    from .fit import Workspace

    x = data.features
    ratios = {
        proc: np.exp(np.asarray(log_ratios[proc](x), dtype=np.float64)) for proc in RATIO_PROCESSES
    }
    ratios[REFERENCE] = np.ones(len(x))
    return Workspace.from_arrays(
        pois={"mu": {"init": 1.0, "bounds": (0.0, 20.0)}},
        processes={
            proc: {
                "yield": problem.yield_(proc),
                "coefficient": COEFFICIENTS[proc],
                "ratio": ratios[proc],
            }
            for proc in COEFFICIENTS
        },
        weights=np.asarray(data.weights, dtype=np.float64),
    )


@dataclass(frozen=True)
class DemoFitReport:
    """mu-hat +- sigma from the learned ratios, next to the same fit with the exact ratios."""

    mu_true: float
    mu_hat: float
    sigma: float
    exact_mu_hat: float
    exact_sigma: float
    converged: bool
    n_events: int
    sum_weights: float
    fit: dict = field(repr=False)

    @property
    def pull(self) -> float:
        return (self.mu_hat - self.mu_true) / self.sigma

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pull"] = self.pull
        return d

    def summary(self) -> str:
        return (
            f"mu-hat = {self.mu_hat:.3f} +- {self.sigma:.3f}  (true mu = {self.mu_true:g}, pull {self.pull:+.2f})\n"
            f"exact-ratio fit: mu-hat = {self.exact_mu_hat:.3f} +- {self.exact_sigma:.3f}"
        )


def fit_demo_asimov(
    log_ratios: Mapping[str, LogRatioFn],
    *,
    mu_true: float = 1.0,
    n_per_process: int = 20_000,
    seed: int = 20_000,
    problem: DemoProblem | None = None,
) -> DemoFitReport:
    """Fit mu on demo Asimov events with the given (learned) log-ratio functions.

    `log_ratios` maps "S" and "SBI" to functions x -> log r_c(x); an `Ensemble`'s
    `lambda x: ens.log_ratio(x)[0]` fits, as does `exact_log_ratios(problem)`.
    """
    from .fit import fit

    enable_float64()
    problem = problem or default_problem()
    data = asimov_sample(problem, mu_true, n_per_process, seed)
    reference = problem.sample(REFERENCE, n_per_process, seed=seed + 104_729)
    # Like with like: both sets of ratios normalised on the same reference sample, so the only
    # difference between the two fits is what the networks got wrong.
    learned = fit(demo_workspace(problem, data, normalised(log_ratios, reference)))
    exact = fit(demo_workspace(problem, data, normalised(exact_log_ratios(problem), reference)))
    return DemoFitReport(
        mu_true=mu_true,
        mu_hat=float(learned.values["mu"]),
        sigma=float(learned.errors["mu"]),
        exact_mu_hat=float(exact.values["mu"]),
        exact_sigma=float(exact.errors["mu"]),
        converged=bool(learned.converged),
        n_events=len(data),
        sum_weights=float(np.sum(data.weights)),
        fit=learned.to_dict(),
    )


def ensemble_log_ratio(ensemble: Any) -> LogRatioFn:
    """Adapt an `Ensemble` to the x -> log r(x) form used above (mean-ratio aggregation)."""
    return lambda x: ensemble.log_ratio(x)[0]
