"""The compiled likelihood: q(theta) = -2 ln L over event chunks, with exact derivatives.

    q(theta) = 2 sum_c A_c(theta) n_c(alpha) - 2 sum_i w_i ln( sum_c A_c(theta) R_c(x_i; alpha) )
               + sum_k (alpha_k - a_k)^2 + q_CR(theta)

with A_c = m_c(POIs) nu_c eta_c(alpha) (the small, autodiffed part), the per-event factor
R_c = r_c(x_i) delta_c(x_i; alpha), delta_c = exp(sum_k h_ck(x_i; alpha_k)) (code-4 shape
interpolation in log form), and the shape normalisation n_c(alpha) = E_{p_c}[delta_c], estimated
on a weighted sample of p_ref (weights v_i, see ``docs/workspace.md``):

    n_c(alpha) = sum_i v_i r_c(x_i) delta_c(x_i; alpha) / sum_i v_i r_c(x_i)   (n_c(0) = 1 exactly).

Without n_c the extended term and the event term disagree as soon as alpha != 0 (code-4 shape
factors are not normalised), and Poisson toys run away. With a normalisation sample the ratios
are also normalised on it in the event term, r_c -> k_c r_c with k_c = V / D_c (V = sum_i v_i,
D_c = sum_i v_i r_c(x_i); the model constant ``ratio_scale``), so that the model is exactly a
Poisson process on the sample: toys resampled from it are drawn from the model itself, and
Asimov weights v_i s_i(theta) / V return theta. Without k_c the sample's finite-size miss of
E_ref[r_c] = 1 (~1/sqrt(N)) shifted the demo's toy pulls by -0.07 sigma. Processes without shape
effects have n_c = 1; a model without a normalisation sample (observed data without
``norm_weights``, or no shape effects) uses n_c = 1 and k_c = 1 (shapes treated as normalised).

Events are processed in chunks of ``chunk_size`` with ``lax.scan`` (the last chunk shifted
back), so memory beyond the data is O(chunk). The exact Hessian per chunk is assembled from
the structure of the model: because h_ck depends on alpha_k only, the per-event Hessian is
``sum_c a_c [d2A_c + dA_c dH_c^T + dH_c dA_c^T + A_c (dH_c dH_c^T + diag h''_c)] - w dL dL^T``
with per-event, per-process weights a_ic = w_i k_c R_ic / s_i - v_i R_ic / D_c: the event term and
the normalisation term have the same form, so one pass and one ``d1^T diag(a) d1`` product
per process and chunk give both. A generic forward-over-reverse path
(``jax.jacfwd(jax.grad(chunk))``, all tangents batched) gives the same numbers and is kept as
the reference (``hessian_method="autodiff"``); Hessian-vector products (``hvp``) serve models
too wide for a dense Hessian.

The data pytree (``model.data``; ``with_weights`` swaps ``w``):
  * ``w`` (n,) float64 event weights; ``r`` / ``up`` / ``down``: per-event arrays (storage dtype);
  * with a normalisation sample only: ``v`` (n,) float64 normalisation weights and ``vscale``
    (C,) float64 = 1 / D_c for processes with shape effects (0 otherwise), so that
    n_c = vscale_c sum_i v_i R_c (R_c without k_c);
  * ``norm`` (optional): a separate normalisation sample ``{v, vscale, r, up, down}`` summed in
    its own pass (toys: gathered toy events in the main arrays, the full sample here).

Arrays are stored as given (float32 by default) and promoted to float64 inside the chunk
kernel; every sum over events accumulates in float64.
"""

from __future__ import annotations

import operator
import warnings
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..precision import enable_float64
from .compile import CompileClock, Compiled
from .interp import alpha_terms, log_factor
from .workspace import Workspace, WorkspaceError

__all__ = ["Model", "model_for", "event_intensity"]

