"""Asimov data, toys (resampling the weighted simulation) with vectorised fits, and a Neyman
construction over a POI grid.

A toy at parameters theta_t draws k_i ~ Poisson(lambda_i) for every simulated event, with
lambda_i = w_i s_i(theta_t) / s_i(theta_ref) (theta_ref: where the workspace's weighted events
were generated, ``data.generated_at``); auxiliary values are drawn a_k ~ N(alpha_t,k, 1). The
events with k_i > 0 are gathered into fixed-size arrays (padding has weight 0), so a batch of
toys is one ``vmap`` of the compiled Newton fit: one compilation for all toys.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .api import fit, fixed_mask
from .compile import Compiled
from .minimize import newton_minimize
from .model import Model, event_intensity, model_for
from .results import FitResult, to_jsonable
from .workspace import Workspace, WorkspaceError

__all__ = ["reference_theta", "asimov_weights", "expected_fit", "ToySet", "ToyFits", "generate_toys",
           "fit_toys", "toy_study", "neyman_construction"]


def _model(target: Workspace | Model) -> Model:
    return target if isinstance(target, Model) else model_for(target)


def reference_theta(model: Model) -> np.ndarray:
    """Where the workspace's events represent the expected distribution (generated_at, else init)."""
    gen = model.workspace.data.generated_at or {}
    base = model.init.copy()
    base[model.n_free:] = model.aux
    return model.theta(gen, base=base)


def asimov_weights(target: Workspace | Model, params: Mapping[str, float] | None = None) -> np.ndarray:
    """Event weights representing the expectation at ``params`` (reweighted from the reference)."""
    model = _model(target)
    ref = reference_theta(model)
    t = model.theta(params, base=ref)
    w = np.asarray(model.data["w"])
    if np.array_equal(t, ref):
        return w.copy()
    return w * event_intensity(model, t) / event_intensity(model, ref)


def expected_fit(target: Workspace | Model, params: Mapping[str, float] | None = None, **kwargs) -> FitResult:
    """Fit to Asimov data at ``params`` (auxiliary values set to the nuisances' values there)."""
    model = _model(target)
    t = model.theta(params, base=reference_theta(model))
    return fit(model, weights=asimov_weights(model, params), aux=t[model.n_free:], **kwargs)


@dataclass(frozen=True, eq=False)
class ToySet:
    """Toys as gathered event indices and multiplicities (T, n_max) and auxiliary values (T, K)."""

    theta_true: np.ndarray
    index: np.ndarray
    counts: np.ndarray
    aux: np.ndarray


def generate_toys(target: Workspace | Model, n_toys: int, seed: int,
                  params: Mapping[str, float] | None = None, pad_to: int | None = None) -> ToySet:
    """Draw ``n_toys`` toys at ``params`` (default: the reference point).

    ``pad_to``: minimum gathered size, so toys at several points share one compiled shape.
    """
    model = _model(target)
    if model.workspace.data.kind != "asimov" and not model.workspace.data.generated_at:
        raise WorkspaceError("toys resample weighted simulated events: the workspace data are 'observed' and have no "
                             "data.generated_at; build the workspace from weighted simulation (kind 'asimov')")
    t = model.theta(params, base=reference_theta(model))
    lam = np.clip(asimov_weights(model, params), 0.0, None)
    rng = np.random.default_rng(seed)
    idx_list, cnt_list = [], []
    for _ in range(n_toys):
        k = rng.poisson(lam)
        nz = np.flatnonzero(k)
        idx_list.append(nz)
        cnt_list.append(k[nz])
    n_max = max(1, max(len(i) for i in idx_list))
    n_max = max(int(math.ceil(n_max / 64) * 64), int(pad_to or 0))
    index = np.zeros((n_toys, n_max), dtype=np.int64)
    counts = np.zeros((n_toys, n_max))
    for j, (i, c) in enumerate(zip(idx_list, cnt_list)):
        index[j, : len(i)] = i
        counts[j, : len(c)] = c
    aux = t[model.n_free:][None, :] + rng.standard_normal((n_toys, model.n_np))
    return ToySet(t, index, counts, aux)


