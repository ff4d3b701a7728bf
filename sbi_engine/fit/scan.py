"""Profile-likelihood scans of a POI and the intervals read off them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..precision import enable_float64
from .api import fit
from .model import Model, model_for
from .results import FitResult, to_jsonable
from .workspace import Workspace

__all__ = ["Scan", "profile_scan", "crossings"]

LEVELS = {"68": 1.0, "95": 3.841458820694124}


@dataclass(frozen=True, eq=False)
class Scan:
    """dq(poi) = q(poi, profiled) - q_min on a grid, with the 68 % / 95 % intervals."""

    poi: str
    values: np.ndarray
    dq: np.ndarray
    converged: np.ndarray
    best: float
    intervals: dict[str, tuple[float | None, float | None]]

    def to_dict(self) -> dict:
        return to_jsonable(
            {
                "poi": self.poi,
                "values": self.values,
                "dq": self.dq,
                "converged": self.converged,
                "best": self.best,
                "intervals": self.intervals,
            }
        )


def crossings(
    x: np.ndarray, y: np.ndarray, best: float, level: float
) -> tuple[float | None, float | None]:
    """Where y crosses ``level`` left and right of ``best`` (linear interpolation; None if not)."""
    lo = hi = None
    left = np.flatnonzero(x <= best)
    right = np.flatnonzero(x >= best)
    for i in left[::-1]:
        if i > 0 and y[i - 1] >= level > y[i] - 1e-300:
            lo = float(x[i - 1] + (level - y[i - 1]) * (x[i] - x[i - 1]) / (y[i] - y[i - 1]))
            break
    for i in right:
        if i + 1 < len(x) and y[i + 1] >= level > y[i] - 1e-300:
            hi = float(x[i] + (level - y[i]) * (x[i + 1] - x[i]) / (y[i + 1] - y[i]))
            break
    return lo, hi


def profile_scan(
    target: Workspace | Model,
    result: FitResult,
    poi: str | None = None,
    values: np.ndarray | None = None,
    n_points: int = 31,
    n_sigma: float = 2.5,
) -> Scan:
    """Scan ``poi`` (default: the first POI) over ``values`` (default: best fit +- n_sigma sigma).

    Each point is a fit with the POI fixed (a mask: the compiled fit is reused), started from
    the linear prediction of the profiled parameters.
    """
    enable_float64()
    model = target if isinstance(target, Model) else model_for(target)
    poi = poi or model.poi_names[0]
    p = model.index[poi]
    best = float(result.theta[p])
    C = result.covariance
    sig = float(np.sqrt(max(C[p, p], 0.0))) or 1.0
    if values is None:
        values = np.linspace(best - n_sigma * sig, best + n_sigma * sig, n_points)
    values = np.unique(np.clip(np.asarray(values, dtype=float), model.lower[p], model.upper[p]))
    dq = np.empty(values.size)
    ok = np.zeros(values.size, dtype=bool)
    base_fixed = {n: float(result.theta[model.index[n]]) for n in result.fixed}
    for j, v in enumerate(values):
        start = (
            result.theta + (C[:, p] / C[p, p]) * (v - best) if C[p, p] > 0 else result.theta.copy()
        )
        start = np.clip(start, model.lower, model.upper)
        r = fit(model, fixed={**base_fixed, poi: float(v)}, init=start)
        dq[j] = r.q_min - result.q_min
        ok[j] = r.converged
    xs = np.append(values, best)
    ys = np.append(dq, 0.0)
    order = np.argsort(xs)
    xs, ys = xs[order], ys[order]
    intervals = {k: crossings(xs, ys, best, lvl) for k, lvl in LEVELS.items()}
    return Scan(poi, values, dq, ok, best, intervals)
