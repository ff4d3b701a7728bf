"""Closure and coverage of learned ratios on a benchmark problem with an exact likelihood.

Why: the only honest test of a fit from trained ratios is against the exact likelihood of a
problem whose densities are known, on events the networks never saw, at several values of the
POI; and coverage over fresh pseudo-experiments from the true simulator (not from the model
under test). `nsbi closure` (backend/commands/closure.py) trains through the normal analysis
path and hands the ensembles here.

Pseudo-experiments share one workspace: their events are stacked after each other (followed by
the normalisation rows), and experiment k is its own rows gathered as a toy (count 1 each), so
one vmapped compiled fit serves them all. Each draws its auxiliary values a ~ N(0, 1) (the true nuisances
are 0). The NN and simulation-statistics components are measured once per problem and mu_true
(on the first pseudo-experiment) and applied to every experiment's interval.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .precision import enable_float64

Z95 = 1.959963984540054


def profile_interval(
    ws: Any, result: Any, poi: str = "mu", level: float = 1.0, max_sigmas: float = 6.0
) -> tuple[float | None, float | None]:
    """Ends of the profile-likelihood interval {mu : q(mu) - q_min <= level} by root finding
    (`sbi_engine.fit.intervals.profile_interval`: conditional fits with mu fixed, warm-started
    from the neighbouring solution, bracketed from the Hesse error, Brent's method); an end
    the profile does not reach inside the POI's bounds is the bound, one beyond
    ``max_sigmas`` Hesse errors (or whose fits failed) is None."""
    from .fit.intervals import profile_interval as root_found

    return root_found(ws, result, poi, level, max_sigmas=max_sigmas).ends


def _nuisances(ws: Any, result: Any) -> dict[str, dict[str, float]]:
    return {
        n: {"value": float(result.values[n]), "error": float(result.errors[n])}
        for n in ws.nuisance_names
    }


def compare_fits(learned_ws: Any, exact_ws: Any, *, intervals: bool = True) -> dict[str, Any]:
    """Learned against exact fit on the same events: mu-hat, Hesse sigma, 68 % profile interval,
    nuisance pulls and constraints, and the differences in units of the exact sigma."""
    from .fit import fit

    enable_float64()
    out: dict[str, Any] = {}
    for label, ws in (("learned", learned_ws), ("exact", exact_ws)):
        r = fit(ws)
        poi = ws.poi_names[0]  # the primary POI (the benchmark problems call it mu)
        lo, hi = profile_interval(ws, r, poi) if intervals else (None, None)
        lower = ws.free_parameters[[p.name for p in ws.free_parameters].index(poi)].bounds[0]
        at_bound = float(r.values[poi]) <= lower + 1e-9 or not float(r.errors[poi]) > 1e-9
        out[label] = {
            "mu_hat": float(r.values[poi]),
            "sigma": float(r.errors[poi]),
            "converged": bool(r.converged),
            "at_bound": bool(at_bound),
            "interval68": [lo, hi],
            "nuisances": _nuisances(ws, r),
            "_result": r,
        }
    L, E = out["learned"], out["exact"]
    s = E["sigma"]
    s = s if s > 0 else float("nan")
    d: dict[str, Any] = {
        "mu_hat_in_sigma": (L["mu_hat"] - E["mu_hat"]) / s,
        "sigma_ratio": L["sigma"] / s,
        "valid": bool(
            L["converged"] and E["converged"] and not L["at_bound"] and not E["at_bound"]
        ),
    }
    for i, end in enumerate(("low", "high")):
        a, b = L["interval68"][i], E["interval68"][i]
        d[f"interval_{end}_in_sigma"] = None if a is None or b is None else (a - b) / s
    d["nuisances"] = {
        n: {
            "pull_diff": L["nuisances"][n]["value"] - E["nuisances"][n]["value"],
            "constraint_ratio": (
                L["nuisances"][n]["error"] / E["nuisances"][n]["error"]
                if E["nuisances"][n]["error"] > 0
                else None
            ),
        }
        for n in E["nuisances"]
        if n in L["nuisances"]
    }
    out["differences"] = d
    return out


def passes(
    diff: Mapping[str, Any], mu_tol: float = 0.2, sigma_tol: float = 0.15, interval_tol: float = 0.2
) -> dict[str, bool]:
    """The issue's closure criteria on one comparison (tolerances in units of the exact sigma)."""
    ends = [diff.get("interval_low_in_sigma"), diff.get("interval_high_in_sigma")]
    if not diff.get(
        "valid", True
    ):  # a fit at the POI's bound (sigma 0) or not converged: no comparison
        return {"valid": False, "mu_hat": False, "sigma": False, "interval": False}
    return {
        "mu_hat": abs(diff["mu_hat_in_sigma"]) < mu_tol,
        "sigma": abs(diff["sigma_ratio"] - 1.0) <= sigma_tol,
        "interval": all(e is None or abs(e) < interval_tol for e in ends),
    }


@dataclass(frozen=True)
class Coverage:
    """Fraction of pseudo-experiments whose interval contains mu_true, with binomial errors."""

    n: int
    cover68: float
    cover68_err: float
    cover95: float
    cover95_err: float
    mean_pull: float
    pull_width: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def coverage(mu_hat: np.ndarray, sigma: np.ndarray, mu_true: float) -> Coverage:
    """Hesse-interval coverage (mu-hat +- sigma, +- 1.96 sigma) of converged experiments."""
    ok = np.isfinite(mu_hat) & np.isfinite(sigma) & (sigma > 0)
    m, s = mu_hat[ok], sigma[ok]
    n = int(ok.sum())
    pull = (m - mu_true) / s
    c68 = float(np.mean(np.abs(pull) <= 1.0)) if n else float("nan")
    c95 = float(np.mean(np.abs(pull) <= Z95)) if n else float("nan")
    err = lambda p: float(np.sqrt(p * (1 - p) / n)) if n else float("nan")  # noqa: E731
    return Coverage(
        n,
        c68,
        err(c68),
        c95,
        err(c95),
        float(np.mean(pull)) if n else float("nan"),
        float(np.std(pull, ddof=1)) if n > 1 else float("nan"),
    )


def stacked_experiments(
    draw: Callable[[int], Any], seeds: Sequence[int]
) -> tuple[Any, list[np.ndarray]]:
    """Stack pseudo-experiments drawn by ``draw(seed)`` into one Sample; the row ranges of each."""
    from .sample import Sample

    parts = [draw(int(s)) for s in seeds]
    rows, pos = [], 0
    for p in parts:
        rows.append(np.arange(pos, pos + len(p)))
        pos += len(p)
    return Sample(
        np.concatenate([p.features for p in parts]),
        np.concatenate([p.weights for p in parts]),
        parts[0].names,
        f"{len(parts)} stacked pseudo-experiments",
    ), rows


def fit_experiments(
    ws: Any, rows: Sequence[np.ndarray], mu_true: float, seed: int, progress: str | None = None
) -> dict[str, np.ndarray]:
    """Fit every experiment (its own rows, each with count 1; aux ~ N(0, 1)) as gathered toys:
    one vmapped compiled fit, the normalisation term over the full normalisation sample.
    ``progress``: label of a progress bar over the experiments."""
    from .fit import model_for
    from .fit.toys import ToySet, _padded_size, fit_toys

    enable_float64()
    model = model_for(ws)
    n_max = _padded_size(max(len(r) for r in rows))
    index = np.zeros((len(rows), n_max), dtype=np.int64)
    counts = np.zeros((len(rows), n_max))
    for k, r in enumerate(rows):
        index[k, : len(r)] = r
        counts[k, : len(r)] = 1.0
    aux = np.random.default_rng(seed).standard_normal((len(rows), model.n_np))
    poi = ws.poi_names[0]
    theta_true = model.theta({poi: mu_true}, base=np.asarray(model.theta(None)))
    fits = fit_toys(model, ToySet(theta_true, index, counts, aux), progress=progress)
    j = model.index[poi]
    ok = np.asarray(fits.converged, dtype=bool)
    return {
        "mu_hat": np.where(ok, fits.theta[:, j], np.nan),
        "sigma": np.where(ok, fits.errors[:, j], np.nan),
        "converged": ok,
    }


def strip_private(obj: Any) -> Any:
    """Drop the in-memory fit results (keys starting with '_') before writing JSON."""
    if isinstance(obj, Mapping):
        return {k: strip_private(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, list):
        return [strip_private(v) for v in obj]
    return obj
