"""Refits with other per-event arrays: the spread of the fit over NN ensemble members, over
retrainings, or over bootstrap replicas of the normalisation sample (simulation statistics).

A :class:`Variant` replaces some per-event arrays of a workspace (process ratios, shape
up/down arrays, normalisation weights) and leaves the rest. :func:`refit_variants` fits every
variant with the base model's compiled Newton fit: the variant's data pytree has the base
``model.data``'s structure, shapes and dtypes, so all variants share one compilation (a fresh
Workspace per variant would compile the fit again each time, seconds per variant).

Exactness. A fresh Workspace with the variant's arrays would normalise its ratios on its
normalisation sample, k'_c = V' / D'_c (``Model.ratio_scale``), and set vscale'_c = 1 / D'_c.
The compiled fit, however, holds the base model's k_c as a constant (it is read while tracing).
So the variant passes r_c * k'_c / k_c as its ratio array and k_c / V' as vscale_c: in the event
term the kernel multiplies by k_c and gets k'_c r_c, and in the normalisation term
v_i (r_c k'_c / k_c) vscale_c = v_i r_c / D'_c, exactly the fresh model's q. The only difference
is the rounding of the rescaled ratio to the storage dtype (relative 6e-8 per event in float32,
1e-16 in float64). D'_c is computed from the storage-dtype ratios, as the Model does.

>>> # see tests/fit/test_variations.py for complete examples
"""

from __future__ import annotations

import copy
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..precision import enable_float64
from .api import fit
from .model import Model, model_for
from .results import FitResult, to_jsonable
from .workspace import Workspace, WorkspaceError

__all__ = ["Variant", "VariantFits", "variant_data", "refit_variants", "bootstrap_norm_variants"]


@dataclass(frozen=True, eq=False)
class Variant:
    """Per-event arrays that replace the workspace's for one refit (anything not given is kept).

    ratios: {process: r_c (n,)}; shapes: {(nuisance, process): (up (n,), down (n,))} for effects
    that already have a shape in the workspace; norm_weights: v (n,) (e.g. a Poisson(1)
    bootstrap of the normalisation sample). ``label`` names the variant in reports.
    """

    ratios: Mapping[str, Any] = field(default_factory=dict)
    shapes: Mapping[tuple[str, str], tuple[Any, Any]] = field(default_factory=dict)
    norm_weights: Any = None
    label: str = ""


@dataclass(frozen=True, eq=False)
class VariantFits:
    """Fits of V variants: theta-hat and Hessian errors (V, P), q_min and converged (V,)."""

    names: tuple[str, ...]
    labels: tuple[str, ...]
    theta: np.ndarray
    errors: np.ndarray
    q_min: np.ndarray
    converged: np.ndarray
    results: tuple[FitResult, ...] = field(repr=False, default=())

    def spread(self, name: str) -> tuple[float, float]:
        """(sample standard deviation of ``name``-hat over the converged variants, its standard
        error s / sqrt(2 (n - 1))): the uncertainty component the variants represent."""
        vals = self.theta[self.converged, self.names.index(name)]
        n = vals.size
        if n < 2:
            return float("nan"), float("nan")
        s = float(np.std(vals, ddof=1))
        return s, s / math.sqrt(2.0 * (n - 1))

    def to_dict(self) -> dict:
        return to_jsonable(
            {
                "names": self.names,
                "labels": self.labels,
                "theta": self.theta,
                "errors": self.errors,
                "q_min": self.q_min,
                "converged": self.converged,
            }
        )


def _model(target: Workspace | Model) -> Model:
    """The target's model, JAX in float64 (every public function here starts with this)."""
    enable_float64()
    return target if isinstance(target, Model) else model_for(target)


