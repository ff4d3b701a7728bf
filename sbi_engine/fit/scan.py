"""Profile-likelihood scans of a POI and the intervals read off them.

The curve is a grid of conditional fits (the POI fixed by a mask, so the compiled fit is
reused; each started from its solved neighbour), refined where it bends: an interval between
neighbouring points gets a midpoint while the error of linear interpolation in q there,
estimated from the local second difference, exceeds ``refine_tol``. Points are flagged, not
dropped: ``converged`` per point, ``non_monotonic`` where dq falls while moving away from the
best fit, and the summary ``flags``. The intervals come from root finding on the profile
(`sbi_engine.fit.intervals`, warm-started from the scan's points), so they do not depend on
the grid; the grid's own crossings are kept as ``grid_intervals``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..precision import enable_float64
from .intervals import LEVELS, MONOTONIC_TOL, NEW_MINIMUM_TOL, ProfileInterval, Profiler
from .model import Model, model_for
from .results import FitResult, to_jsonable
from .workspace import Workspace

__all__ = ["Scan", "profile_scan", "crossings", "monotonic_flags", "LEVELS"]


@dataclass(frozen=True, eq=False)
class Scan:
    """dq(poi) = q(poi, profiled) - q_min on a grid, with the 68 % / 95 % intervals.

    intervals: {"68": (lo, hi), "95": (lo, hi)}, from root finding (``profile``) where the scan
    ran it, else from the grid; grid_intervals: the grid's own crossings; profile: the full
    `ProfileInterval` per level (asymmetric errors, flags); non_monotonic: per point, dq below
    the highest dq nearer the best fit on its side; flags: "not_converged",
    "non_monotonic_left" / "non_monotonic_right", "new_minimum"; n_refined: points added
    where the curve bends.
    """

    poi: str
    values: np.ndarray
    dq: np.ndarray
    converged: np.ndarray
    best: float
    intervals: dict[str, tuple[float | None, float | None]]
    non_monotonic: np.ndarray | None = None
    flags: tuple[str, ...] = ()
    grid_intervals: dict[str, tuple[float | None, float | None]] | None = None
    profile: dict[str, ProfileInterval] = field(default_factory=dict)
    n_refined: int = 0

    def to_dict(self) -> dict:
        nm = self.non_monotonic
        return to_jsonable(
            {
                "poi": self.poi,
                "values": self.values,
                "dq": self.dq,
                "converged": self.converged,
                "best": self.best,
                "intervals": self.intervals,
                "non_monotonic": np.zeros(len(self.values), bool) if nm is None else nm,
                "flags": list(self.flags),
                "grid_intervals": self.grid_intervals
                if self.grid_intervals is not None
                else self.intervals,
                "profile_intervals": {k: v.to_dict() for k, v in self.profile.items()},
                "n_refined": self.n_refined,
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


def monotonic_flags(
    values: np.ndarray, dq: np.ndarray, best: float, tol: float = MONOTONIC_TOL
) -> np.ndarray:
    """Per point: dq lies more than ``tol`` below the highest dq between it and ``best`` (a
    stretch where the profile falls while moving away from the minimum)."""
    values, dq = np.asarray(values, float), np.asarray(dq, float)
    out = np.zeros(values.size, dtype=bool)
    for side in (-1.0, 1.0):
        idx = np.flatnonzero(side * (values - best) > 0)
        idx = idx[np.argsort(np.abs(values[idx] - best))]
        top = 0.0
        for i in idx:
            if not np.isfinite(dq[i]):
                continue
            if dq[i] < top - tol:
                out[i] = True
            top = max(top, dq[i])
    return out


def _interp_errors(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per gap [x_i, x_i+1]: the largest error of linear interpolation in y there, |y''| h^2 / 8,
    with y'' from the second divided differences of the neighbouring triples."""
    n = x.size
    err = np.zeros(max(n - 1, 0))
    if n < 3:
        return err
    h = np.diff(x)
    d1 = np.diff(y) / h
    f2 = np.abs(np.diff(d1) / (x[2:] - x[:-2]))  # |y''| / 2 at triple (i, i+1, i+2)
    f2 = np.where(np.isfinite(f2), f2, 0.0)
    curv = np.zeros(n - 1)
    curv[:-1] = f2
    curv[1:] = np.maximum(curv[1:], f2)
    return curv * h**2 / 4.0


