"""iminuit MIGRAD + HESSE on the same NLL: an alternative backend and the cross-check."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .model import Model
from .results import FitResult

__all__ = ["fit_minuit"]


def fit_minuit(
    model: Model,
    theta0: np.ndarray,
    mask: np.ndarray,
    data: Any,
    aux: np.ndarray,
    tol: float = 1e-4,
    strategy: int = 2,
    use_grad: bool = False,
) -> FitResult:
    """MIGRAD then HESSE (numerical derivatives unless ``use_grad``); errordef 1 for q = -2 ln L."""
    from iminuit import Minuit  # noqa: PLC0415

    def fcn(x):
        return model.nll(np.asarray(x), data, aux)

    def grad(x):
        return model.value_and_grad(np.asarray(x), data, aux)[1]

    t0 = time.perf_counter()
    m = Minuit(
        fcn,
        np.asarray(theta0, dtype=float),
        grad=grad if use_grad else None,
        name=list(model.names),
    )
    m.errordef = Minuit.LEAST_SQUARES
    m.strategy = strategy
    m.tol = tol
    m.limits = [
        (lo if np.isfinite(lo) else None, hi if np.isfinite(hi) else None)
        for lo, hi in zip(model.lower, model.upper)
    ]
    for i, f in enumerate(mask):
        m.fixed[i] = bool(f)
    m.migrad()
    m.hesse()
    theta = np.array(m.values, dtype=float)
    cov = np.zeros((model.n_params, model.n_params))
    if m.covariance is not None:
        cov = np.array(m.covariance, dtype=float)
        cov[mask, :] = 0.0
        cov[:, mask] = 0.0
    ok = bool(m.valid and m.accurate)
    H = np.zeros_like(cov)
    free = ~mask
    if ok:
        H[np.ix_(free, free)] = 2.0 * np.linalg.inv(cov[np.ix_(free, free)])
    fmin = m.fmin
    return FitResult(
        names=model.names,
        theta=theta,
        covariance=cov,
        hessian=H,
        q_min=float(m.fval),
        edm=float(fmin.edm),
        converged=ok,
        status=0 if ok else 1,
        message="converged" if ok else f"MIGRAD/HESSE not valid/accurate: {fmin}",
        n_iter=int(fmin.nfcn),
        fixed=tuple(n for n, f in zip(model.names, mask) if f),
        method="minuit",
        time_s=time.perf_counter() - t0,
        extra={"nfcn": int(fmin.nfcn)},
    )
