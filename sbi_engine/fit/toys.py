"""Asimov data, toys (resampling the weighted simulation) with vectorised fits, and a Neyman
construction over a POI grid.

A toy at parameters theta_t draws k_i ~ Poisson(lambda_i) for every event row, with the model's
expected count of that row: lambda_i = v_i s_i(theta_t) / V on the normalisation sample when
the model has one (weights v_i, V = sum v; see ``Model``: the model is then exactly a Poisson
process on that sample, so toys are drawn from the model itself), else
lambda_i = w_i s_i(theta_t) / s_i(theta_ref) (theta_ref: where the workspace's weighted events
were generated, ``data.generated_at``). Auxiliary values are drawn a_k ~ N(alpha_t,k, 1). The
rows with k_i > 0 are gathered into fixed-size arrays (padding has weight 0), so a batch of
toys is one ``vmap`` of the compiled Newton fit: one compilation for all toys. Every toy fit's
normalisation term runs over the full normalisation sample (fixed v), not the gathered rows.
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..precision import enable_float64
from .api import ESCAPE_MIN_GAIN, bound_mask, fit, fixed_mask
from .compile import Compiled
from .minimize import newton_minimize
from .model import Model, event_intensity, model_for
from .results import FitResult, to_jsonable
from .workspace import Workspace, WorkspaceError

TOY_NORM_CHUNK = (
    4096  # events per chunk of the normalisation pass inside vmapped toy fits (x batch in memory)
)

__all__ = [
    "reference_theta",
    "asimov_weights",
    "expected_fit",
    "ToySet",
    "ToyFits",
    "generate_toys",
    "toy_expected_counts",
    "fit_toys",
    "toy_study",
    "toy_pull_study",
    "neyman_construction",
    "belt_interval",
]


def _model(target: Workspace | Model) -> Model:
    """The target's model, JAX in float64 (every public function here starts with this)."""
    enable_float64()
    return target if isinstance(target, Model) else model_for(target)


def reference_theta(model: Model) -> np.ndarray:
    """Where the workspace's events represent the expected distribution (generated_at, else init)."""
    return model.reference_theta()


def asimov_weights(
    target: Workspace | Model, params: Mapping[str, float] | None = None
) -> np.ndarray:
    """Event weights representing the model's expectation at ``params`` (default: the reference).

    With a normalisation sample: v_i s_i(theta) / V, exactly the model's expectation (a fit to
    them returns ``params``); else the data weights reweighted from the reference point.
    """
    model = _model(target)
    ref = reference_theta(model)
    t = model.theta(params, base=ref)
    if model.has_norm:
        v = np.asarray(model.data["v"])
        return v * event_intensity(model, t) / float(np.sum(v))
    w = np.asarray(model.data["w"])
    if np.array_equal(t, ref):
        return w.copy()
    return w * event_intensity(model, t) / event_intensity(model, ref)


def expected_fit(
    target: Workspace | Model, params: Mapping[str, float] | None = None, **kwargs
) -> FitResult:
    """Fit to Asimov data at ``params`` (auxiliary values set to the nuisances' values there)."""
    model = _model(target)
    t = model.theta(params, base=reference_theta(model))
    return fit(model, weights=asimov_weights(model, params), aux=t[model.n_free :], **kwargs)


@dataclass(frozen=True, eq=False)
class ToySet:
    """Toys as gathered event indices and multiplicities (T, n_max) and auxiliary values (T, K)."""

    theta_true: np.ndarray
    index: np.ndarray
    counts: np.ndarray
    aux: np.ndarray


