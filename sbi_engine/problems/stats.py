r"""`low_stats` and `high_stats`: one simple two-feature problem at a few hundred and at
~100 000 expected events.

Observables (x, y) on [0, 5] x R. Background: x ~ Exp(0.8 lambda) truncated to [0, 5], y ~
N(0, 1); signal: x ~ N(2, 0.6) truncated to [0, 5], y ~ N(0.3, 0.8). Coefficients mu (S) and 1
(B). Nuisances: `bkg_slope` (shape on B): lambda = 1.1^alpha; `bkg_xs` (norm only, B): 1.05 /
0.95.

  * low_stats:  nu_S = 50,    nu_B = 250     (300 expected events at mu = 1)
  * high_stats: nu_S = 8000,  nu_B = 92 000  (100 000 expected events at mu = 1)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .base import (
    BenchmarkProblem,
    normal_logpdf,
    trunc_exp_draw,
    trunc_exp_logpdf,
    trunc_normal_draw,
    trunc_normal_logpdf,
)

_HI = 5.0
_LAMBDA = 0.8
_SLOPE_SIZE = 0.10


class _StatsProblem(BenchmarkProblem):
    processes = ("S", "B")
    reference = "B"
    coefficients = {"S": "mu", "B": "1"}
    feature_names = ("x", "y")
    nuisances = ("bkg_slope",)
    shape_processes = {"bkg_slope": ("B",)}
    norm_only = {"bkg_xs": {"B": (1.05, 0.95)}}
    bounds = ((0.0, _HI), (-10.0, 10.0))
    nu_s: float = 0.0
    nu_b: float = 0.0

    def _yield(self, process: str, alpha: Mapping[str, float]) -> float:
        return self.nu_s if process == "S" else self.nu_b

    def _lam(self, alpha: Mapping[str, float]) -> float:
        return _LAMBDA * (1.0 + _SLOPE_SIZE) ** alpha.get("bkg_slope", 0.0)

    def _log_density(self, process: str, x: np.ndarray, alpha: Mapping[str, float]) -> np.ndarray:
        if process == "S":
            return trunc_normal_logpdf(x[:, 0], 2.0, 0.6, 0.0, _HI) + normal_logpdf(
                x[:, 1], 0.3, 0.8
            )
        return trunc_exp_logpdf(x[:, 0], self._lam(alpha), 0.0, _HI) + normal_logpdf(
            x[:, 1], 0.0, 1.0
        )

    def _draw(
        self, process: str, n: int, rng: np.random.Generator, alpha: Mapping[str, float]
    ) -> np.ndarray:
        if process == "S":
            return np.stack(
                [trunc_normal_draw(rng, n, 2.0, 0.6, 0.0, _HI), rng.normal(0.3, 0.8, n)], axis=1
            )
        return np.stack(
            [trunc_exp_draw(rng, n, self._lam(alpha), 0.0, _HI), rng.normal(0.0, 1.0, n)], axis=1
        )


class LowStatsProblem(_StatsProblem):
    name = "low_stats"
    description = "simple two-feature signal + background with ~300 expected events; one shape, one norm-only systematic"
    nu_s, nu_b = 50.0, 250.0
    n_events = 100_000


class HighStatsProblem(_StatsProblem):
    name = "high_stats"
    description = "the low_stats problem with ~100k expected events"
    nu_s, nu_b = 8000.0, 92_000.0
    n_events = 150_000