def _toy_model(model: Model, n_max: int) -> Model:
    """A view of ``model`` for gathered toy events: same structure, n_max events in one chunk."""
    key = ("toy_model", n_max)
    cache = model.__dict__.setdefault("_fit_cache", {})
    if key not in cache:
        tm = copy.copy(model)
        tm.__dict__ = dict(model.__dict__)
        tm.n_events = n_max
        tm.chunk_size = n_max
        tm._fit_cache = {}
        cache[key] = tm
    return cache[key]


@dataclass(frozen=True, eq=False)
class ToyFits:
    """Per-toy results: theta-hat (T, P), errors (T, P), q_min (T,), converged (T,)."""

    names: tuple[str, ...]
    theta: np.ndarray
    errors: np.ndarray
    q_min: np.ndarray
    converged: np.ndarray

    def to_dict(self) -> dict:
        return to_jsonable({"names": self.names, "theta": self.theta, "errors": self.errors, "q_min": self.q_min,
                            "converged": self.converged})


def _batched_fit(tm: Model) -> Compiled:
    cache = tm.__dict__.setdefault("_fit_cache", {})
    key = "vfit"
    if key not in cache:
        def one(theta0, fixed, lower, upper, data, aux, edm_tol, max_iter):
            state, status = newton_minimize(lambda t: tm.q_vgh(t, data, aux), theta0, fixed, lower, upper,
                                            edm_tol=edm_tol, max_iter=max_iter)
            return state.theta, state.q, state.H, status

        cache[key] = Compiled(jax.vmap(one, in_axes=(0, None, None, None, 0, 0, None, None)), "toy_fits", tm.clock)
    return cache[key]


def fit_toys(target: Workspace | Model, toys: ToySet, fixed: Mapping[str, float] | None = None,
             batch: int = 100, edm_tol: float = 1e-8, max_iter: int = 30) -> ToyFits:
    """Fit every toy (vectorised in batches of ``batch``; one compilation per batch shape)."""
    model = _model(target)
    T, n_max = toys.index.shape
    tm = _toy_model(model, n_max)
    exe = _batched_fit(tm)
    mask, fvals = fixed_mask(model, fixed)
    theta0 = np.tile(toys.theta_true, (T, 1))
    for n, v in fvals.items():
        theta0[:, model.index[n]] = v
    thetas, qs, errs, conv = [], [], [], []
    batch = min(batch, T)
    for s in range(0, T, batch):
        sl = slice(s, min(s + batch, T))
        idx, cnt, aux, th0 = toys.index[sl], toys.counts[sl], toys.aux[sl], theta0[sl]
        pad = batch - idx.shape[0]
        if pad:
            idx = np.concatenate([idx, np.repeat(idx[-1:], pad, 0)])
            cnt = np.concatenate([cnt, np.repeat(cnt[-1:], pad, 0)])
            aux = np.concatenate([aux, np.repeat(aux[-1:], pad, 0)])
            th0 = np.concatenate([th0, np.repeat(th0[-1:], pad, 0)])
        jidx = jnp.asarray(idx)
        data = jax.tree_util.tree_map(lambda a: a[jidx], {k: v for k, v in model.data.items() if k != "w"})
        data["w"] = jnp.asarray(cnt)
        theta, q, H, status = exe(jnp.asarray(th0), jnp.asarray(mask), jnp.asarray(model.lower),
                                  jnp.asarray(model.upper), data, jnp.asarray(aux),
                                  jnp.asarray(edm_tol, jnp.float64), jnp.asarray(max_iter, jnp.int32))
        H = np.asarray(H)
        free = ~mask
        e = np.zeros((batch, model.n_params))
        for j in range(batch):
            try:
                e[j, free] = np.sqrt(np.clip(np.diag(2.0 * np.linalg.inv(H[j][np.ix_(free, free)])), 0, None))
            except np.linalg.LinAlgError:
                e[j, free] = np.nan
        keep = batch - pad
        thetas.append(np.asarray(theta)[:keep])
        qs.append(np.asarray(q)[:keep])
        errs.append(e[:keep])
        conv.append(np.asarray(status)[:keep] == 0)
    return ToyFits(model.names, np.concatenate(thetas), np.concatenate(errs), np.concatenate(qs), np.concatenate(conv))