def generate_toys(
    target: Workspace | Model,
    n_toys: int,
    seed: int,
    params: Mapping[str, float] | None = None,
    pad_to: int | None = None,
) -> ToySet:
    """Draw ``n_toys`` toys at ``params`` (default: the reference point).

    ``pad_to``: minimum gathered size, so toys at several points share one compiled shape.
    Raises :class:`WorkspaceError` when a row's expected count is negative (see
    :func:`toy_expected_counts`): such rows cannot be resampled without bias.
    """
    model = _model(target)
    if (
        not model.has_norm
        and model.workspace.data.kind != "asimov"
        and not model.workspace.data.generated_at
    ):
        raise WorkspaceError(
            "toys resample weighted simulated events: the workspace data are 'observed' and have no "
            "data.generated_at or data.norm_weights; build the workspace from weighted simulation "
            "(kind 'asimov') or give a normalisation sample"
        )
    t = model.theta(params, base=reference_theta(model))
    lam = toy_expected_counts(model, params)
    rng = np.random.default_rng(seed)
    idx_list, cnt_list = [], []
    for _ in range(n_toys):
        k = rng.poisson(lam)
        nz = np.flatnonzero(k)
        idx_list.append(nz)
        cnt_list.append(k[nz])
    n_max = max(int(pad_to or 0), _padded_size(max(len(i) for i in idx_list)))
    index = np.zeros((n_toys, n_max), dtype=np.int64)
    counts = np.zeros((n_toys, n_max))
    for j, (i, c) in enumerate(zip(idx_list, cnt_list)):
        index[j, : len(i)] = i
        counts[j, : len(c)] = c
    aux = t[model.n_free :][None, :] + rng.standard_normal((n_toys, model.n_np))
    return ToySet(t, index, counts, aux)


NEGATIVE_COUNT_RTOL = 1e-12  # |lambda_i| below this times max lambda is rounding, set to 0


def toy_expected_counts(
    target: Workspace | Model, params: Mapping[str, float] | None = None
) -> np.ndarray:
    """Per-row Poisson means lambda_i of a toy at ``params`` (the Asimov weights), checked.

    A negative lambda_i cannot be a Poisson mean. Clipping it to 0 would silently draw toys
    from another model (the clipped rows' negative share of nu is dropped, so toys are biased
    upwards exactly where negative weights or negative coefficients such as 1 - sqrt(mu) at
    mu > 1 matter), so it is an error naming the rows; only rounding-level negatives
    (|lambda_i| < 1e-12 max lambda) are set to 0.
    """
    model = _model(target)
    lam = np.array(asimov_weights(model, params), dtype=np.float64)
    t = model.theta(params, base=reference_theta(model))
    point = ", ".join(f"{n}={v:.6g}" for n, v in zip(model.names, t))
    top = float(np.max(lam)) if lam.size else 0.0
    bad_nf = ~np.isfinite(lam)
    if bad_nf.any():
        raise WorkspaceError(
            f"toys at ({point}): {int(bad_nf.sum())} of {lam.size} rows have a non-finite expected "
            f"count (first rows {np.flatnonzero(bad_nf)[:5].tolist()})"
        )
    lam[(lam < 0) & (np.abs(lam) < NEGATIVE_COUNT_RTOL * max(top, 0.0))] = 0.0
    neg = np.flatnonzero(lam < 0)
    if neg.size or not lam.sum() > 0:
        rows = ", ".join(f"{int(i)}: {lam[i]:.4g}" for i in neg[:5])
        more = ", ..." if neg.size > 5 else ""
        what = (
            f"{neg.size} of {lam.size} rows have a negative expected count (first rows {rows}{more})"
            if neg.size
            else f"the total expected count is {lam.sum():.4g}"
        )
        raise WorkspaceError(
            f"toys at ({point}): {what}, so they cannot be Poisson means and clipping them would bias the toys. "
            "Toys resample the normalisation sample: they need non-negative normalisation weights (data.norm_weights, "
            "or non-negative weights of Asimov data) whose total model intensity is positive at this point; for "
            "negative-weight simulation draw pseudo-data from the simulator instead and fit it as observed data"
        )
    return lam


def _padded_size(n: int) -> int:
    """n rounded up to 1/8 of its power of two (at least 64): toy sets of similar size (a study,
    the points of a Neyman belt) share one gathered shape and hence one compiled fit, for at
    most 12.5 % padding."""
    step = max(64, 2 ** max(0, int(math.floor(math.log2(max(n, 1)))) - 3))
    return int(math.ceil(max(n, 1) / step) * step)


