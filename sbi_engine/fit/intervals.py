"""Profile-likelihood intervals by root finding (MINOS-like).

The ends of {poi : q(poi) - q_min <= level} are the roots of dq(poi) = level on each side of
the best fit, where dq(poi) is a conditional fit with the POI fixed and every other parameter
profiled. Each conditional fit is the model's compiled Newton fit with the POI held by a mask
(no recompilation), started from the nearest solved point moved along the covariance's
direction d theta / d poi = C[:, p] / C[p, p]. A side is bracketed from the Hesse error
(first trial at best + 1.15 sqrt(level) sigma, then parabolic extrapolation of the points so
far) and solved by `scipy.optimize.brentq` on sqrt(dq) - sqrt(level): it has the same roots as
dq - level and is linear in the POI for a parabolic profile, so Brent converges in a few fits.

An end the profile never reaches inside the POI's bounds is reported *at* the bound (flag
``lo_at_bound`` / ``hi_at_bound``); one beyond ``max_sigmas`` Hesse errors is None
(``lo_not_found`` / ``hi_not_found``). Other flags: ``*_not_converged`` (a conditional fit on
that side did not converge), ``*_non_monotonic`` (dq fell while moving away from the best fit
before the crossing), ``new_minimum`` (a conditional fit went below the global minimum, or
the best fit sits on a bound while q falls inwards: the best fit was not the minimum),
``*_failed`` (dq not finite; that end is None), ``best_not_converged`` (the global fit did
not converge).

>>> import numpy as np
>>> from sbi_engine.fit import Workspace
>>> n = 5
>>> ws = Workspace.from_arrays(pois={"mu": {"init": 1.0, "bounds": (0.0, 20.0)}},
...     processes={"S": {"yield": 3.0, "coefficient": "mu", "ratio": np.ones(n)},
...                "B": {"yield": 1.0, "coefficient": "1", "ratio": np.ones(n)}},
...     weights=np.ones(n))
>>> iv = profile_interval(ws, level=1.0)   # n = 5 events, nu = 3 mu + 1: mu-hat = 4/3
>>> round(iv.best, 4), round(iv.err_lo, 3), round(iv.err_hi, 3)   # Poisson: asymmetric
(1.3333, -0.639, 0.86)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..precision import enable_float64
from .api import fit
from .model import Model, model_for
from .results import FitResult, to_jsonable
from .workspace import Workspace

__all__ = [
    "ProfileInterval",
    "Profiler",
    "profile_interval",
    "profile_intervals",
    "LEVELS",
]

LEVELS = {"68": 1.0, "95": 3.841458820694124}  # -2 Delta ln L at 68.27 % and 95 % CL
NEW_MINIMUM_TOL = 1e-5  # dq below -this: a conditional fit found a lower q than the best fit
MONOTONIC_TOL = 1e-5  # dq falling by more than this moving outwards: a non-monotonic stretch


@dataclass(frozen=True)
class ProfileInterval:
    """One profile-likelihood interval {poi : dq <= level}.

    lo / hi: its ends (None where not found within the bracket); err_lo = lo - best (<= 0) and
    err_hi = hi - best (>= 0), MINOS's sign convention; flags: what to know about the ends
    (see the module docstring); n_fits: conditional fits this interval cost (cached ones free).
    """

    poi: str
    level: float
    best: float
    lo: float | None
    hi: float | None
    flags: tuple[str, ...] = ()
    n_fits: int = 0
    sigma_hesse: float = math.nan

    @property
    def err_lo(self) -> float | None:
        return None if self.lo is None else self.lo - self.best

    @property
    def err_hi(self) -> float | None:
        return None if self.hi is None else self.hi - self.best

    @property
    def lo_at_bound(self) -> bool:
        return "lo_at_bound" in self.flags

    @property
    def hi_at_bound(self) -> bool:
        return "hi_at_bound" in self.flags

    @property
    def ends(self) -> tuple[float | None, float | None]:
        return self.lo, self.hi

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "poi": self.poi,
                "level": self.level,
                "best": self.best,
                "lo": self.lo,
                "hi": self.hi,
                "err_lo": self.err_lo,
                "err_hi": self.err_hi,
                "flags": list(self.flags),
                "n_fits": self.n_fits,
                "sigma_hesse": self.sigma_hesse,
            }
        )


@dataclass
class _Point:
    dq: float
    theta: np.ndarray
    converged: bool


@dataclass(eq=False)
class Profiler:
    """dq(poi) = q(poi, others profiled) - q_min, by conditional fits cached per POI value.

    Every fit is ``fit(model, fixed={poi: v, ...}, init=start)``: the compiled fit with a fixed
    mask, so all of them share one compilation. ``start`` is the solution at the nearest solved
    POI value, moved along the covariance direction C[:, p] / C[p, p].
    """

    model: Model
    result: FitResult
    poi: str
    data: Any = None
    aux: Any = None
    points: dict[float, _Point] = field(default_factory=dict)
    n_fits: int = 0

    def __post_init__(self) -> None:
        m = self.model
        self.p = m.index[self.poi]
        self.best = float(self.result.theta[self.p])
        self.lower = float(m.lower[self.p])
        self.upper = float(m.upper[self.p])
        C = np.asarray(self.result.covariance)
        cpp = float(C[self.p, self.p])
        self.slope = C[:, self.p] / cpp if cpp > 0 else np.zeros(m.n_params)
        self.sigma = _sigma(self.result, self.p, self.lower, self.upper)
        self.base_fixed = {
            n: float(self.result.theta[m.index[n]]) for n in self.result.fixed if n != self.poi
        }
        self.points.setdefault(
            self.best, _Point(0.0, np.asarray(self.result.theta, dtype=float), True)
        )

    def start(self, v: float) -> np.ndarray:
        near = min(self.points, key=lambda x: abs(x - v))
        t = self.points[near].theta + self.slope * (v - near)
        t[self.p] = v
        return np.clip(t, self.model.lower, self.model.upper)

    def point(self, v: float) -> _Point:
        v = float(v)
        if v not in self.points:
            r = fit(
                self.model,
                fixed={**self.base_fixed, self.poi: v},
                init=self.start(v),
                data=self.data,
                aux=self.aux,
            )
            self.n_fits += 1
            dq = float(r.q_min - self.result.q_min) if math.isfinite(r.q_min) else math.nan
            self.points[v] = _Point(dq, np.asarray(r.theta, dtype=float), bool(r.converged))
        return self.points[v]

    def dq(self, v: float) -> float:
        return self.point(v).dq

    def falls_inward(self) -> bool:
        """The best fit sits on a bound of the POI while q falls into the allowed range (by
        more than 1e-3 over one Hesse error, from the gradient there): not the minimum."""
        res = _resolution(self.lower, self.upper)
        at_lo, at_hi = self.best - self.lower <= res, self.upper - self.best <= res
        if not (at_lo or at_hi):
            return False
        g = float(self.model.value_and_grad(self.result.theta, self.data, self.aux)[1][self.p])
        inward = -g if at_lo else g
        return inward * self.sigma > 1e-3

    def side(self, v: float) -> int:
        return -1 if v < self.best else (1 if v > self.best else 0)

    def solve(
        self, level: float, direction: int, max_sigmas: float = 10.0, xtol: float = 1e-5
    ) -> tuple[float | None, set[str]]:
        """The end of {dq <= level} on one side (direction -1: below, +1: above) and its flags."""
        from scipy.optimize import brentq  # noqa: PLC0415

        name = "lo" if direction < 0 else "hi"
        flags: set[str] = set()
        bound = self.lower if direction < 0 else self.upper
        if direction * (bound - self.best) <= _resolution(self.lower, self.upper):
            # the best fit sits on this bound
            return bound, {f"{name}_at_bound"}
        reach = self.best + direction * max_sigmas * self.sigma
        reach = max(reach, bound) if direction < 0 else min(reach, bound)
        inner, q_in, top = self.best, 0.0, 0.0
        outer: float | None = None
        known = sorted(
            (v for v in self.points if self.side(v) == direction), key=lambda v: abs(v - self.best)
        )

        def visit(v: float) -> str:
            """Step outwards to v: 'cross' (dq >= level), 'inside' or 'failed'."""
            nonlocal inner, q_in, top
            pt = self.point(v)
            if not pt.converged:
                flags.add(f"{name}_not_converged")
            if not math.isfinite(pt.dq):
                flags.add(f"{name}_failed")
                return "failed"
            if pt.dq < -NEW_MINIMUM_TOL:
                flags.add("new_minimum")
            if pt.dq < top - MONOTONIC_TOL:
                flags.add(f"{name}_non_monotonic")
            top = max(top, pt.dq)
            if pt.dq >= level:
                return "cross"
            inner, q_in = v, pt.dq
            return "inside"

        for v in known:
            if abs(v - self.best) > abs(reach - self.best):
                break
            state = visit(v)
            if state == "failed":
                return None, flags
            if state == "cross":
                outer = v
                break
        while outer is None:
            d_in = abs(inner - self.best)
            if q_in > 1e-12 and d_in > 0:
                step = d_in * min(max(1.15 * math.sqrt(level / q_in), 1.3), 10.0)
            else:
                step = max(1.15 * math.sqrt(level) * self.sigma, 1.3 * d_in)
            v = self.best + direction * step
            v = max(v, reach) if direction < 0 else min(v, reach)
            if v == inner:
                v = reach
            state = visit(v)
            if state == "failed":
                return None, flags
            if state == "cross":
                outer = v
            elif v == reach:
                if reach == bound:
                    flags.add(f"{name}_at_bound")
                    return bound, flags
                flags.add(f"{name}_not_found")
                return None, flags
        r_level = math.sqrt(level)

        def f(v: float) -> float:
            q = self.dq(v)
            if not math.isfinite(q):
                raise FloatingPointError(f"dq({self.poi}={v}) is not finite")
            pt = self.points[float(v)]
            if not pt.converged:
                flags.add(f"{name}_not_converged")
            if q < -NEW_MINIMUM_TOL:
                flags.add("new_minimum")
            return math.sqrt(max(q, 0.0)) - r_level

        a, b = sorted((inner, outer))
        try:
            root = brentq(f, a, b, xtol=xtol * self.sigma, maxiter=100)
        except (FloatingPointError, ValueError):
            flags.add(f"{name}_failed")
            return None, flags
        return float(root), flags

    def interval(
        self, level: float = 1.0, max_sigmas: float = 10.0, xtol: float = 1e-5
    ) -> ProfileInterval:
        n0 = self.n_fits
        lo, f_lo = self.solve(level, -1, max_sigmas, xtol)
        hi, f_hi = self.solve(level, +1, max_sigmas, xtol)
        flags = set(f_lo) | set(f_hi)
        if not self.result.converged:
            flags.add("best_not_converged")
        if self.falls_inward():
            flags.add("new_minimum")
        return ProfileInterval(
            self.poi,
            float(level),
            self.best,
            lo,
            hi,
            tuple(sorted(flags)),
            self.n_fits - n0,
            self.sigma,
        )


def _resolution(lower: float, upper: float) -> float:
    """A POI value closer than this to a bound is at the bound (1e-8 x max(1, bound range))."""
    width = upper - lower
    return 1e-8 * max(1.0, width if math.isfinite(width) else 1.0)


def _sigma(result: FitResult, p: int, lower: float, upper: float) -> float:
    """The POI's Hesse error; where that is missing (the POI at a bound, a singular Hessian):
    from the Hessian's diagonal if that is not degenerate, else a tenth of the bound range
    (1 for an unbounded POI)."""
    s = float(np.sqrt(max(float(np.asarray(result.covariance)[p, p]), 0.0)))
    if s > 0 and math.isfinite(s):
        return s
    width = upper - lower
    floor = 1e-6 * max(1.0, width if math.isfinite(width) else 1.0)
    h = float(np.asarray(result.hessian)[p, p]) if np.size(result.hessian) else 0.0
    if h > 0 and math.isfinite(h) and math.sqrt(2.0 / h) > floor:
        return math.sqrt(2.0 / h)
    return 0.1 * width if math.isfinite(width) else 1.0


def profiler(
    target: Workspace | Model,
    result: FitResult | None = None,
    poi: str | None = None,
    *,
    weights: Any = None,
    data: Any = None,
    aux: Mapping[str, float] | np.ndarray | None = None,
) -> Profiler:
    """A `Profiler` of ``poi`` (default: the first POI); fits first when ``result`` is None."""
    enable_float64()
    model = target if isinstance(target, Model) else model_for(target)
    if data is None and weights is not None:
        data = model.with_weights(weights)
    if isinstance(aux, Mapping):
        a = np.array(model.aux, dtype=float)
        for k, v in aux.items():
            a[model.nuisance_names.index(k)] = float(v)
        aux = a
    if result is None:
        result = fit(model, data=data, aux=aux)
    return Profiler(model, result, poi or model.poi_names[0], data=data, aux=aux)


def profile_interval(
    target: Workspace | Model,
    result: FitResult | None = None,
    poi: str | None = None,
    level: float = 1.0,
    *,
    weights: Any = None,
    data: Any = None,
    aux: Mapping[str, float] | np.ndarray | None = None,
    max_sigmas: float = 10.0,
    xtol: float = 1e-5,
) -> ProfileInterval:
    """The profile-likelihood interval {poi : q(poi) - q_min <= level} by root finding.

    level 1.0: 68.27 % CL, 3.84: 95 % (``LEVELS``); ``result``: the global fit on the same data
    (fitted here when None); weights / data / aux as for `fit`; ``xtol``: precision of the ends
    in units of the Hesse error; ends beyond ``max_sigmas`` Hesse errors are not searched.
    """
    pr = profiler(target, result, poi, weights=weights, data=data, aux=aux)
    return pr.interval(level, max_sigmas, xtol)


def profile_intervals(
    target: Workspace | Model,
    result: FitResult | None = None,
    poi: str | None = None,
    levels: Mapping[str, float] | Iterable[float] = LEVELS,
    **kwargs: Any,
) -> dict[str, ProfileInterval]:
    """`profile_interval` at several levels sharing one set of conditional fits
    ({"68": ..., "95": ...} by default; keys str(level) for a plain list of levels)."""
    opts = {k: kwargs.pop(k) for k in ("max_sigmas", "xtol") if k in kwargs}
    pr = profiler(target, result, poi, **kwargs)
    items = levels.items() if isinstance(levels, Mapping) else ((str(v), v) for v in levels)
    return {k: pr.interval(float(v), **opts) for k, v in items}
