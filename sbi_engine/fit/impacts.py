"""Pulls, impacts (covariance and refit), ranking and the stat/syst breakdown.

Covariance impacts come from the implicit-function theorem at the best fit: fixing alpha_k at
alpha_k-hat + d moves the POI by ``d * C[poi, k] / C[k, k]`` to first order. Refit impacts fix
alpha_k at alpha_k-hat +- sigma (post-fit) and +- 1 (pre-fit) and refit everything else, reusing
the compiled fit (a fixed parameter is a mask, not a new shape). `refit_impacts` takes any
subset of nuisances so that a control plane can fan the work out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..precision import enable_float64
from .api import fit
from .model import Model, model_for
from .results import FitResult, to_jsonable
from .workspace import Workspace

__all__ = ["Impact", "pulls", "covariance_impacts", "refit_impacts", "ranking", "breakdown"]


@dataclass(frozen=True)
class Impact:
    """Shift of ``poi`` when ``nuisance`` is moved up/down pre-fit (+-1) and post-fit (+-sigma)."""

    poi: str
    nuisance: str
    prefit_up: float
    prefit_down: float
    postfit_up: float
    postfit_down: float
    method: str  # "covariance" | "refit"

    @property
    def size(self) -> float:
        return max(abs(self.postfit_up), abs(self.postfit_down))

    def to_dict(self) -> dict:
        return {
            "poi": self.poi,
            "nuisance": self.nuisance,
            "prefit_up": self.prefit_up,
            "prefit_down": self.prefit_down,
            "postfit_up": self.postfit_up,
            "postfit_down": self.postfit_down,
            "method": self.method,
        }


def _model(target: Workspace | Model) -> Model:
    """The target's model, JAX in float64 (every public function here starts with this)."""
    enable_float64()
    return target if isinstance(target, Model) else model_for(target)


def pulls(target: Workspace | Model, result: FitResult) -> dict[str, dict[str, float]]:
    """Per nuisance: pull (alpha-hat - a) / 1 and post-fit constraint sigma-hat / 1."""
    model = _model(target)
    out = {}
    for k, name in enumerate(model.nuisance_names):
        i = model.index[name]
        out[name] = {
            "value": float(result.theta[i]),
            "aux": float(model.aux[k]),
            "pull": float(result.theta[i] - model.aux[k]),
            "constraint": float(np.sqrt(max(result.covariance[i, i], 0.0))),
        }
    return out


def covariance_impacts(
    target: Workspace | Model, result: FitResult, pois: Sequence[str] | None = None
) -> list[Impact]:
    """Linear (implicit-function) impacts of every nuisance on each POI."""
    model = _model(target)
    C = result.covariance
    out = []
    for poi in pois or model.poi_names:
        p = model.index[poi]
        for name in model.nuisance_names:
            k = model.index[name]
            if C[k, k] <= 0:
                out.append(Impact(poi, name, 0.0, 0.0, 0.0, 0.0, "covariance"))
                continue
            slope = C[p, k] / C[k, k]
            sig = np.sqrt(C[k, k])
            out.append(
                Impact(
                    poi,
                    name,
                    float(slope),
                    float(-slope),
                    float(slope * sig),
                    float(-slope * sig),
                    "covariance",
                )
            )
    return out


def refit_impacts(
    target: Workspace | Model,
    result: FitResult,
    nuisances: Iterable[str] | None = None,
    pois: Sequence[str] | None = None,
    prefit: bool = True,
    edm_tol: float = 1e-7,
) -> list[Impact]:
    """Impacts by refitting with each nuisance fixed at +-sigma-hat (and +-1 if ``prefit``).

    Refits start from the linear prediction; ``edm_tol`` 1e-7 bounds the error of each shift at
    about 5e-4 sigma, far below the 10 % level at which impacts are compared.
    """
    model = _model(target)
    C = result.covariance
    names = list(nuisances) if nuisances is not None else list(model.nuisance_names)
    pois = list(pois or model.poi_names)
    base_fixed = set(result.fixed)
    out = []
    for name in names:
        k = model.index[name]
        sig = float(np.sqrt(max(C[k, k], 0.0)))
        shifts = {"postfit_up": sig, "postfit_down": -sig}
        if prefit:
            shifts.update({"prefit_up": 1.0, "prefit_down": -1.0})
        delta: dict[str, dict[str, float]] = {p: {} for p in pois}
        for label, d in shifts.items():
            target_val = float(np.clip(result.theta[k] + d, model.lower[k], model.upper[k]))
            start = (
                result.theta + (C[:, k] / C[k, k]) * (target_val - result.theta[k])
                if C[k, k] > 0
                else result.theta
            )
            start = np.clip(start, model.lower, model.upper)
            fixed = {n: float(result.theta[model.index[n]]) for n in base_fixed}
            fixed[name] = target_val
            r = fit(model, fixed=fixed, init=start, edm_tol=edm_tol)
            for p in pois:
                delta[p][label] = float(r.theta[model.index[p]] - result.theta[model.index[p]])
        for p in pois:
            dd = delta[p]
            out.append(
                Impact(
                    p,
                    name,
                    dd.get("prefit_up", np.nan),
                    dd.get("prefit_down", np.nan),
                    dd["postfit_up"],
                    dd["postfit_down"],
                    "refit",
                )
            )
    return out


def ranking(impacts: Iterable[Impact], poi: str | None = None) -> list[Impact]:
    """Impacts sorted by post-fit size, largest first (optionally for one POI)."""
    return sorted((i for i in impacts if poi is None or i.poi == poi), key=lambda i: -i.size)


def breakdown(target: Workspace | Model, result: FitResult) -> dict[str, dict[str, float]]:
    """Total, statistical (all nuisances fixed at their best fit) and systematic error per POI."""
    model = _model(target)
    H = result.hessian
    fixed = np.array([n in result.fixed for n in model.names])
    stat_free = ~fixed & (np.arange(model.n_params) < model.n_free)
    Hs = H[np.ix_(stat_free, stat_free)]
    try:
        Cs = 2.0 * np.linalg.inv(Hs)
    except np.linalg.LinAlgError:
        Cs = np.full_like(Hs, np.nan)
    idx = np.flatnonzero(stat_free)
    out = {}
    for poi in model.poi_names:
        p = model.index[poi]
        tot = float(np.sqrt(max(result.covariance[p, p], 0.0)))
        j = np.flatnonzero(idx == p)
        stat = float(np.sqrt(Cs[j[0], j[0]])) if j.size else 0.0
        out[poi] = {"total": tot, "stat": stat, "syst": float(np.sqrt(max(tot**2 - stat**2, 0.0)))}
    return to_jsonable(out)
