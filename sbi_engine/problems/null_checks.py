"""Do the ensemble checks pass the truth? Every check a trained ratio must pass, run with the
exact ratio of a benchmark problem on fresh evaluation-size samples.

A check that fails for the true ratio fails for the problem, not for the networks: it marks
every result "needs review" and teaches users to ignore the flag. With the exact ratio every
failure is a false alarm, so repeating this over seeds measures each check's false-alarm
rate; scaling the exact log ratio by a slope below one (a ratio too flat, the usual way a
network errs) measures what the checks catch. ``python -m benchmarks.check_null`` runs it
over problems and seeds; tests run one seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from ..ratio.diagnostics import diagnostics
from ..result_checks import CheckRecord, ensemble_checks
from ..sample import Sample
from .base import BenchmarkProblem

EVAL_SHARE = 0.3  # the analysis path keeps 30 % of each sample for evaluation


@dataclass(frozen=True)
class RatioTask:
    """One ratio an analysis of the problem trains: numerator and denominator sample keys
    (`BenchmarkProblem.sample_names`) and the exact log ratio between them."""

    name: str
    numerator: str
    denominator: str
    log_ratio: Callable[[np.ndarray], np.ndarray]


def ratio_tasks(problem: BenchmarkProblem) -> list[RatioTask]:
    """The process ratios (``<process>_vs_<reference>``) and shape-systematic ratios
    (``<nuisance>_<up|down>_<process>``) of the problem's analysis file."""
    ref = problem.reference
    tasks = [
        RatioTask(f"{c}_vs_{ref}", c, ref, partial(problem.log_ratio, c))
        for c in problem.processes
        if c != ref
    ]
    for k in problem.nuisances:
        for c in problem.shape_processes.get(k, ()):
            for word, direction in (("up", 1.0), ("down", -1.0)):
                tasks.append(
                    RatioTask(
                        f"{k}_{word}_{c}",
                        f"{c}_{k}_{word}",
                        c,
                        partial(problem.shape_log_ratio, c, k, direction=direction),
                    )
                )
    return tasks


class _ExactEnsemble:
    """Stands where `diagnostics` expects an `Ensemble`: one member, the given log ratio."""

    def __init__(
        self, log_ratio: Callable[[np.ndarray], np.ndarray], names: tuple[str, ...], slope: float
    ):
        self._log_ratio, self.feature_names, self._slope = log_ratio, names, slope
        self.members = 1
        self.metadata: dict[str, Any] = {}

    def _z(self, sample: Sample) -> np.ndarray:
        return self._slope * np.asarray(self._log_ratio(sample.features), np.float64)

    def member_log_ratios(self, sample: Sample, chunk_size: int = 0) -> np.ndarray:
        return self._z(sample)[None, :]

    def log_ratio(
        self, sample: Sample, chunk_size: int = 0, aggregate: str = ""
    ) -> tuple[np.ndarray, np.ndarray]:
        z = self._z(sample)
        return z, np.zeros_like(z)


def truth_diagnostics(
    problem: BenchmarkProblem, seed: int, *, slope: float = 1.0, eval_share: float = EVAL_SHARE
) -> dict[str, dict[str, Any]]:
    """{task: diagnostics dict} with r-hat = exp(slope x exact log r) on fresh samples of
    ``eval_share`` of the problem's simulation size (seed ``seed``, none of the files' seeds)."""
    samples = problem.simulate_samples(seed=10_000 + seed, events_scale=eval_share)
    out: dict[str, dict[str, Any]] = {}
    for task in ratio_tasks(problem):
        ens: Any = _ExactEnsemble(task.log_ratio, problem.feature_names, slope)
        diag = diagnostics(ens, samples[task.numerator], samples[task.denominator])
        out[task.name] = diag.to_dict()
    return out


def truth_checks(
    problem: BenchmarkProblem, seed: int, *, slope: float = 1.0, eval_share: float = EVAL_SHARE
) -> dict[str, list[CheckRecord]]:
    """{task: its ensemble checks} for `truth_diagnostics`."""
    return {
        task: ensemble_checks(task, diag)
        for task, diag in truth_diagnostics(
            problem, seed, slope=slope, eval_share=eval_share
        ).items()
    }


def truth_calibration_effects(
    problem: BenchmarkProblem,
    seed: int,
    *,
    slope: float = 1.0,
    mu: float = 1.0,
    eval_share: float = EVAL_SHARE,
) -> list[dict[str, Any]]:
    """The ``calibration_effect`` record of every ratio task of the problem's exact fit.

    The fit: the exact workspace on pseudo-data at ``mu`` (seed ``seed``) with a fresh
    reference sample as normalisation rows. For each task in turn its log ratio is made
    ``slope`` x exact (the others stay exact), the fit is redone as the base, and the check
    recalibrates that ratio on fresh evaluation-size samples and refits, as a fit job does with
    a trained ensemble. With slope 1 the recalibration has nothing to correct: every shift is
    the method's own (noise or bias), and a failure is a false alarm. With slope < 1 the shift
    is the effect of a ratio too flat, which the check must see.
    """
    from types import SimpleNamespace

    from ..calibration_effect import TaskCalibration, effect_check, replaced_variant
    from ..fit import fit
    from ..fit.variations import refit_variants
    from ..learned_ratios import TaskRatios
    from ..ratio.diagnostics import calibration_curve
    from ..ratio.prepare import aligned_to, same_events
    from .reference import exact_workspace

    samples = problem.simulate_samples(seed=20_000 + seed, events_scale=eval_share)
    norm = problem.simulate_samples(seed=30_000 + seed, events_scale=eval_share)[problem.reference]
    data = problem.pseudo_data(mu, seed=40_000 + seed)
    ws = exact_workspace(problem, data, norm)
    x = np.concatenate([np.asarray(data.features), np.asarray(norm.features)])
    tasks = ratio_tasks(problem)
    ref = problem.reference
    exact = {t.name: np.asarray(t.log_ratio(x), np.float64) for t in tasks}
    view = SimpleNamespace(
        workspace=ws,
        process_task={c: f"{c}_vs_{ref}" for c in problem.processes if c != ref},
        shape_tasks={
            (k, c): (f"{k}_up_{c}", f"{k}_down_{c}")
            for k in problem.nuisances
            for c in problem.shape_processes.get(k, ())
        },
        ratios={},
        unshrunk={},
    )
    exact_fit = fit(ws)
    out = []
    for task in tasks:
        log_r = slope * exact[task.name]
        view.ratios = {n: TaskRatios(n, v[None, :], v) for n, v in exact.items()}
        view.ratios[task.name] = TaskRatios(task.name, log_r[None, :], log_r)
        base = (
            exact_fit
            if slope == 1.0
            else refit_variants(
                ws, [replaced_variant(view, task.name, log_r, "flat")], init=exact_fit
            ).results[0]
        )
        num = samples[task.numerator]
        den = aligned_to(num, samples[task.denominator])
        ln = slope * np.asarray(task.log_ratio(num.features), np.float64)
        ld = slope * np.asarray(task.log_ratio(den.features), np.float64)
        wn, wd = np.asarray(num.weights, np.float64), np.asarray(den.weights, np.float64)
        deviation = calibration_curve(ln, ld, wn, wd).global_deviation
        cal = TaskCalibration(task.name, float(deviation), ln, ld, wn, wd, same_events(num, den))
        out.append(effect_check(view, cal, base))
    return out
