"""The compiled likelihood: q(theta) = -2 ln L over event chunks, with exact derivatives.

    q(theta) = 2 sum_c A_c(theta) - 2 sum_i w_i ln( sum_c A_c(theta) R_c(x_i; alpha) )
               + sum_k (alpha_k - a_k)^2 + q_CR(theta)

with A_c = m_c(POIs) nu_c eta_c(alpha) (the small, autodiffed part) and the per-event factor
R_c = r_c(x_i) exp(sum_k h_ck(x_i; alpha_k)) (code-4 shape interpolation in log form).

Events are processed in chunks of ``chunk_size`` with ``lax.scan`` (plus one static tail
chunk), so memory beyond the data is O(chunk). The exact Hessian per chunk is assembled from
the structure of the model: because h_ck depends on alpha_k only, the per-event Hessian is
``sum_c q_c [d2A_c + dA_c dH_c^T + dH_c dA_c^T + A_c (dH_c dH_c^T + diag h''_c)] - dL dL^T``,
so the event sums are a few matrix products (``E^T diag(w) E``) per chunk. A generic
forward-over-reverse path (``jax.jacfwd(jax.grad(chunk))``, all tangents batched) gives the
same numbers and is kept as the reference (``hessian_method="autodiff"``); Hessian-vector
products (``hvp``) serve models too wide for a dense Hessian.

Arrays are stored as given (float32 by default) and promoted to float64 inside the chunk
kernel; every sum over events accumulates in float64.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .compile import CompileClock, Compiled
from .interp import alpha_terms, log_factor
from .workspace import Workspace, WorkspaceError

__all__ = ["Model", "model_for"]

DEFAULT_CHUNK = 16384
_MODELS: "weakref.WeakKeyDictionary[Workspace, Model]" = weakref.WeakKeyDictionary()


def model_for(ws: Workspace, **kwargs: Any) -> Model:
    """The (cached) compiled model of a workspace; kwargs only apply when it is first built."""
    m = _MODELS.get(ws)
    if m is None or kwargs:
        m = Model(ws, **kwargs)
        _MODELS[ws] = m
    return m


@dataclass(frozen=True)
class _ProcSpec:
    name: str
    np_index: np.ndarray  # (K_c,) indices into the nuisance vector of the NPs with shape effects
    cols: np.ndarray  # (K_c,) indices into theta


class Model:
    """A workspace compiled into chunked, jitted NLL / gradient / Hessian functions.

    Shapes are fixed per model: fixing parameters, changing auxiliary values or event weights
    (Asimov data, toys) reuses the compiled functions.

    Args:
        ws: the workspace.
        chunk_size: events per chunk (memory O(chunk_size x NPs per process)).
        storage_dtype: dtype of the per-event arrays held by the model (float32 halves memory;
            arrays already of that dtype, e.g. JAX arrays from the caller, are not copied).
        hessian_method: "structured" (matrix products) or "autodiff" (forward-over-reverse).
    """

    def __init__(
        self,
        ws: Workspace,
        chunk_size: int = DEFAULT_CHUNK,
        storage_dtype: Any = jnp.float32,
        hessian_method: str = "structured",
    ):
        if hessian_method not in ("structured", "autodiff"):
            raise ValueError(f"hessian_method must be 'structured' or 'autodiff', got {hessian_method!r}")
        self.workspace = ws
        self.chunk_size = int(chunk_size)
        self.storage_dtype = jnp.dtype(storage_dtype)
        self.hessian_method = hessian_method
        self.clock = CompileClock()
        self.names: tuple[str, ...] = ws.parameter_names
        self.poi_names = ws.poi_names
        self.nuisance_names = ws.nuisance_names
        self.n_free = len(ws.free_parameters)
        self.n_np = len(ws.nuisances)
        self.n_params = len(self.names)
        self.n_events = ws.n_events
        self.index = {n: i for i, n in enumerate(self.names)}
        self.init = np.array([p.init for p in ws.free_parameters] + [k.init for k in ws.nuisances], dtype=np.float64)
        self.lower = np.array([p.bounds[0] for p in ws.free_parameters] + [k.bounds[0] for k in ws.nuisances])
        self.upper = np.array([p.bounds[1] for p in ws.free_parameters] + [k.bounds[1] for k in ws.nuisances])
        self.aux = np.array([k.aux for k in ws.nuisances], dtype=np.float64)
        self.init = np.clip(self.init, self.lower, self.upper)
        self._free_names = tuple(p.name for p in ws.free_parameters)
        procs = ws.processes
        self.process_names = tuple(p.name for p in procs)
        self._yields = np.array([p.yield_ for p in procs], dtype=np.float64)
        self._exprs = tuple(p.coefficient for p in procs)
        C, K = len(procs), self.n_np
        kup = np.ones((C, K))
        kdn = np.ones((C, K))
        specs = []
        for c, p in enumerate(procs):
            idx = []
            for k, nk in enumerate(ws.nuisances):
                eff = nk.effects.get(p.name)
                if eff is None:
                    continue
                if eff.norm is not None:
                    kup[c, k], kdn[c, k] = eff.norm
                if eff.shape is not None:
                    idx.append(k)
            idx_a = np.array(idx, dtype=np.int64)
            specs.append(_ProcSpec(p.name, idx_a, idx_a + self.n_free))
        self._kup, self._kdn = kup, kdn
        self._specs = tuple(specs)
        self._cr = self._control_region_arrays(ws)
        self.data = self._build_data(ws)
        self._build_functions()

    # ------------------------------------------------------------------ data
    def _as_storage(self, arr: Any) -> jax.Array:
        if isinstance(arr, jax.Array) and arr.dtype == self.storage_dtype:
            return arr
        return jnp.asarray(np.asarray(arr), dtype=self.storage_dtype)

    def _build_data(self, ws: Workspace) -> dict[str, Any]:
        """The per-event arrays as a pytree of 1-D device arrays (one per process / NP effect)."""
        r = tuple(self._as_storage(p.ratio) for p in ws.processes)
        up, dn = [], []
        for spec, p in zip(self._specs, ws.processes):
            up.append(tuple(self._as_storage(ws.nuisances[k].effects[p.name].shape[0]) for k in spec.np_index))
            dn.append(tuple(self._as_storage(ws.nuisances[k].effects[p.name].shape[1]) for k in spec.np_index))
        return {"w": self.weights_array(ws.data.weights), "r": r, "up": tuple(up), "down": tuple(dn)}

    def weights_array(self, weights: Any) -> jax.Array:
        w = jnp.asarray(np.asarray(weights, dtype=np.float64) if not isinstance(weights, jax.Array) else weights,
                        dtype=jnp.float64)
        if w.shape != (self.n_events,):
            raise WorkspaceError(f"weights: need shape ({self.n_events},), got {tuple(w.shape)}")
        return w

    def with_weights(self, weights: Any) -> dict[str, Any]:
        """The model's data pytree with other event weights (same shapes: no recompilation)."""
        return {**self.data, "w": self.weights_array(weights)}

    @property
    def data_nbytes(self) -> int:
        return int(sum(int(x.nbytes) for x in jax.tree_util.tree_leaves(self.data)))

    def _control_region_arrays(self, ws: Workspace) -> list[dict[str, Any]]:
        out = []
        for cr in ws.control_regions:
            nb = cr.observed.size
            S = len(cr.samples)
            kup = np.ones((S, self.n_np, nb))
            kdn = np.ones((S, self.n_np, nb))
            for s, smp in enumerate(cr.samples):
                for npn, (u, d) in smp.norm.items():
                    k = self.nuisance_names.index(npn)
                    kup[s, k], kdn[s, k] = u, d
            out.append({"obs": cr.observed, "yields": np.stack([s.yields for s in cr.samples]),
                        "exprs": tuple(s.coefficient for s in cr.samples), "kup": kup, "kdn": kdn})
        return out

    # ------------------------------------------------------------------ small (global) terms
    def _free_values(self, theta: jnp.ndarray) -> dict[str, jnp.ndarray]:
        return {n: theta[i] for i, n in enumerate(self._free_names)}

    def _coefficients(self, theta: jnp.ndarray) -> jnp.ndarray:
        vals = self._free_values(theta)
        return jnp.stack([jnp.asarray(e(vals, jnp), dtype=jnp.float64) * jnp.ones((), jnp.float64) for e in self._exprs])

    def amplitudes(self, theta: jnp.ndarray) -> jnp.ndarray:
        """A_c(theta) = m_c nu_c eta_c(alpha) for the unbinned processes, (C,)."""
        alpha = theta[self.n_free:]
        m = self._coefficients(theta)
        if self.n_np:
            t = alpha_terms(alpha)
            h = log_factor(jnp.asarray(self._kup), jnp.asarray(self._kdn), t)  # (C, K)
            eta = jnp.exp(h.sum(axis=1))
        else:
            eta = jnp.ones(len(self._exprs))
        return m * jnp.asarray(self._yields) * eta

    def _q_control(self, theta: jnp.ndarray) -> jnp.ndarray:
        q = jnp.zeros((), jnp.float64)
        if not self._cr:
            return q
        alpha = theta[self.n_free:]
        vals = self._free_values(theta)
        t = alpha_terms(alpha) if self.n_np else None
        for cr in self._cr:
            m = jnp.stack([jnp.asarray(e(vals, jnp), dtype=jnp.float64) * jnp.ones(()) for e in cr["exprs"]])  # (S,)
            lam_s = m[:, None] * jnp.asarray(cr["yields"])
            if self.n_np:
                kup = jnp.asarray(cr["kup"]).transpose(0, 2, 1)  # (S, nb, K)
                kdn = jnp.asarray(cr["kdn"]).transpose(0, 2, 1)
                lam_s = lam_s * jnp.exp(log_factor(kup, kdn, t).sum(-1))
            lam = lam_s.sum(0)
            n = jnp.asarray(cr["obs"])
            sat = jnp.where(n > 0, n * jnp.log(jnp.where(n > 0, n, 1.0) / lam), 0.0)
            q = q + 2.0 * jnp.sum(lam - n + sat)
        return q

    def _q_extra(self, theta: jnp.ndarray, aux: jnp.ndarray) -> jnp.ndarray:
        """Everything but the event sum: 2 nu(theta) + constraints + control regions."""
        alpha = theta[self.n_free:]
        return 2.0 * jnp.sum(self.amplitudes(theta)) + jnp.sum((alpha - aux) ** 2) + self._q_control(theta)

    # ------------------------------------------------------------------ chunk kernels
    def _proc_terms(self, theta: jnp.ndarray):
        alpha = theta[self.n_free:]
        if not self.n_np:
            return tuple(None for _ in self._specs)
        t = alpha_terms(alpha)
        return tuple(jax.tree_util.tree_map(lambda a: a[s.np_index], t) if s.np_index.size else None for s in self._specs)

    def _per_event_R(self, chunk, terms, order: int):
        """R_c (m, C) and per process (h', h'') arrays (m, K_c) for order >= 1 / 2."""
        R, d1, d2 = [], [], []
        for c, spec in enumerate(self._specs):
            lr = jnp.log(chunk["r"][c].astype(jnp.float64))
            if spec.np_index.size:
                up = jnp.stack(chunk["up"][c], axis=1).astype(jnp.float64)
                dn = jnp.stack(chunk["down"][c], axis=1).astype(jnp.float64)
                out = log_factor(up, dn, terms[c], order)
                if order == 0:
                    lr = lr + out.sum(axis=1)
                else:
                    lr = lr + out[0].sum(axis=1)
                    d1.append(out[1])
                    if order == 2:
                        d2.append(out[2])
            else:
                d1.append(None)
                d2.append(None)
            R.append(jnp.exp(lr))
        return jnp.stack(R, axis=1), d1, d2

    def _kernel(self, A, dA, d2A, terms, chunk, order: int):
        """Sums over one chunk: (sum w ln s, its gradient, its Hessian) up to ``order``."""
        w = chunk["w"]
        R, d1, d2 = self._per_event_R(chunk, terms, order)
        s = R @ A
        ll = jnp.dot(w, jnp.where(w != 0, jnp.log(s), 0.0))
        if order == 0:
            return (ll,)
        P = self.n_params
        qc = R / s[:, None]
        GL = qc @ dA  # (m, P)
        for c, spec in enumerate(self._specs):
            if spec.np_index.size:
                GL = GL.at[:, spec.cols].add((qc[:, c] * A[c])[:, None] * d1[c])
        gl = w @ GL
        if order == 1:
            return ll, gl
        wq = w[:, None] * qc
        H = jnp.einsum("c,cpq->pq", wq.sum(axis=0), d2A)
        for c, spec in enumerate(self._specs):
            if not spec.np_index.size:
                continue
            v = jnp.zeros(P, jnp.float64).at[spec.cols].set(wq[:, c] @ d1[c])
            cross = jnp.outer(dA[c], v)
            H = H + cross + cross.T
            blk = d1[c].T @ (wq[:, c, None] * d1[c]) + jnp.diag(wq[:, c] @ d2[c])
            H = H.at[spec.cols[:, None], spec.cols[None, :]].add(A[c] * blk)
        H = H - GL.T @ (w[:, None] * GL)
        return ll, gl, H

    def _chunk_ll_autodiff(self, theta, chunk):
        """sum_i w_i ln s_i for one chunk, written plainly for autodiff (reference path)."""
        A = self.amplitudes(theta)
        R, _, _ = self._per_event_R(chunk, self._proc_terms(theta), 0)
        return jnp.dot(chunk["w"], jnp.log(R @ A))

    def _autodiff_kernel(self, theta, chunk, order: int):
        ll = self._chunk_ll_autodiff(theta, chunk)
        if order == 0:
            return (ll,)
        gl = jax.grad(self._chunk_ll_autodiff)(theta, chunk)
        if order == 1:
            return ll, gl
        H = jax.jacfwd(jax.grad(self._chunk_ll_autodiff))(theta, chunk)  # forward-over-reverse, batched tangents
        return ll, gl, H

    def _event_sums(self, theta, data, order: int, method: str):
        """Chunked event sums (lax.scan over full chunks plus one static tail chunk)."""
        n = self.n_events
        m = min(self.chunk_size, n)
        n_chunks = -(-n // m)
        if method == "structured":
            A = self.amplitudes(theta)
            dA = jax.jacfwd(self.amplitudes)(theta) if order >= 1 else None
            d2A = jax.jacfwd(jax.jacfwd(self.amplitudes))(theta) if order >= 2 else None
            terms = self._proc_terms(theta)
            kernel = lambda chunk: self._kernel(A, dA, d2A, terms, chunk, order)  # noqa: E731
        else:
            kernel = lambda chunk: self._autodiff_kernel(theta, chunk, order)  # noqa: E731
        P = self.n_params
        zero = tuple(jnp.zeros(s, jnp.float64) for s in [(), (P,), (P, P)][: order + 1])

        def body(carry, i):
            # The last chunk is shifted back to end at n; events already counted get weight 0,
            # so one kernel (one compilation) covers every chunk and nothing is padded.
            start = jnp.minimum(i * m, n - m)
            chunk = jax.tree_util.tree_map(lambda a: lax.dynamic_slice_in_dim(a, start, m), data)
            keep = (start + jnp.arange(m)) >= i * m
            chunk = {**chunk, "w": jnp.where(keep, chunk["w"], 0.0)}
            out = kernel(chunk)
            return tuple(a + b for a, b in zip(carry, out)), None

        if n_chunks == 1:
            return kernel(data)
        total, _ = lax.scan(body, zero, jnp.arange(n_chunks))
        return total

    # ------------------------------------------------------------------ public pure functions
    def q_value(self, theta, data, aux):
        """q(theta) (traceable)."""
        (ll,) = self._event_sums(theta, data, 0, "structured")
        return self._q_extra(theta, aux) - 2.0 * ll

    def q_value_grad(self, theta, data, aux):
        ll, gl = self._event_sums(theta, data, 1, self.hessian_method)
        v, g = jax.value_and_grad(self._q_extra)(theta, aux)
        return v - 2.0 * ll, g - 2.0 * gl

    def q_vgh(self, theta, data, aux, method: str | None = None):
        """(q, grad q, exact Hessian of q) (traceable)."""
        ll, gl, Hl = self._event_sums(theta, data, 2, method or self.hessian_method)
        v, g = jax.value_and_grad(self._q_extra)(theta, aux)
        He = jax.hessian(self._q_extra)(theta, aux)
        return v - 2.0 * ll, g - 2.0 * gl, He - 2.0 * Hl

    def q_hvp(self, theta, v, data, aux):
        """Hessian-vector product by forward-over-reverse through the chunked gradient."""
        grad = lambda t: self.q_value_grad(t, data, aux)[1]  # noqa: E731
        return jax.jvp(grad, (theta,), (v,))[1]

    def q_unchunked(self, theta, data, aux):
        """q written without chunks or structure (reference for tests, e.g. with jax.hessian)."""
        return self._q_extra(theta, aux) - 2.0 * self._chunk_ll_autodiff(theta, data)

    def _build_functions(self) -> None:
        clk = self.clock
        self._f_value = Compiled(self.q_value, "value", clk)
        self._f_value_grad = Compiled(self.q_value_grad, "value_grad", clk)
        self._f_vgh = Compiled(lambda t, d, a: self.q_vgh(t, d, a), "vgh", clk)
        self._f_hvp = Compiled(self.q_hvp, "hvp", clk)

    # ------------------------------------------------------------------ convenience (NumPy in/out)
    def theta(self, values: Mapping[str, float] | None = None, base: Any = None) -> np.ndarray:
        """A parameter vector from ``base`` (default: initial values) with named overrides."""
        t = np.array(self.init if base is None else base, dtype=np.float64)
        for k, v in (values or {}).items():
            if k not in self.index:
                raise KeyError(f"unknown parameter {k!r}; the model has {list(self.names)}")
            t[self.index[k]] = float(v)
        return t

    def _args(self, theta, data, aux):
        return (jnp.asarray(theta, jnp.float64), self.data if data is None else data,
                jnp.asarray(self.aux if aux is None else aux, jnp.float64))

    def nll(self, theta, data=None, aux=None) -> float:
        """q(theta) = -2 ln L (up to a constant)."""
        return float(self._f_value(*self._args(theta, data, aux)))

    def value_and_grad(self, theta, data=None, aux=None) -> tuple[float, np.ndarray]:
        v, g = self._f_value_grad(*self._args(theta, data, aux))
        return float(v), np.asarray(g)

    def value_grad_hessian(self, theta, data=None, aux=None) -> tuple[float, np.ndarray, np.ndarray]:
        v, g, H = self._f_vgh(*self._args(theta, data, aux))
        return float(v), np.asarray(g), np.asarray(H)

    def hessian(self, theta, data=None, aux=None) -> np.ndarray:
        return self.value_grad_hessian(theta, data, aux)[2]

    def hvp(self, theta, v, data=None, aux=None) -> np.ndarray:
        t, d, a = self._args(theta, data, aux)
        return np.asarray(self._f_hvp(t, jnp.asarray(v, jnp.float64), d, a))


def _event_intensity(model: Model, theta, data):
    """s_i(theta) = sum_c A_c R_c(x_i) for every event, chunk by chunk (float64, (n,))."""
    n = model.n_events
    m = min(model.chunk_size, n)
    n_chunks = -(-n // m)
    A = model.amplitudes(theta)
    terms = model._proc_terms(theta)

    def body(out, i):
        start = jnp.minimum(i * m, n - m)
        chunk = jax.tree_util.tree_map(lambda a: lax.dynamic_slice_in_dim(a, start, m), data)
        R, _, _ = model._per_event_R(chunk, terms, 0)
        return lax.dynamic_update_slice_in_dim(out, R @ A, start, 0), None

    out, _ = lax.scan(body, jnp.zeros(n, jnp.float64), jnp.arange(n_chunks))
    return out


def event_intensity(model: Model, theta, data=None) -> np.ndarray:
    """Per-event s_i(theta) (NumPy), used to reweight events to other parameter values."""
    cache = model.__dict__.setdefault("_fit_cache", {})
    if "intensity" not in cache:
        cache["intensity"] = Compiled(lambda t, d: _event_intensity(model, t, d), "intensity", model.clock)
    return np.asarray(cache["intensity"](jnp.asarray(theta, jnp.float64), model.data if data is None else data))
