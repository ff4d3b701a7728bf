r"""`negative_weights`: an NLO-like signal simulation with ~14 % negative weights.

Observables (x, y) in R^2. The true signal density is a signed combination of two Gaussians
with the same centre (2.5, 0.5),

    p_S = (1 + eps) g1 - eps g2,   g1 = N(., 1^2 I),  g2 = N(., 0.5^2 I),  eps = 0.2,

positive everywhere because g2 / g1 <= (1 / 0.5)^2 = 4 < (1 + eps) / eps = 6 (a flattened
peak). The simulation, like an NLO generator with subtraction terms, draws n1 events from g1
with weight +nu_S (1 + eps) / n1 and n2 events from g2 with weight -nu_S eps / n2, with
n1 / n2 = (1 + eps) / eps: unbiased for every integral of p_S, weights summing to nu_S exactly,
a fraction eps / (1 + 2 eps) ~ 14 % of them negative. Exact draws of p_S (pseudo-data) are by
accept/reject from g1 with acceptance 1 - eps g2 / ((1 + eps) g1) in [1/3, 1].

Background: x ~ N(0, 2 sigma), y ~ N(0, 1.5). Yields nu_S = 250, nu_B = 5000; coefficients mu
and 1. Nuisances: `bkg_scale` (shape on B): sigma = 1.08^alpha; `sig_xs` (norm only, S):
1.10 / 0.90.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .base import BenchmarkProblem, normal_logpdf

EPS = 0.2
_CENTRE = (2.5, 0.5)
_SD1, _SD2 = 1.0, 0.5
_N_S, _N_B = 250.0, 5000.0
_SCALE_SIZE = 0.08


class NegativeWeightsProblem(BenchmarkProblem):
    name = "negative_weights"
    description = (
        "NLO-like signal simulation with ~14 % negative weights (signed decomposition of a positive "
        "density) over a Gaussian background; one shape and one norm-only systematic"
    )
    processes = ("S", "B")
    reference = "B"
    coefficients = {"S": "mu", "B": "1"}
    feature_names = ("x", "y")
    nuisances = ("bkg_scale",)
    shape_processes = {"bkg_scale": ("B",)}
    norm_only = {"sig_xs": {"S": (1.10, 0.90)}}
    bounds = ((-22.0, 22.0), (-16.0, 16.0))
    negative_weight_processes = ("S",)
    n_events = 100_000

    def _g(self, x: np.ndarray, sd: float) -> np.ndarray:
        return normal_logpdf(x[:, 0], _CENTRE[0], sd) + normal_logpdf(x[:, 1], _CENTRE[1], sd)

    def _yield(self, process: str, alpha: Mapping[str, float]) -> float:
        return _N_S if process == "S" else _N_B

    def _log_density(self, process: str, x: np.ndarray, alpha: Mapping[str, float]) -> np.ndarray:
        if process == "S":
            l1, l2 = self._g(x, _SD1), self._g(x, _SD2)
            return np.log1p(EPS) + l1 + np.log1p(-EPS / (1.0 + EPS) * np.exp(l2 - l1))
        sd = 2.0 * (1.0 + _SCALE_SIZE) ** alpha.get("bkg_scale", 0.0)
        return normal_logpdf(x[:, 0], 0.0, sd) + normal_logpdf(x[:, 1], 0.0, 1.5)

    def _draw_g(self, n: int, sd: float, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(_CENTRE) + sd * rng.standard_normal((n, 2))

    def _draw(
        self, process: str, n: int, rng: np.random.Generator, alpha: Mapping[str, float]
    ) -> np.ndarray:
        if process == "B":
            sd = 2.0 * (1.0 + _SCALE_SIZE) ** alpha.get("bkg_scale", 0.0)
            return np.stack([rng.normal(0.0, sd, n), rng.normal(0.0, 1.5, n)], axis=1)
        chunks, have = [], 0
        while have < n:
            m = max(2 * (n - have), 256)
            cand = self._draw_g(m, _SD1, rng)
            acc = 1.0 - EPS / (1.0 + EPS) * np.exp(self._g(cand, _SD2) - self._g(cand, _SD1))
            chunks.append(cand[rng.random(m) <= acc])
            have += chunks[-1].shape[0]
        return np.concatenate(chunks)[:n]

    def _simulate(
        self, process: str, n: int, rng: np.random.Generator, alpha: Mapping[str, float]
    ) -> tuple[np.ndarray, np.ndarray]:
        if process != "S":
            return super()._simulate(process, n, rng, alpha)
        nu = self.yield_(process, alpha)
        if n < 2:
            raise ValueError("the signed simulation needs n >= 2")
        n1 = min(max(int(round(n * (1.0 + EPS) / (1.0 + 2.0 * EPS))), 1), n - 1)
        n2 = n - n1
        x = np.concatenate([self._draw_g(n1, _SD1, rng), self._draw_g(n2, _SD2, rng)])
        w = np.concatenate([np.full(n1, nu * (1.0 + EPS) / n1), np.full(n2, -nu * EPS / n2)])
        perm = rng.permutation(n)
        return x[perm], w[perm]