def _replaced_ratios(model: Model, variant: Variant) -> list[Any]:
    """Per-process raw ratio arrays (storage dtype, before any normalisation) of the variant."""
    unknown = sorted(set(variant.ratios) - set(model.process_names))
    if unknown:
        raise WorkspaceError(
            f"variant {variant.label!r}: unknown process(es) {unknown} "
            f"(known: {list(model.process_names)})"
        )
    out = []
    for c, name in enumerate(model.process_names):
        if name in variant.ratios:
            out.append(
                _checked(
                    model, variant.ratios[name], f"variant {variant.label!r}: ratios[{name!r}]"
                )
            )
        else:
            out.append(model.data["r"][c])
    return out


def _checked(model: Model, arr: Any, where: str) -> jax.Array:
    """A per-event array in the model's storage dtype, checked for shape and positivity."""
    a = np.asarray(arr, dtype=np.float64)
    if a.shape != (model.n_events,):
        raise WorkspaceError(f"{where}: need shape ({model.n_events},), got {a.shape}")
    if not (np.all(np.isfinite(a)) and np.all(a > 0)):
        raise WorkspaceError(
            f"{where}: {int(np.sum(~(np.isfinite(a) & (a > 0))))} values are not finite and > 0"
        )
    return model._as_storage(a)


def _replaced_shapes(model: Model, variant: Variant) -> tuple[tuple, tuple]:
    """(up, down) pytrees of the variant in the model's layout (per process, per shape NP)."""
    up = [list(t) for t in model.data["up"]]
    dn = [list(t) for t in model.data["down"]]
    for (nuis, proc), (u, d) in variant.shapes.items():
        where = f"variant {variant.label!r}: shapes[({nuis!r}, {proc!r})]"
        if proc not in model.process_names or nuis not in model.nuisance_names:
            raise WorkspaceError(f"{where}: unknown process or nuisance")
        c, k = model.process_names.index(proc), model.nuisance_names.index(nuis)
        pos = np.flatnonzero(model._specs[c].np_index == k)
        if pos.size == 0:
            raise WorkspaceError(
                f"{where}: the workspace has no shape effect of {nuis!r} on {proc!r}; a variant can "
                "only replace existing shape arrays (a new effect changes the compiled model)"
            )
        up[c][int(pos[0])] = _checked(model, u, where + ".up")
        dn[c][int(pos[0])] = _checked(model, d, where + ".down")
    return tuple(tuple(t) for t in up), tuple(tuple(t) for t in dn)


def _asimov_norm_weights(model: Model, sample: Mapping[str, Any]) -> np.ndarray:
    """v_i = w_i / s_i(theta_gen) with the variant's arrays and no ratio normalisation (k = 1),
    as ``Model._norm_weights`` derives them for Asimov data."""
    theta = jnp.asarray(model.reference_theta(), jnp.float64)
    A = model.amplitudes(theta)
    terms = model._proc_terms(theta)
    w = np.asarray(model.data["w"], dtype=np.float64)
    s = np.empty(w.size)
    for start in range(0, w.size, model.chunk_size):
        chunk = jax.tree_util.tree_map(
            operator.itemgetter(slice(start, start + model.chunk_size)), dict(sample)
        )
        R, _, _ = model._per_event_R(chunk, terms, 0)
        s[start : start + model.chunk_size] = np.asarray(R @ A)
    live = w != 0
    bad = live & ~(s > 0)
    if bad.any():
        raise WorkspaceError(
            f"variant: the event intensity at the generation point is not > 0 for {int(bad.sum())} "
            "weighted events, so the Asimov events cannot serve as the normalisation sample"
        )
    return np.where(live, w / np.where(live, s, 1.0), 0.0)


def _variant_norm_weights(
    model: Model, variant: Variant, sample: Mapping[str, Any]
) -> np.ndarray | None:
    """The normalisation weights a fresh model of the variant would use (None: no normalisation)."""
    if not model.has_norm:
        if variant.norm_weights is not None and model._shape_procs.any():
            raise WorkspaceError(
                f"variant {variant.label!r}: the base model has no normalisation sample, so "
                "norm_weights cannot be swapped in (build the workspace with data.norm_weights)"
            )
        return None  # without shape effects a Model ignores norm_weights, as a fresh one would
    if variant.norm_weights is not None:
        v = np.asarray(variant.norm_weights, dtype=np.float64)
        if v.shape != (model.n_events,) or not np.all(np.isfinite(v)):
            raise WorkspaceError(
                f"variant {variant.label!r}: norm_weights need shape ({model.n_events},) and finite "
                f"values, got shape {v.shape}"
            )
        return v
    if model.norm_source == "asimov":
        return _asimov_norm_weights(model, sample)
    return np.asarray(model.data["v"], dtype=np.float64)