def _toy_model(model: Model, n_max: int) -> Model:
    """A view of ``model`` for gathered toy events: same structure, n_max events in one chunk."""
    key = ("toy_model", n_max)
    cache = model.__dict__.setdefault("_fit_cache", {})
    if key not in cache:
        tm = copy.copy(model)
        tm.__dict__ = dict(model.__dict__)
        tm.n_events = n_max
        tm.chunk_size = n_max
        tm.norm_chunk_size = min(model.chunk_size, TOY_NORM_CHUNK)
        tm.__dict__["_fit_cache"] = {}  # per-instance cache, always reached through __dict__
        cache[key] = tm
    return cache[key]


@dataclass(frozen=True, eq=False)
class ToyFits:
    """Per-toy results: theta-hat (T, P), errors and covariance (2 H^-1; T, P[, P]), q_min (T,),
    converged (T,), Newton iterations (T,); at_bound (T, P): free parameters within their
    resolution of a bound (error NaN, covariance rows zero: no Hessian error there)."""

    names: tuple[str, ...]
    theta: np.ndarray
    errors: np.ndarray
    q_min: np.ndarray
    converged: np.ndarray
    covariance: np.ndarray
    n_iter: np.ndarray
    at_bound: np.ndarray | None = None

    def to_dict(self) -> dict:
        return to_jsonable(
            {
                "names": self.names,
                "theta": self.theta,
                "errors": self.errors,
                "q_min": self.q_min,
                "converged": self.converged,
                "n_iter": self.n_iter,
                **({} if self.at_bound is None else {"at_bound": self.at_bound}),
            }
        )


def _batched_fit(tm: Model) -> Compiled:
    cache = tm.__dict__.setdefault("_fit_cache", {})
    key = "vfit"
    if key not in cache:

        def one(theta0, fixed, lower, upper, events, norm, aux, edm_tol, max_iter):
            data = events if norm is None else {**events, "norm": norm}
            state, status = newton_minimize(
                lambda t: tm.q_vgh(t, data, aux),
                theta0,
                fixed,
                lower,
                upper,
                edm_tol=edm_tol,
                max_iter=max_iter,
            )
            return state.theta, state.q, state.H, status, state.it

        # toys differ in start, events and aux; the normalisation sample is shared (not batched)
        axes = (0, None, None, None, 0, None, 0, None, None)
        cache[key] = Compiled(jax.vmap(one, in_axes=axes), "toy_fits", tm.clock)
    return cache[key]


def _batched_q(tm: Model) -> Compiled:
    """q at given parameters for a batch of toys (the escape from a bound's candidate points)."""
    cache = tm.__dict__.setdefault("_fit_cache", {})
    if "vq" not in cache:

        def one(theta, events, norm, aux):
            return tm.q_value(theta, events if norm is None else {**events, "norm": norm}, aux)

        cache["vq"] = Compiled(jax.vmap(one, in_axes=(0, 0, None, 0)), "toy_q", tm.clock)
    return cache["vq"]


def _norm_sample(model: Model) -> dict | None:
    """The full normalisation sample (fixed v) that every toy fit uses, or None."""
    if not model.has_norm:
        return None
    return {k: model.data[k] for k in ("v", "vscale", "r", "up", "down")}


def _covariances(H: np.ndarray, free: np.ndarray, at_bound: np.ndarray | None = None) -> np.ndarray:
    """2 H^-1 on the free parameters for a stack of Hessians (NaN where H is singular);
    ``at_bound`` (T, P): per toy, parameters held at a bound, left out like fixed ones."""
    T, P = H.shape[0], H.shape[1]
    cov = np.zeros((T, P, P))
    for j in range(T):
        f = free if at_bound is None else free & ~at_bound[j]
        try:
            cov[j][np.ix_(f, f)] = 2.0 * np.linalg.inv(H[j][np.ix_(f, f)])
        except np.linalg.LinAlgError:
            cov[j][np.ix_(f, f)] = np.nan
    return cov


