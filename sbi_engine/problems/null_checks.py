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