def toy_study(target: Workspace | Model, n_toys: int, seed: int, params: Mapping[str, float] | None = None,
              poi: str | None = None, batch: int = 100) -> dict:
    """Pulls and coverage of ``poi`` over toys at ``params``.

    Reports the pull mean / width of (poi-hat - poi_true) / sigma-hat, the coverage of the
    Hessian interval and of the profile-likelihood 68 % interval (q(poi_true) - q_min < 1,
    from a second, conditional vectorised fit).
    """
    model = _model(target)
    poi = poi or model.poi_names[0]
    p = model.index[poi]
    toys = generate_toys(model, n_toys, seed, params)
    free = fit_toys(model, toys, batch=batch)
    cond = fit_toys(model, toys, fixed={poi: float(toys.theta_true[p])}, batch=batch)
    ok = free.converged & cond.converged & (free.errors[:, p] > 0)
    truth = toys.theta_true[p]
    pull = (free.theta[ok, p] - truth) / free.errors[ok, p]
    dq = cond.q_min[ok] - free.q_min[ok]
    return to_jsonable({
        "poi": poi, "truth": truth, "n_toys": n_toys, "n_converged": int(ok.sum()),
        "pull_mean": float(pull.mean()), "pull_width": float(pull.std(ddof=1)),
        "coverage_hesse_68": float(np.mean(np.abs(pull) < 1.0)),
        "coverage_profile_68": float(np.mean(dq < 1.0)),
        "coverage_profile_95": float(np.mean(dq < 3.841458820694124)),
    })


def neyman_construction(target: Workspace | Model, poi_values: np.ndarray, n_toys: int, seed: int,
                        observed: FitResult | None = None, cl: float = 0.68, poi: str | None = None,
                        batch: int = 100) -> dict:
    """Neyman belt of t = q(poi) - q_min over a grid: toys at each value (nuisances at the
    reference), the CL quantile of t, and (with ``observed``) the confidence set."""
    model = _model(target)
    poi = poi or model.poi_names[0]
    p = model.index[poi]
    rows = []
    values = np.asarray(poi_values, dtype=float)
    sets = [generate_toys(model, n_toys, seed + 7919 * j, {poi: float(v)}) for j, v in enumerate(values)]
    n_max = max(t.index.shape[1] for t in sets)  # one shape -> one compilation for the whole belt
    for v, toys in zip(values, sets):
        if toys.index.shape[1] < n_max:
            pad = n_max - toys.index.shape[1]
            toys = ToySet(toys.theta_true, np.pad(toys.index, ((0, 0), (0, pad))),
                          np.pad(toys.counts, ((0, 0), (0, pad))), toys.aux)
        free = fit_toys(model, toys, batch=batch)
        cond = fit_toys(model, toys, fixed={poi: float(v)}, batch=batch)
        ok = free.converged & cond.converged
        t = np.clip(cond.q_min[ok] - free.q_min[ok], 0.0, None)
        row = {"value": float(v), "critical": float(np.quantile(t, cl)), "n_ok": int(ok.sum())}
        if observed is not None:
            r = fit(model, fixed={poi: float(v)}, init=observed.theta)
            row["t_observed"] = float(max(r.q_min - observed.q_min, 0.0))
            row["accepted"] = bool(row["t_observed"] <= row["critical"])
        rows.append(row)
    out = {"poi": poi, "cl": cl, "grid": rows}
    if observed is not None:
        acc = [r["value"] for r in rows if r["accepted"]]
        out["interval"] = [min(acc), max(acc)] if acc else None
    return to_jsonable(out)