def fit_toys(
    target: Workspace | Model,
    toys: ToySet,
    fixed: Mapping[str, float] | None = None,
    batch: int = 100,
    edm_tol: float = 1e-8,
    max_iter: int = 30,
    init: np.ndarray | None = None,
    progress: str | None = None,
) -> ToyFits:
    """Fit every toy (vectorised in batches of ``batch``; one compilation per batch shape).

    Each toy's event term runs over its gathered events; the normalisation term n_c(alpha) over
    the model's full normalisation sample (the same fixed v for every toy, never the gathered
    subset). ``init`` (T, P): per-toy starting points (default: the truth). ``progress``: the
    label of a progress bar over the toys (on a large normalisation sample a batch takes
    minutes).
    """
    model = _model(target)
    T, n_max = toys.index.shape
    tm = _toy_model(model, n_max)
    exe = _batched_fit(tm)
    mask, fvals = fixed_mask(model, fixed)
    theta0 = np.tile(toys.theta_true, (T, 1)) if init is None else np.array(init, dtype=np.float64)
    for n, v in fvals.items():
        theta0[:, model.index[n]] = v
    theta0 = np.clip(theta0, model.lower, model.upper)
    norm = _norm_sample(model)
    batch = min(batch, T)
    consts = (jnp.asarray(mask), jnp.asarray(model.lower), jnp.asarray(model.upper))

    def batches(rows: np.ndarray, start: np.ndarray):
        """(size, start, events, aux) per batch of toys ``rows``, padded to ``batch``."""
        for s in range(0, rows.size, batch):
            sel = rows[s : s + batch]
            pad = batch - sel.size
            sel_p = np.concatenate([sel, np.repeat(sel[-1:], pad)]) if pad else sel
            th0 = start[s : s + batch]
            th0 = np.concatenate([th0, np.repeat(th0[-1:], pad, 0)]) if pad else th0
            jidx = jnp.asarray(toys.index[sel_p])
            data = jax.tree_util.tree_map(
                operator.itemgetter(jidx), {k: model.data[k] for k in ("r", "up", "down")}
            )
            data["w"] = jnp.asarray(toys.counts[sel_p])
            yield sel.size, jnp.asarray(th0), data, jnp.asarray(toys.aux[sel_p])

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=T, desc=progress, unit="toy")

    def run(rows: np.ndarray, start: np.ndarray, iters: int) -> list[np.ndarray]:
        out: list[list[np.ndarray]] = [[] for _ in range(5)]  # theta, q, H, status, it
        for size, th0, data, aux in batches(rows, start):
            res = exe(
                th0,
                *consts,
                data,
                norm,
                aux,
                jnp.asarray(edm_tol, jnp.float64),
                jnp.asarray(iters, jnp.int32),
            )
            for acc, v in zip(out, res):
                acc.append(np.asarray(v)[:size])
            if bar is not None and bar.n < T:
                bar.update(min(size, T - bar.n))  # the first pass; bound escapes come after
        return [np.concatenate(acc) for acc in out]

    def q_at(rows: np.ndarray, points: np.ndarray) -> np.ndarray:
        qexe = _batched_q(tm)
        return np.concatenate(
            [
                np.asarray(qexe(th, data, norm, aux))[:size]
                for size, th, data, aux in batches(rows, points)
            ]
        )

    theta, q, H, status, it = run(np.arange(T), theta0, max_iter)
    for p in (model.index[n] for n in model.poi_names):
        _escape_toy_bound(model, run, q_at, p, mask, max_iter, (theta, q, H, status, it))
    if bar is not None:
        bar.close()
    at = bound_mask(theta, model.lower, model.upper, mask)
    cov = _covariances(H, ~mask, at)
    errors = np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2), 0.0, None))
    errors[at] = np.nan  # no Hessian error at a bound (never the 1e-50 of a capped derivative)
    return ToyFits(model.names, theta, errors, q, status == 0, cov, it, at)


# Points (fractions of the POI's range, from the bound inward) where q is screened: geometric,
# because with sqrt(mu) terms a better minimum can sit at mu ~ 1e-4 of the range while q at
# 1e-3 is already far above the bound's (measured on the demo's b-only toys).
TOY_ESCAPE_FRACTIONS = (1e-7, 1e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3)


