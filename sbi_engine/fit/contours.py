"""2-D profile-likelihood contours of two parameters of interest, by root finding along rays.

The contour at level L of the pair (a, b) is the boundary of {(a, b) : dq(a, b) <= L}, where
dq(a, b) = q(a, b, nuisances profiled) - q_min is a conditional fit with both POIs fixed.
Along each ray from the best fit, (a, b) = best + r (sigma_a cos t, sigma_b sin t), dq rises
from 0, so the contour point is the root of sqrt(dq(r)) - sqrt(L): linear in r for a
quadratic profile (Brent converges in a few fits). Each conditional fit is the model's
compiled Newton fit with the two POIs held by a mask, started from the closest solved point
of the same ray moved along the covariance's linear-response direction.

Levels are -2 Delta ln L for two parameters: 2.30 (68.27 %) and 5.99 (95 %). A ray that
leaves a POI's bounds before reaching the level ends at the bound (flag "at_bound"); one that
does not reach it within ``max_sigmas`` is flagged "not_found".

``correlation(result, a, b)``: the Hesse correlation of two POIs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..precision import enable_float64
from .api import fit
from .model import Model, model_for
from .results import FitResult, to_jsonable
from .workspace import Workspace

__all__ = ["Contour", "profile_contour", "profile_contours", "correlation", "CONTOUR_LEVELS"]

# -2 Delta ln L enclosing 68.27 % and 95 % for two parameters (chi2 with 2 d.o.f.)
CONTOUR_LEVELS = {"68": -2.0 * math.log(1.0 - 0.6826894921370859), "95": -2.0 * math.log(0.05)}


@dataclass(frozen=True)
class Contour:
    """One closed contour: points (x along ``pois[0]``, y along ``pois[1]``) in ray order."""

    pois: tuple[str, str]
    level: float
    best: tuple[float, float]
    x: tuple[float, ...]
    y: tuple[float, ...]
    flags: tuple[tuple[str, ...], ...] = ()  # per point
    n_fits: int = 0
    correlation: float = math.nan
    radii: tuple[float, ...] = ()  # r_k of point k along ray angle 2 pi k / n (scaled units)
    scale: tuple[float, float] = (1.0, 1.0)  # the Hesse errors that scale the rays

    @property
    def area(self) -> float:
        """Enclosed area: (1/2) s_a s_b integral of r(t)^2 dt by the trapezoidal rule over the
        equal-angle rays (spectrally accurate for a smooth closed curve; the inscribed polygon
        would be low by 1 - n sin(2 pi / n) / (2 pi), 1.1 % at 24 points). Falls back to the
        polygon (shoelace) area without radii."""
        if self.radii:
            r = np.asarray(self.radii)
            return float(0.5 * self.scale[0] * self.scale[1] * 2.0 * np.pi * np.mean(r * r))
        x, y = np.asarray(self.x), np.asarray(self.y)
        return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "pois": list(self.pois),
                "level": self.level,
                "best": list(self.best),
                "x": list(self.x),
                "y": list(self.y),
                "flags": [list(f) for f in self.flags],
                "n_fits": self.n_fits,
                "area": self.area,
                "correlation": self.correlation,
            }
        )


def correlation(result: FitResult, a: str, b: str) -> float:
    """Hesse correlation of parameters ``a`` and ``b`` (NaN where either has no error)."""
    i, j = result.names.index(a), result.names.index(b)
    C = result.covariance
    d = C[i, i] * C[j, j]
    return float(C[i, j] / math.sqrt(d)) if d > 0 else math.nan


@dataclass
class _Ray:
    rs: list[float] = field(default_factory=list)
    dqs: list[float] = field(default_factory=list)
    thetas: list[np.ndarray] = field(default_factory=list)


class _ContourFitter:
    def __init__(self, model: Model, result: FitResult, pois: tuple[str, str], data, aux):
        self.model, self.result, self.data, self.aux = model, result, data, aux
        self.ia, self.ib = model.index[pois[0]], model.index[pois[1]]
        self.pois = pois
        C = result.covariance
        self.sig = np.array([math.sqrt(max(C[i, i], 0.0)) for i in (self.ia, self.ib)])
        if not np.all(self.sig > 0):
            raise ValueError(
                f"contour of {pois}: a POI has no Hesse error (fixed or at a bound); "
                "give scale= explicitly"
            )
        self.best = np.array([result.theta[self.ia], result.theta[self.ib]])
        base = {n: float(result.theta[model.index[n]]) for n in result.fixed}
        self.base_fixed = base
        # linear response of every parameter to the two POIs: theta - hat = S (ab - ab_hat)
        idx = [self.ia, self.ib]
        Cpp = C[np.ix_(idx, idx)]
        self.S = C[:, idx] @ np.linalg.inv(Cpp)
        self.n_fits = 0

    def point(self, ab: np.ndarray) -> np.ndarray:
        return self.best + ab

    def dq(self, ab: np.ndarray, start: np.ndarray | None) -> tuple[float, np.ndarray, bool]:
        model, res = self.model, self.result
        target = self.best + ab
        if start is None:
            start = res.theta + self.S @ ab
        else:
            start = start.copy()
        start[self.ia], start[self.ib] = target
        start = np.clip(start, model.lower, model.upper)
        fixed = dict(self.base_fixed)
        fixed[self.pois[0]], fixed[self.pois[1]] = float(target[0]), float(target[1])
        r = fit(model, fixed=fixed, init=start, data=self.data, aux=self.aux, edm_tol=1e-10)
        self.n_fits += 1
        return float(r.q_min - res.q_min), np.asarray(r.theta), bool(r.converged)


def _ray_limit(fitter: _ContourFitter, u: np.ndarray, max_r: float) -> tuple[float, bool]:
    """Largest r <= max_r with best + r u inside both POIs' bounds; (r, bound reached)."""
    m = fitter.model
    r = max_r
    for k, i in enumerate((fitter.ia, fitter.ib)):
        if u[k] > 0 and np.isfinite(m.upper[i]):
            r = min(r, (m.upper[i] - fitter.best[k]) / u[k])
        elif u[k] < 0 and np.isfinite(m.lower[i]):
            r = min(r, (m.lower[i] - fitter.best[k]) / u[k])
    return max(r, 0.0), r < max_r


