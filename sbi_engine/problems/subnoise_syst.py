r"""`subnoise_syst`: a shape systematic below the network noise floor, next to a real one.

Observables (x, y) on [0, 6] x R. Background: x ~ Exp(lambda_B) truncated to [0, 6], y ~
N(0, sigma_B); signal: x ~ N(2, 0.5) truncated to [0, 6], y ~ N(0.5, 0.7). Yields nu_S = 300,
nu_B = 6000; coefficients mu and 1.

Nuisances (both on B):
  * `tiny_slope` (shape only): lambda_B = 1.004^alpha. Its log shape ratio at alpha = +-1 is
    -+(0.004 x + log-normalisation) with sd 0.004 sd_B(x) ~ 0.0039 over the background: below the
    ~1 % noise floor of a trained ratio ensemble, so a learned shape ratio is mostly noise;
  * `bkg_width` (shape + norm): sigma_B = 1.1^alpha and nu_B x 1.04^alpha (log shape ratio sd
    ~ 0.12).
All densities are products of closed-form 1-D ones; sampling is by inverse CDF.
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

_HI = 6.0
_N_S, _N_B = 300.0, 6000.0
TINY_SIZE, WIDTH_SIZE, WIDTH_NORM = 0.004, 0.10, 0.04


class SubnoiseSystProblem(BenchmarkProblem):
    name = "subnoise_syst"
    description = (
        "signal + background in (x, y) with a shape systematic whose log shape ratio has sd ~0.004 "
        "(below the network noise floor) next to a real one"
    )
    processes = ("S", "B")
    reference = "B"
    coefficients = {"S": "mu", "B": "1"}
    feature_names = ("x", "y")
    nuisances = ("tiny_slope", "bkg_width")
    shape_processes = {"tiny_slope": ("B",), "bkg_width": ("B",)}
    norm_only: dict = {}
    bounds = ((0.0, _HI), (-12.0, 12.0))
    n_events = 100_000

    def _b_params(self, alpha: Mapping[str, float]) -> tuple[float, float]:
        return (1.0 + TINY_SIZE) ** alpha.get("tiny_slope", 0.0), (1.0 + WIDTH_SIZE) ** alpha.get(
            "bkg_width", 0.0
        )

    def _yield(self, process: str, alpha: Mapping[str, float]) -> float:
        return _N_S if process == "S" else _N_B * (1.0 + WIDTH_NORM) ** alpha.get("bkg_width", 0.0)

    def _log_density(self, process: str, x: np.ndarray, alpha: Mapping[str, float]) -> np.ndarray:
        if process == "S":
            return trunc_normal_logpdf(x[:, 0], 2.0, 0.5, 0.0, _HI) + normal_logpdf(
                x[:, 1], 0.5, 0.7
            )
        lam, sd = self._b_params(alpha)
        return trunc_exp_logpdf(x[:, 0], lam, 0.0, _HI) + normal_logpdf(x[:, 1], 0.0, sd)

    def _draw(
        self, process: str, n: int, rng: np.random.Generator, alpha: Mapping[str, float]
    ) -> np.ndarray:
        if process == "S":
            return np.stack(
                [trunc_normal_draw(rng, n, 2.0, 0.5, 0.0, _HI), rng.normal(0.5, 0.7, n)], axis=1
            )
        lam, sd = self._b_params(alpha)
        return np.stack([trunc_exp_draw(rng, n, lam, 0.0, _HI), rng.normal(0.0, sd, n)], axis=1)