def _escape_toy_bound(
    model: Model, run: Any, q_at: Any, p: int, mask: np.ndarray, iters: int, arrays: tuple
) -> None:
    """Refit the toys whose fit left POI ``p`` on a bound that is provably not their best fit,
    in place on ``arrays`` = (theta, q, H, status, it).

    q is evaluated at a few points inside (the other parameters as fitted: an upper bound on
    the profiled q there); only toys with a point below their fitted q are refitted, from
    their lowest point, and keep the refit if it converged lower. Why: with sqrt(mu)
    coefficients Newton started at or sent to mu = 0 takes vanishing steps there, and q can
    have a local minimum on the bound beside a deeper one inside (the single-fit version is
    `sbi_engine.fit.api.boundary_escape_start`)."""
    theta, q, H, status, it = arrays
    if mask[p]:
        return
    lo, hi = float(model.lower[p]), float(model.upper[p])
    width = hi - lo if np.isfinite(hi - lo) else max(10.0, 10.0 * abs(float(model.init[p])))
    rows = np.flatnonzero(bound_mask(theta, model.lower, model.upper, mask)[:, p])
    if rows.size == 0:
        return
    at_lo = np.abs(theta[rows, p] - lo) <= np.abs(theta[rows, p] - hi)
    best_q, best = q[rows] - ESCAPE_MIN_GAIN, np.full((rows.size, theta.shape[1]), np.nan)
    for frac in TOY_ESCAPE_FRACTIONS:
        start = theta[rows].copy()
        start[:, p] = np.where(at_lo, lo + width * frac, hi - width * frac)
        start = np.clip(start, model.lower, model.upper)
        q_start = q_at(rows, start)
        lower = np.isfinite(q_start) & (q_start < best_q)
        best_q[lower], best[lower] = q_start[lower], start[lower]
    todo = ~np.isnan(best[:, 0])
    if not todo.any():
        return
    th, qq, hh, st, n_it = run(rows[todo], best[todo], iters)
    better = (st == 0) & (qq < q[rows[todo]] - ESCAPE_MIN_GAIN)
    sel = rows[todo][better]
    theta[sel], q[sel], H[sel], status[sel] = th[better], qq[better], hh[better], st[better]
    it[sel] = it[sel] + n_it[better]


def conditional_start(model: Model, free: ToyFits, poi: str, value: float) -> np.ndarray:
    """Starting points for fits with ``poi`` fixed at ``value``: each toy's best fit moved along
    its covariance (the linear prediction of the profiled parameters)."""
    p = model.index[poi]
    cov = np.nan_to_num(free.covariance)
    cpp = cov[:, p, p]
    d = value - free.theta[:, p]
    slope = np.where(cpp[:, None] > 0, cov[:, :, p] / np.where(cpp > 0, cpp, 1.0)[:, None], 0.0)
    start = free.theta + slope * d[:, None]
    start[:, p] = value
    return np.clip(start, model.lower, model.upper)