def profile_scan(
    target: Workspace | Model,
    result: FitResult,
    poi: str | None = None,
    values: np.ndarray | None = None,
    n_points: int = 31,
    n_sigma: float = 2.5,
    *,
    refine: int | None = None,
    refine_tol: float = 0.05,
    intervals: bool = True,
) -> Scan:
    """Scan ``poi`` (default: the first POI) over ``values`` (default: best fit +- n_sigma sigma).

    Each point is a fit with the POI fixed (a mask: the compiled fit is reused), started from
    its solved neighbour moved along the covariance direction. ``refine``: at most this many
    points added where the linear interpolation error in q exceeds ``refine_tol`` (default:
    ``n_points`` for the automatic grid, none for given ``values``). ``intervals``: the 68 % /
    95 % intervals by root finding (True) or from the grid's crossings only (False).
    """
    enable_float64()
    model = target if isinstance(target, Model) else model_for(target)
    poi = poi or model.poi_names[0]
    pr = Profiler(model, result, poi)
    p, best = pr.p, pr.best
    sig = float(np.sqrt(max(result.covariance[p, p], 0.0))) or 1.0  # the grid's unit
    if refine is None:
        refine = n_points if values is None else 0
    if values is None:
        values = np.linspace(best - n_sigma * sig, best + n_sigma * sig, n_points)
    values = np.unique(np.clip(np.asarray(values, dtype=float), model.lower[p], model.upper[p]))
    # outwards from the best fit on each side, so every point starts from a solved neighbour
    for v in sorted(values, key=lambda v: (v > best, abs(v - best))):
        pr.point(float(v))
    grid = {float(v) for v in values}
    n_added = 0
    lo_v, hi_v = float(values.min()), float(values.max())
    while n_added < refine:
        xs = np.array(sorted(v for v in {*grid, best} if lo_v <= v <= hi_v))
        ys = np.array([pr.points[v].dq for v in xs])
        err = _interp_errors(xs, ys)
        bad = np.flatnonzero(err > refine_tol)
        if bad.size == 0:
            break
        bad = bad[np.argsort(-err[bad])][: refine - n_added]
        mids = sorted({float(0.5 * (xs[i] + xs[i + 1])) for i in bad})
        mids = [m for m in mids if m not in grid and m != best]
        if not mids:
            break
        for m in sorted(mids, key=lambda v: abs(v - best)):
            pr.point(m)
            grid.add(m)
        n_added += len(mids)
    values = np.array(sorted(grid))
    dq = np.array([pr.points[v].dq for v in values])
    ok = np.array([pr.points[v].converged for v in values], dtype=bool)
    xs = np.append(values, best)
    ys = np.append(dq, 0.0)
    order = np.argsort(xs)
    xs, ys = xs[order], ys[order]
    grid_iv = {k: crossings(xs, ys, best, lvl) for k, lvl in LEVELS.items()}
    non_mono = monotonic_flags(values, dq, best)
    flags = set()
    if not ok.all():
        flags.add("not_converged")
    if np.any(non_mono & (values < best)):
        flags.add("non_monotonic_left")
    if np.any(non_mono & (values > best)):
        flags.add("non_monotonic_right")
    if np.nanmin(dq, initial=0.0) < -NEW_MINIMUM_TOL:
        flags.add("new_minimum")
    prof = {k: pr.interval(lvl) for k, lvl in LEVELS.items()} if intervals else {}
    ivs = {k: prof[k].ends for k in prof} if prof else dict(grid_iv)
    return Scan(
        poi,
        values,
        dq,
        ok,
        best,
        ivs,
        non_mono,
        tuple(sorted(flags)),
        grid_iv,
        prof,
        n_added,
    )