DEFAULT_CHUNK = 16384
NORM_INTEGRAL_WARN = 0.05  # warn when a ratio averages this far from 1 on the normalisation sample
_EVENT_KEYS = ("w", "v", "r", "up", "down")  # per-event leaves (sliced into chunks)
_MODELS: weakref.WeakKeyDictionary[Workspace, Model] = weakref.WeakKeyDictionary()


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
        devices: shard the events over this many local devices (``sbi_engine.fit.sharding``:
            per-event arrays padded with zero-weight rows to ``n_rows``, a multiple of it, and
            split over a 1-D mesh; the sums are reduced across devices in float64). None: one
            device.

    The shape normalisation: ``has_norm`` (q includes n_c(alpha)), ``norm_source`` ("none",
    "norm_weights" or "asimov": where v comes from), ``normalisation(theta)`` (n_c),
    ``norm_integrals`` (E_v[r_c] before the ratio normalisation; ~1 for a good sample) and
    ``ratio_scale`` (k_c). ``reference_theta()``: where weighted events represent the expectation.
    """

    def __init__(
        self,
        ws: Workspace,
        chunk_size: int = DEFAULT_CHUNK,
        storage_dtype: Any = jnp.float32,
        hessian_method: str = "structured",
        devices: int | None = None,
    ):
        if hessian_method not in ("structured", "autodiff"):
            raise ValueError(
                f"hessian_method must be 'structured' or 'autodiff', got {hessian_method!r}"
            )
        enable_float64()  # before any array: weights, normalisation and every sum are float64
        self.workspace = ws
        self.chunk_size = int(chunk_size)
        self.storage_dtype = jnp.dtype(storage_dtype)
        self.hessian_method = hessian_method
        self.mesh: Any = None  # a 1-D device mesh when the events are sharded (set below)
        self.clock = CompileClock()
        self.names: tuple[str, ...] = ws.parameter_names
        self.poi_names = ws.poi_names
        self.nuisance_names = ws.nuisance_names
        self.n_free = len(ws.free_parameters)
        self.n_np = len(ws.nuisances)
        self.n_params = len(self.names)
        self.n_events = ws.n_events
        self.index = {n: i for i, n in enumerate(self.names)}
        self.init = np.array(
            [p.init for p in ws.free_parameters] + [k.init for k in ws.nuisances], dtype=np.float64
        )
        self.lower = np.array(
            [p.bounds[0] for p in ws.free_parameters] + [k.bounds[0] for k in ws.nuisances]
        )
        self.upper = np.array(
            [p.bounds[1] for p in ws.free_parameters] + [k.bounds[1] for k in ws.nuisances]
        )
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
        self._shape_procs = np.array([s.np_index.size > 0 for s in specs])
        self.norm_chunk_size = self.chunk_size  # chunk of a separate normalisation pass (toys)
        self._cr = self._control_region_arrays(ws)
        self.data = self._build_data(ws)
        self.norm_source = "none"  # "none" | "norm_weights" | "asimov"
        self.norm_integrals = np.ones(
            len(specs)
        )  # E_v[r_c] on the normalisation sample (before normalising)
        self.ratio_scale = np.ones(
            len(specs)
        )  # k_c: ratio normalisation on the normalisation sample (1 without)
        v = self._norm_weights(ws)
        if v is not None:
            self.data = {**self.data, **self._norm_arrays(v, self.data)}
        self.n_rows = self.n_events  # rows of the per-event arrays (padded when sharded)
        if devices is not None:
            from . import sharding  # noqa: PLC0415

            self.mesh = sharding.event_mesh(int(devices))
            self.n_rows = sharding.padded_length(self.n_events, int(devices))
            self.data = sharding.shard_data(self.data, self.mesh)
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
            up.append(
                tuple(
                    self._as_storage(ws.nuisances[k].effects[p.name].shape[0])
                    for k in spec.np_index
                )
            )
            dn.append(
                tuple(
                    self._as_storage(ws.nuisances[k].effects[p.name].shape[1])
                    for k in spec.np_index
                )
            )
        return {
            "w": self.weights_array(ws.data.weights),
            "r": r,
            "up": tuple(up),
            "down": tuple(dn),
        }

    def reference_theta(self) -> np.ndarray:
        """Where the workspace's weighted events represent the expected distribution:
        ``data.generated_at`` over the initial values, nuisances not named there at their aux."""
        gen = self.workspace.data.generated_at or {}
        base = self.init.copy()
        base[self.n_free :] = self.aux
        return self.theta(gen, base=base)

    @property
    def has_norm(self) -> bool:
        """Whether q includes the shape normalisation n_c(alpha) (else n_c = 1)."""
        return "v" in self.data

    def _norm_weights(self, ws: Workspace) -> np.ndarray | None:
        """v_i: given (data.norm_weights), derived for Asimov data (w_i / s_i(theta_gen)), or None."""
        if not self._shape_procs.any():
            return None  # no shape effects: every n_c is 1
        if ws.data.norm_weights is not None:
            self.norm_source = "norm_weights"
            return np.asarray(ws.data.norm_weights, dtype=np.float64)
        if ws.data.kind != "asimov":
            return None
        # Weighted Asimov events represent nu p(x | theta_gen) = p_ref(x) s(x; theta_gen), so
        # v_i = w_i / s_i(theta_gen) integrates p_ref: the data rows are the normalisation sample.
        w = np.asarray(self.data["w"])
        s = event_intensity(self, self.reference_theta(), self.data)
        live = w != 0
        bad = live & ~(s > 0)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise WorkspaceError(
                f"data.generated_at: the model's event intensity at the generation point is not > 0 for "
                f"{int(bad.sum())} of {w.size} weighted events (first at row {first}: {s[first]}), so the "
                "Asimov events cannot serve as the normalisation sample; give data.norm_weights"
            )
        self.norm_source = "asimov"
        return np.where(live, w / np.where(live, s, 1.0), 0.0)

    def _norm_arrays(self, v: np.ndarray, sample: Mapping[str, Any]) -> dict[str, Any]:
        """{v, vscale} for a normalisation sample (D_c = sum_i v_i r_c(x_i) on its rows); sets the
        ratio normalisation k_c = V / D_c (``ratio_scale``)."""
        v = np.asarray(v, dtype=np.float64)
        where = (
            "data.norm_weights"
            if self.norm_source == "norm_weights"
            else "data (Asimov events as normalisation sample)"
        )
        if v.shape != (int(np.shape(sample["r"][0])[0]),):
            raise WorkspaceError(
                f"{where}: need shape ({np.shape(sample['r'][0])[0]},), got {v.shape}"
            )
        V = float(np.sum(v))
        if not (np.isfinite(V) and V > 0):
            raise WorkspaceError(
                f"{where}: the normalisation weights sum to {V}; need a finite sum > 0"
            )
        D = np.array([float(np.dot(v, np.asarray(r, dtype=np.float64))) for r in sample["r"]])
        for c, spec in enumerate(self._specs):
            if not (np.isfinite(D[c]) and D[c] > 0):
                raise WorkspaceError(
                    f"{where}: sum_i v_i r_{spec.name}(x_i) = {D[c]} is not > 0, so process {spec.name!r} cannot be "
                    "normalised on the normalisation sample (are its events and weights right?)"
                )
        self.norm_integrals = (
            D / V
        )  # E_v[r_c]: ~1 for a good sample (1/sqrt(N) misses are normalised away)
        self.ratio_scale = V / D
        off = np.abs(self.norm_integrals - 1.0) > NORM_INTEGRAL_WARN
        if off.any():
            bad = ", ".join(
                f"{s.name}: {d:.3g}" for s, d, o in zip(self._specs, self.norm_integrals, off) if o
            )
            hint = (
                "is data.generated_at where the Asimov events were made?"
                if self.norm_source == "asimov"
                else "do the normalisation events sample the reference density?"
            )
            warnings.warn(
                f"{where}: the ratios average to ({bad}) on the normalisation sample instead of 1; the fit "
                f"normalises them, but {hint}",
                stacklevel=3,
            )
        return {
            "v": jnp.asarray(v, dtype=jnp.float64),
            "vscale": jnp.asarray(np.where(self._shape_procs, 1.0 / D, 0.0), dtype=jnp.float64),
        }

    def normalisation(self, theta, data=None) -> np.ndarray:
        """n_c(alpha) per process (1 where there is no shape effect or no normalisation term)."""
        data = self.data if data is None else data
        src = data.get("norm", data)
        if "v" not in src:
            return np.ones(len(self._specs))
        terms = self._proc_terms(jnp.asarray(theta, jnp.float64))
        sample = {k: src[k] for k in ("v", "r", "up", "down")}
        n_ev = int(np.shape(sample["v"])[0])
        total = np.zeros(len(self._specs))
        for start in range(
            0, n_ev, self.chunk_size
        ):  # eager, chunk by chunk (a diagnostic, not the fit)
            chunk = jax.tree_util.tree_map(
                operator.itemgetter(slice(start, start + self.chunk_size)), sample
            )
            R, _, _ = self._per_event_R(chunk, terms, 0)
            total += np.asarray(chunk["v"] @ R)
        return np.where(self._shape_procs, total * np.asarray(src["vscale"]), 1.0)

    def weights_array(self, weights: Any) -> jax.Array | np.ndarray:
        # a device array here; StreamingModel keeps data on the host and returns an np.ndarray
        w = jnp.asarray(
            np.asarray(weights, dtype=np.float64)
            if not isinstance(weights, jax.Array)
            else weights,
            dtype=jnp.float64,
        )
        if self.mesh is not None and w.shape in ((self.n_events,), (self.n_rows,)):
            from .sharding import shard_weights  # noqa: PLC0415

            return shard_weights(w, self.mesh, self.n_rows)
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
            out.append(
                {
                    "obs": cr.observed,
                    "yields": np.stack([s.yields for s in cr.samples]),
                    "exprs": tuple(s.coefficient for s in cr.samples),
                    "kup": kup,
                    "kdn": kdn,
                }
            )
        return out

    # ------------------------------------------------------------------ small (global) terms
    def _free_values(self, theta: jnp.ndarray) -> dict[str, jnp.ndarray]:
        return {n: theta[i] for i, n in enumerate(self._free_names)}

    def _coefficients(self, theta: jnp.ndarray) -> jnp.ndarray:
        vals = self._free_values(theta)
        return jnp.stack(
            [
                jnp.asarray(e(vals, jnp), dtype=jnp.float64) * jnp.ones((), jnp.float64)
                for e in self._exprs
            ]
        )

    def amplitudes(self, theta: jnp.ndarray) -> jnp.ndarray:
        """A_c(theta) = m_c nu_c eta_c(alpha) for the unbinned processes, (C,)."""
        alpha = theta[self.n_free :]
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
        alpha = theta[self.n_free :]
        vals = self._free_values(theta)
        t = alpha_terms(alpha) if self.n_np else None
        for cr in self._cr:
            m = jnp.stack(
                [jnp.asarray(e(vals, jnp), dtype=jnp.float64) * jnp.ones(()) for e in cr["exprs"]]
            )  # (S,)
            lam_s = m[:, None] * jnp.asarray(cr["yields"])
            if t is not None:  # i.e. self.n_np
                kup = jnp.asarray(cr["kup"]).transpose(0, 2, 1)  # (S, nb, K)
                kdn = jnp.asarray(cr["kdn"]).transpose(0, 2, 1)
                lam_s = lam_s * jnp.exp(log_factor(kup, kdn, t).sum(-1))
            lam = lam_s.sum(0)
            n = jnp.asarray(cr["obs"])
            sat = jnp.where(n > 0, n * jnp.log(jnp.where(n > 0, n, 1.0) / lam), 0.0)
            q = q + 2.0 * jnp.sum(lam - n + sat)
        return q

    def _q_extra(
        self, theta: jnp.ndarray, aux: jnp.ndarray, norm_in_pass: bool = False
    ) -> jnp.ndarray:
        """Everything but the event pass: 2 A_c for the processes whose n_c is 1 (all of them when
        the data carry no normalisation sample; else those without shape effects), constraints
        and control regions. The 2 A_c n_c of shape processes come from the event pass."""
        alpha = theta[self.n_free :]
        A = self.amplitudes(theta)
        if norm_in_pass:
            A = jnp.where(jnp.asarray(self._shape_procs), 0.0, A)
        return 2.0 * jnp.sum(A) + jnp.sum((alpha - aux) ** 2) + self._q_control(theta)

    # ------------------------------------------------------------------ chunk kernels
    def _proc_terms(self, theta: jnp.ndarray):
        alpha = theta[self.n_free :]
        if not self.n_np:
            return tuple(None for _ in self._specs)
        t = alpha_terms(alpha)
        return tuple(
            jax.tree_util.tree_map(operator.itemgetter(s.np_index), t) if s.np_index.size else None
            for s in self._specs
        )

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

    def _kernel(self, A, dA, d2A, terms, chunk, vscale, order: int):
        """Sums over one chunk of L = sum_i w_i ln s_i - sum_c A_c n_c (this chunk's share) and,
        up to ``order``, its gradient and exact Hessian (q = extra - 2 L).

        ``chunk`` holds event weights ``w`` and/or normalisation weights ``v`` (either may be
        absent: a toy's gathered events have no v, a separate normalisation sample has no w).
        """
        has_w, has_v = "w" in chunk, "v" in chunk
        R, d1, d2 = self._per_event_R(chunk, terms, order)
        val = jnp.zeros((), jnp.float64)
        a = jnp.zeros_like(R)  # a_ic = w_i k_c R_ic / s_i - v_i R_ic / D_c
        if has_w:
            w = chunk["w"]
            live = w != 0
            Rk = R * jnp.asarray(self.ratio_scale)[None, :]
            s = jnp.where(
                live, Rk @ A, 1.0
            )  # rows without data weight (normalisation-only) never enter ln s
            val = jnp.dot(w, jnp.log(s))
            qc = Rk / s[:, None]
            a = w[:, None] * qc
        if has_v:
            u = chunk["v"][:, None] * R * vscale[None, :]
            val = val - jnp.dot(u.sum(axis=0), A)
            a = a - u
        if order == 0:
            return (val,)
        P = self.n_params
        asum = a.sum(axis=0)
        g = asum @ dA
        ad1 = []
        for c, spec in enumerate(self._specs):
            if spec.np_index.size:
                ad1.append(a[:, c] @ d1[c])
                g = g.at[spec.cols].add(A[c] * ad1[-1])
            else:
                ad1.append(None)
        if order == 1:
            return val, g
        H = jnp.einsum("c,cpq->pq", asum, d2A)
        for c, spec in enumerate(self._specs):
            if not spec.np_index.size:
                continue
            vec = jnp.zeros(P, jnp.float64).at[spec.cols].set(ad1[c])
            cross = jnp.outer(dA[c], vec)
            H = H + cross + cross.T
            blk = d1[c].T @ (a[:, c, None] * d1[c]) + jnp.diag(a[:, c] @ d2[c])
            H = H.at[spec.cols[:, None], spec.cols[None, :]].add(A[c] * blk)
        if has_w:
            GL = qc @ dA  # (m, P): d ln s_i / d theta
            for c, spec in enumerate(self._specs):
                if spec.np_index.size:
                    GL = GL.at[:, spec.cols].add((qc[:, c] * A[c])[:, None] * d1[c])
            H = H - GL.T @ (w[:, None] * GL)
        return val, g, H

    def _chunk_ll_autodiff(self, theta, chunk, vscale=None):
        """L = sum_i w_i ln s_i - sum_c A_c n_c for one chunk, written plainly for autodiff
        (reference path)."""
        A = self.amplitudes(theta)
        R, _, _ = self._per_event_R(chunk, self._proc_terms(theta), 0)
        out = jnp.zeros((), jnp.float64)
        if "w" in chunk:
            w = chunk["w"]
            out = out + jnp.dot(
                w, jnp.log(jnp.where(w != 0, R @ (jnp.asarray(self.ratio_scale) * A), 1.0))
            )
        if "v" in chunk:
            out = out - jnp.dot((chunk["v"] @ R) * vscale, A)
        return out

    def _autodiff_kernel(self, theta, chunk, vscale, order: int):
        f = lambda t: self._chunk_ll_autodiff(t, chunk, vscale)  # noqa: E731
        ll = f(theta)
        if order == 0:
            return (ll,)
        gl = jax.grad(f)(theta)
        if order == 1:
            return ll, gl
        H = jax.jacfwd(jax.grad(f))(theta)  # forward-over-reverse, batched tangents
        return ll, gl, H

    @staticmethod
    def _samples(data) -> list[tuple[dict[str, Any], bool]]:
        """The passes over events: (per-event leaves, is the separate normalisation sample)."""
        out = [({k: data[k] for k in _EVENT_KEYS if k in data}, False)]
        if "norm" in data:
            out.append(({k: data["norm"][k] for k in ("v", "r", "up", "down")}, True))
        return out

    @staticmethod
    def _vscale(data) -> Any:
        """vscale of the normalisation sample (1 / D_c), or None without one."""
        return (data["norm"] if "norm" in data else data).get("vscale")

    @staticmethod
    def _norm_in_pass(data) -> bool:
        return "v" in data or "norm" in data

    def _scan_chunks(self, sample, kernel, m: int, zero):
        """Sum ``kernel(chunk)`` over chunks of ``m`` events (lax.scan; one compiled kernel)."""
        n = int(np.shape(sample["r"][0])[0])
        m = min(m, n)
        n_chunks = -(-n // m)
        if n_chunks == 1:
            return kernel(sample)

        def body(carry, i):
            # The last chunk is shifted back to end at n; events already counted get weight 0,
            # so one kernel (one compilation) covers every chunk and nothing is padded.
            start = jnp.minimum(i * m, n - m)
            chunk = jax.tree_util.tree_map(lambda a: lax.dynamic_slice_in_dim(a, start, m), sample)
            keep = (start + jnp.arange(m)) >= i * m
            for k in ("w", "v"):
                if k in chunk:
                    chunk[k] = jnp.where(keep, chunk[k], 0.0)
            out = kernel(chunk)
            return tuple(a + b for a, b in zip(carry, out)), None

        total, _ = lax.scan(body, zero, jnp.arange(n_chunks))
        return total

    def _event_sums(self, theta, data, order: int, method: str):
        """Chunked sums of L (event term minus the normalisation term) and its derivatives;
        with a device mesh, each device's shard summed locally, then across devices."""
        if self.mesh is not None:
            from .sharding import sharded_sums  # noqa: PLC0415

            return sharded_sums(
                lambda t, d: self._local_event_sums(t, d, order, method), theta, data, self.mesh
            )
        return self._local_event_sums(theta, data, order, method)

    def _local_event_sums(self, theta, data, order: int, method: str):
        P = self.n_params
        zero = tuple(jnp.zeros(s, jnp.float64) for s in [(), (P,), (P, P)][: order + 1])
        if method == "structured":
            A = self.amplitudes(theta)
            dA = jax.jacfwd(self.amplitudes)(theta) if order >= 1 else None
            d2A = jax.jacfwd(jax.jacfwd(self.amplitudes))(theta) if order >= 2 else None
            terms = self._proc_terms(theta)
        total = zero
        vscale = self._vscale(data)
        for sample, is_norm in self._samples(data):
            if method == "structured":
                kernel = lambda chunk: self._kernel(A, dA, d2A, terms, chunk, vscale, order)  # noqa: E731
            else:
                kernel = lambda chunk: self._autodiff_kernel(theta, chunk, vscale, order)  # noqa: E731
            part = self._scan_chunks(
                sample, kernel, self.norm_chunk_size if is_norm else self.chunk_size, zero
            )
            total = tuple(a + b for a, b in zip(total, part))
        return total

    # ------------------------------------------------------------------ public pure functions
    def _extra_fn(self, data):
        nip = self._norm_in_pass(data)
        return lambda t, a: self._q_extra(t, a, nip)

    def q_value(self, theta, data, aux):
        """q(theta) (traceable)."""
        (ll,) = self._event_sums(theta, data, 0, "structured")
        return self._extra_fn(data)(theta, aux) - 2.0 * ll

    def q_value_grad(self, theta, data, aux):
        ll, gl = self._event_sums(theta, data, 1, self.hessian_method)
        v, g = jax.value_and_grad(self._extra_fn(data))(theta, aux)
        return v - 2.0 * ll, g - 2.0 * gl

    def q_vgh(self, theta, data, aux, method: str | None = None):
        """(q, grad q, exact Hessian of q) (traceable)."""
        ll, gl, Hl = self._event_sums(theta, data, 2, method or self.hessian_method)
        extra = self._extra_fn(data)
        v, g = jax.value_and_grad(extra)(theta, aux)
        He = jax.hessian(extra)(theta, aux)
        return v - 2.0 * ll, g - 2.0 * gl, He - 2.0 * Hl

    def q_hvp(self, theta, v, data, aux):
        """Hessian-vector product by forward-over-reverse through the chunked gradient."""
        grad = lambda t: self.q_value_grad(t, data, aux)[1]  # noqa: E731
        return jax.jvp(grad, (theta,), (v,))[1]

    def q_unchunked(self, theta, data, aux):
        """q written without chunks or structure (reference for tests, e.g. with jax.hessian)."""
        vscale = self._vscale(data)
        ll = sum(self._chunk_ll_autodiff(theta, smp, vscale) for smp, _ in self._samples(data))
        return self._extra_fn(data)(theta, aux) - 2.0 * ll

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
        return (
            jnp.asarray(theta, jnp.float64),
            self.data if data is None else data,
            jnp.asarray(self.aux if aux is None else aux, jnp.float64),
        )

    def nll(self, theta, data=None, aux=None) -> float:
        """q(theta) = -2 ln L (up to a constant)."""
        return float(self._f_value(*self._args(theta, data, aux)))

    def value_and_grad(self, theta, data=None, aux=None) -> tuple[float, np.ndarray]:
        v, g = self._f_value_grad(*self._args(theta, data, aux))
        return float(v), np.asarray(g)

    def value_grad_hessian(
        self, theta, data=None, aux=None
    ) -> tuple[float, np.ndarray, np.ndarray]:
        v, g, H = self._f_vgh(*self._args(theta, data, aux))
        return float(v), np.asarray(g), np.asarray(H)

    def hessian(self, theta, data=None, aux=None) -> np.ndarray:
        return self.value_grad_hessian(theta, data, aux)[2]

    def hvp(self, theta, v, data=None, aux=None) -> np.ndarray:
        t, d, a = self._args(theta, data, aux)
        return np.asarray(self._f_hvp(t, jnp.asarray(v, jnp.float64), d, a))


def _event_intensity(model: Model, theta, data):
    """s_i(theta) = sum_c A_c R_c(x_i) for every event, chunk by chunk (float64, (n,))."""
    rscale = data["rscale"]
    data = {k: data[k] for k in ("r", "up", "down")}
    n = int(np.shape(data["r"][0])[0])
    m = min(model.chunk_size, n)
    n_chunks = -(-n // m)
    A = model.amplitudes(theta)
    terms = model._proc_terms(theta)

    def body(out, i):
        start = jnp.minimum(i * m, n - m)
        chunk = jax.tree_util.tree_map(lambda a: lax.dynamic_slice_in_dim(a, start, m), data)
        R, _, _ = model._per_event_R(chunk, terms, 0)
        return lax.dynamic_update_slice_in_dim(out, R @ (rscale * A), start, 0), None

    out, _ = lax.scan(body, jnp.zeros(n, jnp.float64), jnp.arange(n_chunks))
    return out


def event_intensity(model: Model, theta, data=None) -> np.ndarray:
    """Per-event s_i(theta) (NumPy; with the model's ratio normalisation when it has one), used to
    reweight events to other parameter values."""
    cache = model.__dict__.setdefault("_fit_cache", {})
    if "intensity" not in cache:
        cache["intensity"] = Compiled(
            lambda t, d: _event_intensity(model, t, d), "intensity", model.clock
        )
    data = model.data if data is None else data
    arrays = {k: data[k] for k in ("r", "up", "down")}
    arrays["rscale"] = jnp.asarray(
        model.ratio_scale, jnp.float64
    )  # an argument: it is set after the first call
    return np.asarray(cache["intensity"](jnp.asarray(theta, jnp.float64), arrays))