def toy_study(
    target: Workspace | Model,
    n_toys: int,
    seed: int,
    params: Mapping[str, float] | None = None,
    poi: str | None = None,
    batch: int = 100,
    edm_tol: float = 1e-8,
    pad_to: int | None = None,
) -> dict:
    """Pulls and coverage of ``poi`` over toys at ``params``, with per-toy results.

    Two vectorised fits per toy: free, and with ``poi`` fixed at its true value (started from
    the free fit's linear prediction). Reported, over the toys where both converged:

    * Hessian pull (poi-hat - truth) / sigma-hat (sigma from 2 H^-1): ``pull_mean``,
      ``pull_width`` and ``coverage_hesse_68`` (|pull| < 1);
    * profile (MINOS-like) interval {poi: q(poi) - q_min < level}: it covers the truth exactly
      when dq = q(truth, profiled) - q_min < level, so ``coverage_profile_68`` / ``_95`` need
      one conditional fit per toy, not a search for the interval's edges; the signed root
      z = sign(poi-hat - truth) sqrt(dq) is the profile pull (``pull_profile_mean`` / ``_width``);
    * per toy (same order, converged toys only): ``toy_index``, ``mu_hat``, ``sigma`` (Hessian),
      ``pulls`` (Hessian), ``pulls_profile`` (z).

    ``pad_to``: minimum gathered size (see :func:`generate_toys`), to share a compiled fit.
    """
    model = _model(target)
    poi = poi or model.poi_names[0]
    p = model.index[poi]
    toys = generate_toys(model, n_toys, seed, params, pad_to=pad_to)
    truth = float(toys.theta_true[p])
    free = fit_toys(model, toys, batch=batch, edm_tol=edm_tol)
    cond = fit_toys(
        model,
        toys,
        fixed={poi: truth},
        batch=batch,
        edm_tol=edm_tol,
        init=conditional_start(model, free, poi, truth),
    )
    ok = free.converged & cond.converged & (free.errors[:, p] > 0)
    mu_hat, sigma = free.theta[ok, p], free.errors[ok, p]
    pull = (mu_hat - truth) / sigma
    dq_raw = cond.q_min[ok] - free.q_min[ok]
    dq = np.clip(dq_raw, 0.0, None)
    z = np.sign(mu_hat - truth) * np.sqrt(dq)
    sd = lambda a: float(a.std(ddof=1)) if a.size > 1 else float("nan")  # noqa: E731
    return to_jsonable(
        {
            "poi": poi,
            "truth": truth,
            "n_toys": n_toys,
            "n_converged": int(ok.sum()),
            "pull_mean": float(pull.mean()) if pull.size else float("nan"),
            "pull_width": sd(pull),
            "coverage_hesse_68": float(np.mean(np.abs(pull) < 1.0)),
            "pull_profile_mean": float(z.mean()) if z.size else float("nan"),
            "pull_profile_width": sd(z),
            "coverage_profile_68": float(np.mean(dq < 1.0)),
            "coverage_profile_95": float(np.mean(dq < 3.841458820694124)),
            "n_conditional_below_free": int(np.sum(dq_raw < -1e-6)),
            "mean_iterations": float(np.mean(free.n_iter)),
            "toy_index": np.flatnonzero(ok),
            "mu_hat": mu_hat,
            "sigma": sigma,
            "pulls": pull,
            "pulls_profile": z,
        }
    )


def _binomial(hits: np.ndarray) -> tuple[float, float]:
    """Fraction of True and its binomial standard error sqrt(p (1 - p) / n)."""
    n = hits.size
    if n == 0:
        return float("nan"), float("nan")
    p = float(np.mean(hits))
    return p, math.sqrt(p * (1.0 - p) / n)