def _solve_ray(
    fitter: _ContourFitter, u: np.ndarray, level: float, max_sigmas: float, r_guess: float
) -> tuple[float, tuple[str, ...]]:
    """The r at which dq(best + r u) = level (u scaled by the Hesse errors)."""
    from scipy.optimize import brentq  # noqa: PLC0415

    r_max, bounded = _ray_limit(fitter, u, max_sigmas)
    flags: list[str] = []
    cache: dict[float, tuple[float, np.ndarray]] = {}

    def f(r: float) -> float:
        if r in cache:
            dq = cache[r][0]
        else:
            near = min(cache, key=lambda x: abs(x - r)) if cache else None
            start = None
            if near is not None:
                start = cache[near][1] + fitter.S @ (u * (r - near))
            dq, theta, ok = fitter.dq(u * r, start)
            if not ok:
                flags.append("not_converged")
            cache[r] = (dq, theta)
        return math.sqrt(max(dq, 0.0)) - math.sqrt(level)

    lo, hi = 0.0, min(r_guess, r_max)
    f_lo = -math.sqrt(level)
    f_hi = f(hi)
    while f_hi < 0:
        if hi >= r_max:
            flags.append("at_bound" if bounded else "not_found")
            return hi, tuple(dict.fromkeys(flags))
        # sqrt(dq) is ~ linear in r: extrapolate, at least 20 % further
        slope = (f_hi - f_lo) / (hi - lo) if hi > lo else 0.0
        nxt = hi + (-f_hi / slope if slope > 0 else hi) * 1.1
        lo, f_lo = hi, f_hi
        hi = min(max(nxt, 1.2 * hi), r_max)
        f_hi = f(hi)
    r = brentq(f, lo, hi, xtol=1e-6 * max(hi, 1e-12), rtol=1e-10)
    return float(r), tuple(dict.fromkeys(flags))


def profile_contour(
    target: Workspace | Model,
    result: FitResult | None = None,
    pois: Sequence[str] | None = None,
    level: float = CONTOUR_LEVELS["68"],
    n_points: int = 24,
    max_sigmas: float = 8.0,
    data: Any = None,
    aux: Any = None,
) -> Contour:
    """The 2-D profile-likelihood contour dq = ``level`` of ``pois`` (default the first two).

    ``n_points`` rays at equal angles in the plane scaled by the Hesse errors; each costs a few
    conditional fits (Brent on sqrt(dq)). A contour with bound-limited rays follows the bound.
    """
    enable_float64()
    model = target if isinstance(target, Model) else model_for(target)
    if result is None:
        result = fit(model, data=data, aux=aux)
    pois = tuple(pois or model.poi_names[:2])
    if len(pois) != 2:
        raise ValueError(f"a contour needs two parameters, got {pois}")
    fitter = _ContourFitter(model, result, pois, data, aux)
    rho = correlation(result, *pois)
    xs, ys, flags, radii = [], [], [], []
    for t in np.linspace(0.0, 2.0 * np.pi, n_points, endpoint=False):
        u = fitter.sig * np.array([math.cos(t), math.sin(t)])
        # the Gaussian guess: the contour radius of the covariance ellipse along this ray
        c = np.array([math.cos(t), math.sin(t)])
        quad = c @ np.linalg.inv(np.array([[1.0, rho], [rho, 1.0]])) @ c
        r_guess = math.sqrt(level / quad) if np.isfinite(rho) and quad > 0 else math.sqrt(level)
        r, fl = _solve_ray(fitter, u, level, max_sigmas, r_guess)
        p = fitter.best + r * u
        radii.append(float(r))
        xs.append(float(p[0]))
        ys.append(float(p[1]))
        flags.append(fl)
    return Contour(
        pois,
        float(level),
        (float(fitter.best[0]), float(fitter.best[1])),
        tuple(xs),
        tuple(ys),
        tuple(flags),
        fitter.n_fits,
        rho,
        tuple(radii),
        (float(fitter.sig[0]), float(fitter.sig[1])),
    )


def profile_contours(
    target: Workspace | Model,
    result: FitResult | None = None,
    pois: Sequence[str] | None = None,
    levels: dict[str, float] | None = None,
    n_points: int = 24,
    **kwargs: Any,
) -> dict[str, Contour]:
    """{"68": contour, "95": contour} (or the given ``levels``)."""
    enable_float64()
    model = target if isinstance(target, Model) else model_for(target)
    if result is None:
        result = fit(model, data=kwargs.get("data"), aux=kwargs.get("aux"))
    return {
        k: profile_contour(model, result, pois, lev, n_points, **kwargs)
        for k, lev in (levels or CONTOUR_LEVELS).items()
    }