def variant_data(target: Workspace | Model, variant: Variant) -> dict[str, Any]:
    """The data pytree of ``variant`` for the base model's compiled functions (same structure,
    shapes and dtypes as ``model.data``), equal in q to a fresh model of the variant's arrays."""
    model = _model(target)
    if "norm" in model.data or getattr(model, "streaming", False):
        raise WorkspaceError(
            "refit variants need an in-memory model without a separate normalisation pass"
        )
    r = _replaced_ratios(model, variant)
    up, down = _replaced_shapes(model, variant)
    sample = {"r": tuple(r), "up": up, "down": down}
    v = _variant_norm_weights(model, variant, sample)
    data = {**model.data, **sample}
    if v is None:
        return data
    fresh = copy.copy(model)  # _norm_arrays sets ratio_scale on its model: keep the base model's
    fresh.__dict__ = dict(model.__dict__)
    norm = fresh._norm_arrays(v, sample)
    k_base, k_new = (
        np.asarray(model.ratio_scale, np.float64),
        np.asarray(fresh.ratio_scale, np.float64),
    )
    # The compiled kernel multiplies ratios by the base k_c: hand it r_c k'_c / k_c.
    data["r"] = tuple(
        x
        if k_new[c] == k_base[c]
        else model._as_storage(np.asarray(x, np.float64) * (k_new[c] / k_base[c]))
        for c, x in enumerate(r)
    )
    V = float(np.sum(v))
    data["v"] = norm["v"]
    data["vscale"] = jnp.asarray(np.where(model._shape_procs, k_base / V, 0.0), dtype=jnp.float64)
    return data


def refit_variants(
    ws: Workspace | Model,
    variants: Sequence[Variant],
    *,
    init: FitResult | None = None,
    **fit_kwargs: Any,
) -> VariantFits:
    """Fit every variant with the base model's compiled Newton fit (one compilation in all).

    ``init``: start every fit there (typically the base fit; default: the initial values).
    ``fit_kwargs`` go to :func:`fit` (``fixed``, ``aux``, ``edm_tol``, ...).
    """
    model = _model(ws)
    start = None if init is None else np.asarray(init.theta, dtype=np.float64)
    results = tuple(
        fit(model, data=variant_data(model, v), init=start, **fit_kwargs) for v in variants
    )
    P = model.n_params
    theta = np.array([r.theta for r in results]).reshape(len(results), P)
    errors = np.array([[r.errors[n] for n in model.names] for r in results]).reshape(
        len(results), P
    )
    return VariantFits(
        model.names,
        tuple(v.label or str(i) for i, v in enumerate(variants)),
        theta,
        errors,
        np.array([r.q_min for r in results]),
        np.array([r.converged for r in results], dtype=bool),
        results,
    )


def bootstrap_norm_variants(ws: Workspace | Model, n: int, seed: int) -> list[Variant]:
    """``n`` Poisson(1) bootstrap replicas of the normalisation sample (v_i -> k_i v_i,
    k_i ~ Poisson(1)): the spread of their refits estimates the simulation-statistics
    uncertainty that the finite normalisation sample puts on the fit (through k_c and n_c)."""
    model = _model(ws)
    if not model.has_norm:
        raise WorkspaceError(
            "bootstrap_norm_variants: the model has no normalisation sample (no shape effects, or "
            "observed data without data.norm_weights), so there is nothing to resample"
        )
    v = np.asarray(model.data["v"], dtype=np.float64)
    rng = np.random.default_rng(seed)
    return [
        Variant(norm_weights=v * rng.poisson(1.0, v.size), label=f"bootstrap {j}") for j in range(n)
    ]