def toy_pull_study(
    target: Workspace | Model,
    mu_true: float,
    n_toys: int,
    seed: int,
    *,
    poi: str | None = None,
    batch: int = 100,
    pad_to: int | None = None,
) -> dict:
    """Hessian pulls of ``poi`` over ``n_toys`` toys at ``poi = mu_true``, each figure with its
    statistical error, so a report can say whether a deviation is significant.

    One vectorised free fit per toy (cheaper than :func:`toy_study`, which adds a conditional
    fit for profile intervals). Returned (over converged toys with sigma > 0):

    * ``pull_mean`` +- ``pull_mean_se`` (s / sqrt(n)), ``pull_width`` +- ``pull_width_se``
      (s / sqrt(2 (n - 1)), the normal-theory error of a standard deviation);
    * ``count_mean`` +- ``count_mean_se`` (sample s.d. / sqrt(T)) next to ``count_expected``
      (sum of the Poisson means, the model's nu at the point) and ``count_pull``;
    * ``coverage_hesse_68`` / ``_95`` (|pull| < 1 / 1.96) with binomial errors ``..._se``;
    * ``n_toys``, ``n_converged``, ``truth``.
    """
    model = _model(target)
    poi = poi or model.poi_names[0]
    p = model.index[poi]
    params = {poi: float(mu_true)}
    toys = generate_toys(model, n_toys, seed, params, pad_to=pad_to)
    expected = float(np.sum(toy_expected_counts(model, params)))
    fits = fit_toys(model, toys, batch=batch)
    ok = fits.converged & (fits.errors[:, p] > 0)
    pull = (fits.theta[ok, p] - float(mu_true)) / fits.errors[ok, p]
    n = int(pull.size)
    sd = float(pull.std(ddof=1)) if n > 1 else float("nan")
    counts = toys.counts.sum(axis=1)
    c68, c68_se = _binomial(np.abs(pull) < 1.0)
    c95, c95_se = _binomial(np.abs(pull) < 1.959963984540054)
    count_se = (
        float(counts.std(ddof=1) / math.sqrt(counts.size)) if counts.size > 1 else float("nan")
    )
    return to_jsonable(
        {
            "poi": poi,
            "truth": float(mu_true),
            "n_toys": int(n_toys),
            "n_converged": n,
            "pull_mean": float(pull.mean()) if n else float("nan"),
            "pull_mean_se": sd / math.sqrt(n) if n > 1 else float("nan"),
            "pull_width": sd,
            "pull_width_se": sd / math.sqrt(2.0 * (n - 1)) if n > 1 else float("nan"),
            "count_mean": float(counts.mean()),
            "count_mean_se": count_se,
            "count_expected": expected,
            "count_pull": (float(counts.mean()) - expected) / count_se
            if count_se > 0
            else float("nan"),
            "coverage_hesse_68": c68,
            "coverage_hesse_68_se": c68_se,
            "coverage_hesse_95": c95,
            "coverage_hesse_95_se": c95_se,
        }
    )


def neyman_construction(
    target: Workspace | Model,
    poi_values: np.ndarray,
    n_toys: int,
    seed: int,
    observed: FitResult | None = None,
    cl: float = 0.68,
    poi: str | None = None,
    batch: int = 100,
    pad_to: int | None = None,
    profile_nuisances: bool = True,
) -> dict:
    """Neyman belt of t = q(poi) - q_min over a grid, and (with ``observed``) the interval.

    At each grid value v the toys are generated at the *conditional fit on the data*: poi = v
    and every other parameter (nuisances, other POIs, normalisation factors) at its profiled
    value theta-hat-hat(v), with the auxiliary measurements drawn around those values (the
    profile construction of the LHC experiments; ``profile_nuisances=False``: nuisances at the
    reference point, as before). Each toy is fitted freely and with poi = v (started from its
    free fit moved along its covariance); the critical value is the ``cl`` quantile of t.

    The interval: d(v) = t_observed(v) - critical(v) is <= 0 where v is accepted; each end is
    where d crosses 0, by linear interpolation between the neighbouring grid values (not the
    outermost accepted grid value). An accepted grid end is reported as such (flags
    ``lo_at_grid_end`` / ``hi_at_grid_end``: widen the grid); ``disjoint`` flags a set with holes.
    ``cost``: wall seconds, toys, toy fits and conditional fits on the data.

    Without ``observed`` the toys are generated at the reference point with ``poi`` = v
    (there is no data to profile on).
    """
    import time  # noqa: PLC0415

    t0 = time.perf_counter()
    model = _model(target)
    poi = poi or model.poi_names[0]
    p = model.index[poi]  # an unknown POI fails here, before any toys are generated
    values = np.asarray(poi_values, dtype=float)
    order = np.argsort(values)
    values = values[order]
    data_fits = []
    if observed is not None:
        for v in values:
            r = fit(model, fixed={poi: float(v)}, init=conditional_start_one(model, observed, p, v))
            data_fits.append(r)
    sets = []
    for j, v in enumerate(values):
        if observed is not None and profile_nuisances:
            gen = {n: float(x) for n, x in zip(model.names, data_fits[j].theta)}
        else:
            gen = {poi: float(v)}
        sets.append(generate_toys(model, n_toys, seed + 7919 * j, gen, pad_to=pad_to))
    n_max = max(t.index.shape[1] for t in sets)  # one shape -> one compilation for the whole belt
    rows: list[dict[str, Any]] = []
    for j, (v, toys) in enumerate(zip(values, sets)):
        if toys.index.shape[1] < n_max:
            pad = n_max - toys.index.shape[1]
            toys = ToySet(
                toys.theta_true,
                np.pad(toys.index, ((0, 0), (0, pad))),
                np.pad(toys.counts, ((0, 0), (0, pad))),
                toys.aux,
            )
        free = fit_toys(model, toys, batch=batch)
        cond = fit_toys(
            model,
            toys,
            fixed={poi: float(v)},
            batch=batch,
            init=conditional_start(model, free, poi, float(v)),
        )
        ok = free.converged & cond.converged
        t = np.clip(cond.q_min[ok] - free.q_min[ok], 0.0, None)
        row: dict[str, Any] = {
            "value": float(v),
            "critical": float(np.quantile(t, cl)) if t.size else float("nan"),
            "n_ok": int(ok.sum()),
            "generated_at": {n: float(x) for n, x in zip(model.names, toys.theta_true)},
        }
        if observed is not None:
            r = data_fits[j]
            row["t_observed"] = float(max(r.q_min - observed.q_min, 0.0))
            row["accepted"] = bool(row["t_observed"] <= row["critical"])
            row["data_fit_converged"] = bool(r.converged)
        rows.append(row)
    out: dict[str, Any] = {
        "poi": poi,
        "cl": cl,
        "grid": rows,
        "profiled": bool(observed is not None and profile_nuisances),
    }
    if observed is not None:
        out["interval"], out["interval_flags"] = belt_interval(
            values,
            np.array([r["t_observed"] - r["critical"] for r in rows]),
        )
        out["interval_grid"] = (
            [
                min(r["value"] for r in rows if r["accepted"]),
                max(r["value"] for r in rows if r["accepted"]),
            ]
            if any(r["accepted"] for r in rows)
            else None
        )
    out["cost"] = {
        "seconds": time.perf_counter() - t0,
        "toys": int(n_toys * len(values)),
        "toy_fits": int(2 * n_toys * len(values)),
        "data_fits": len(data_fits),
    }
    return to_jsonable(out)


