r"""`correlated5`: five correlated Gaussian features, signal + background.

x in R^5. Background: N(0, Sigma_B) with unit variances and AR(1) correlations 0.6^|i-j|.
Signal: N(m_S, Sigma_S), m_S = (0.8, 0.6, 0.4, 0.2, 0.0), standard deviations 0.7 and equal
correlations 0.4 (a different correlation structure, so log p_S / p_B is a full quadratic form
in x and no single feature carries the information). Yields nu_S = 200, nu_B = 5000;
coefficients mu (S) and 1 (B).

Nuisance `bkg_shift` (shape + norm, on B): the background mean moves to
0.08 alpha (1, 0.5, 0, -0.5, -1) and its yield scales by 1.03^alpha. Everything is closed form
(Cholesky log-densities) and sampled exactly (x = m + L z).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .base import BenchmarkProblem

_D = 5
_N_S, _N_B = 200.0, 5000.0
_MEAN_S = np.array([0.8, 0.6, 0.4, 0.2, 0.0])
_SHIFT = 0.08 * np.array([1.0, 0.5, 0.0, -0.5, -1.0])
_NORM_SIZE = 0.03


def _cov_b() -> np.ndarray:
    i = np.arange(_D)
    return 0.6 ** np.abs(i[:, None] - i[None, :])


def _cov_s() -> np.ndarray:
    corr = np.full((_D, _D), 0.4) + 0.6 * np.eye(_D)
    return 0.49 * corr


class _MVN:
    def __init__(self, mean: np.ndarray, cov: np.ndarray):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.chol = np.linalg.cholesky(cov)
        self.log_norm = -0.5 * _D * math.log(2 * math.pi) - float(
            np.sum(np.log(np.diag(self.chol)))
        )

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        from scipy.linalg import solve_triangular  # noqa: PLC0415

        z = solve_triangular(self.chol, (x - self.mean).T, lower=True)
        return self.log_norm - 0.5 * np.sum(z * z, axis=0)

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.mean + rng.standard_normal((n, _D)) @ self.chol.T


class Correlated5Problem(BenchmarkProblem):
    name = "correlated5"
    description = "five correlated Gaussian features (different correlation structures for S and B); one shape systematic"
    processes = ("S", "B")
    reference = "B"
    coefficients = {"S": "mu", "B": "1"}
    feature_names = tuple(f"x{i + 1}" for i in range(_D))
    nuisances = ("bkg_shift",)
    shape_processes = {"bkg_shift": ("B",)}
    norm_only: dict = {}
    bounds = tuple((-9.0, 9.0) for _ in range(_D))
    n_events = 100_000

    def _dist(self, process: str, alpha: Mapping[str, float]) -> _MVN:
        if process == "S":
            return _MVN(_MEAN_S, _cov_s())
        return _MVN(_SHIFT * alpha.get("bkg_shift", 0.0), _cov_b())

    def _yield(self, process: str, alpha: Mapping[str, float]) -> float:
        return _N_S if process == "S" else _N_B * (1.0 + _NORM_SIZE) ** alpha.get("bkg_shift", 0.0)

    def _log_density(self, process: str, x: np.ndarray, alpha: Mapping[str, float]) -> np.ndarray:
        return self._dist(process, alpha).logpdf(x)

    def _draw(
        self, process: str, n: int, rng: np.random.Generator, alpha: Mapping[str, float]
    ) -> np.ndarray:
        return self._dist(process, alpha).draw(n, rng)

    def marginal(
        self, process: str, j: int, alpha: Mapping[str, float] | None = None
    ) -> tuple[float, float]:
        """(mean, sd) of feature j under p_c (the marginals of a Gaussian are Gaussian)."""
        d = self._dist(process, self._alpha(alpha))
        cov = d.chol @ d.chol.T
        return float(d.mean[j]), float(math.sqrt(cov[j, j]))