def conditional_start_one(model: Model, result: FitResult, p: int, value: float) -> np.ndarray:
    """A start for a fit with parameter ``p`` fixed at ``value``: ``result`` moved along its
    covariance (the linear prediction of the profiled parameters)."""
    C = result.covariance
    theta = np.array(result.theta, dtype=np.float64)
    if C[p, p] > 0:
        theta = theta + C[:, p] / C[p, p] * (value - theta[p])
    theta[p] = value
    return np.clip(theta, model.lower, model.upper)


def belt_interval(values: np.ndarray, d: np.ndarray) -> tuple[list[float] | None, list[str]]:
    """The accepted set {v : d(v) <= 0} of a sorted grid with interpolated ends.

    Each end is the zero of d linearly interpolated between the last accepted and the first
    rejected grid value; an accepted grid end stays there (flagged). NaN d (no toys converged)
    counts as rejected. ([lo, hi] or None, flags)."""
    values = np.asarray(values, dtype=float)
    d = np.asarray(d, dtype=float)
    acc = np.isfinite(d) & (d <= 0)
    if not acc.any():
        return None, ["empty"]
    idx = np.flatnonzero(acc)
    i, k = int(idx[0]), int(idx[-1])
    flags = []
    if not acc[i : k + 1].all():
        flags.append("disjoint")

    def cross(a: int, b: int) -> float:
        # d(a) <= 0 < d(b) (or d(b) not finite: the rejected neighbour itself)
        if not np.isfinite(d[b]):
            return float(values[b])
        w = -d[a] / (d[b] - d[a]) if d[b] != d[a] else 0.5
        return float(values[a] + w * (values[b] - values[a]))

    if i == 0:
        lo = float(values[0])
        flags.append("lo_at_grid_end")
    else:
        lo = cross(i, i - 1)
    if k == len(values) - 1:
        hi = float(values[-1])
        flags.append("hi_at_grid_end")
    else:
        hi = cross(k, k + 1)
    return [lo, hi], flags
