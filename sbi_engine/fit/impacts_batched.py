"""Every refit impact in one batched computation: many refits advanced per pass over the events.

A refit impact fixes nuisance j at ``alpha_j-hat + s`` (s = +-sigma-hat post-fit, +-1 pre-fit)
and minimises q over everything else. With 100 nuisances that is 400 refits; one at a time,
each needs several exact-Hessian passes over the events. Here all of them share each pass:

* **Warm start on the linear-response profile.** Refit m starts at
  ``theta-hat + s C[:, j] / C[j, j]`` (the implicit-function prediction), which is already within
  O(s^2) of its minimum.
* **Chord Newton steps with the best-fit Hessian.** The step of refit m is
  ``-H-hat_FF^-1 g_F`` on its free parameters F (all but j, the fixed ones and those at a bound
  in the best fit); H-hat is the exact Hessian of the best fit, factorised once per refit, so a
  pass only needs the gradients of the M refits (no per-refit Hessian over the events). From
  the linear-response start the iteration converges in a few passes (it gains a factor
  ``|1 - H-hat^-1 H(theta_m)|`` per pass).
* **All refits per pass.** The gradients of the M refits are one compiled, chunked pass: in
  ``expansion="exact"`` the model's own chunk kernel under ``jax.vmap`` over the M parameter
  vectors (the per-event work that does not depend on theta is shared); in
  ``expansion="taylor"`` (the fast default) each profiled nuisance's per-event log shape factor
  is expanded to second order around the best fit, ``h_ik(alpha-hat_k + d) = h + h' d + h'' d^2 / 2``,
  so the M log-intensities of a chunk are matrix products ``h' @ D + h'' @ D^2 / 2`` (D: the
  K x M matrix of nuisance shifts), and the M gradients are the transposed products. The fixed
  nuisance's factor (shifted by s, up to a full pre-fit sigma) is evaluated exactly, as are the
  POI coefficients, the normalisation factors eta_c(alpha), the normalisation sample's
  integrals (also expanded per event), the constraints and the control regions. h' and h'' are
  computed once at the best fit (float32, two arrays of the size of the shape inputs).

  The expansion error is third order in the profiled nuisances' shifts, which are the
  correlation-weighted fractions ``s C_kj / C_jj`` of the fixed one's; the benchmark measures
  the batched impacts against one-at-a-time exact refits (`nsbi bench fit --refit-nps all`,
  ``impacts_refit_all_max_rel_dev``).

Limits: an in-memory, unsharded :class:`~sbi_engine.fit.model.Model` (a streaming or sharded
model falls back to :func:`~sbi_engine.fit.impacts.refit_impacts`); parameters at a bound in
the best fit stay there in the refits.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..precision import enable_float64
from .compile import Compiled
from .impacts import Impact, refit_impacts
from .interp import alpha_terms, log_factor
from .model import Model, model_for
from .results import FitResult
from .workspace import Workspace

__all__ = ["BatchedImpacts", "batched_refit_impacts", "SHIFT_LABELS"]

SHIFT_LABELS = ("postfit_up", "postfit_down", "prefit_up", "prefit_down")
_DEFAULT_CHUNK = 2048  # events per chunk of a batched pass (temporaries ~ chunk x M x C x 8 B)


@dataclass(frozen=True)
class BatchedImpacts:
    """The impacts with the cost and convergence of the batched computation."""

    impacts: list[Impact]
    refits: int
    passes: int  # gradient passes over the events (each serves a whole batch of refits)
    batches: int
    converged: int  # refits whose chord EDM fell below the tolerance
    max_edm: float
    seconds: float
    expansion: str
    fallback: bool = False  # True: the model cannot be batched, one-at-a-time refits were used

    def to_dict(self) -> dict:
        return {
            "refits": self.refits,
            "passes": self.passes,
            "batches": self.batches,
            "converged": self.converged,
            "max_edm": self.max_edm,
            "seconds": self.seconds,
            "expansion": self.expansion,
            "fallback": self.fallback,
        }


def _chunking(n: int, m: int) -> tuple[int, int, np.ndarray]:
    m = max(1, min(m, n))
    n_chunks = -(-n // m)
    starts = np.minimum(np.arange(n_chunks) * m, n - m)
    return m, n_chunks, starts


class _Engine:
    """Compiled batched passes for one model, best fit and data."""

    def __init__(self, model: Model, result: FitResult, data, aux, chunk: int, expansion: str):
        self.model = model
        self.expansion = expansion
        self.theta_hat = jnp.asarray(result.theta, jnp.float64)
        self.data = data
        self.aux = jnp.asarray(aux, jnp.float64)
        self.chunk = chunk
        self.clock = model.clock
        self.K = model.n_np
        self.samples = model._samples(data)
        self.vscale = model._vscale(data)
        # Compiled per engine: the kernels close over this best fit and data (a few seconds of
        # compilation per call, booked on the model's clock).
        self.fns = {
            "pre": Compiled(self._precompute, "impacts_precompute", self.clock, (2,)),
            "fixed": Compiled(self._fixed_offsets, "impacts_fixed_offsets", self.clock, (3,)),
            "pass": Compiled(self._taylor_pass, "impacts_taylor_pass", self.clock),
            "exact": Compiled(self._exact_pass, "impacts_exact_pass", self.clock),
        }
        self.pre = None
        if expansion == "taylor":
            self.pre = [
                self.fns["pre"](self.theta_hat, smp, int(np.shape(smp["r"][0])[0]))
                for smp, _ in self.samples
            ]

    # ------------------------------------------------------------------ taylor: precompute
    def _chunk_of(self, sample, start, m):
        return jax.tree_util.tree_map(lambda a: lax.dynamic_slice_in_dim(a, start, m), sample)

    def _precompute(self, theta_hat, sample, n: int):
        """Per chunk at the best fit: h' and h'' (float32), ln R, a (float64), the weights with
        rows seen by an earlier chunk zeroed, and sum_i a_ic h'_ikc in float64."""
        model = self.model
        m, n_chunks, starts = _chunking(n, self.chunk)
        terms = model._proc_terms(theta_hat)
        A = model.amplitudes(theta_hat)
        kappa = jnp.asarray(model.ratio_scale)
        vs = self.vscale

        def body(_, xs):
            i, start = xs
            chunk = self._chunk_of(sample, start, m)
            keep = (start + jnp.arange(m)) >= i * m
            out = {}
            for k in ("w", "v"):
                if k in chunk:
                    out[k] = jnp.where(keep, chunk[k], 0.0)
            R, d1, d2 = model._per_event_R(chunk, terms, 2)
            a = jnp.zeros_like(R)
            if "w" in out:
                live = out["w"] != 0
                s = jnp.where(live, (R * kappa) @ A, 1.0)
                a = out["w"][:, None] * R * kappa / s[:, None]
            if "v" in out:
                a = a - out["v"][:, None] * R * vs[None, :]
            out["lr"] = jnp.log(R)
            out["a"] = a
            h1, h2, g1 = [], [], []
            for c, spec in enumerate(model._specs):
                if spec.np_index.size:
                    h1.append(d1[c].astype(jnp.float32))
                    h2.append(d2[c].astype(jnp.float32))
                    g1.append(a[:, c] @ d1[c].astype(jnp.float32).astype(jnp.float64))
                else:
                    h1.append(None)
                    h2.append(None)
                    g1.append(None)
            out["h1"], out["h2"] = tuple(h1), tuple(h2)
            return None, (out, tuple(g1))

        _, (stacked, g1) = lax.scan(
            body, None, (jnp.arange(n_chunks), jnp.asarray(starts, jnp.int32))
        )
        stacked["g1"] = tuple(None if g is None else g.sum(axis=0) for g in g1)
        return stacked

    def _fixed_offsets(self, theta_hat, sample, jfix, n: int, alpha_fix):
        """E_icm = h_{i j_m c}(alpha_fix_m) - h_{i j_m c}(alpha-hat_{j_m}) per chunk, (m, M) per
        process (zero where nuisance j_m has no shape effect on c), float32."""
        model = self.model
        m, n_chunks, starts = _chunking(n, self.chunk)
        a_hat = theta_hat[model.n_free :]
        t_fix = alpha_terms(alpha_fix)
        t_hat = alpha_terms(a_hat[jfix])
        locs = []
        for spec in model._specs:
            pos = np.full(self.K, -1, dtype=np.int64)
            pos[spec.np_index] = np.arange(spec.np_index.size)
            locs.append(jnp.asarray(pos)[jfix])

        def body(_, start):
            chunk = self._chunk_of({k: sample[k] for k in ("up", "down")}, start, m)
            out = []
            for c, spec in enumerate(model._specs):
                if not spec.np_index.size:
                    out.append(None)
                    continue
                loc = locs[c]
                up = jnp.stack(chunk["up"][c], axis=1)[:, jnp.maximum(loc, 0)].astype(jnp.float64)
                dn = jnp.stack(chunk["down"][c], axis=1)[:, jnp.maximum(loc, 0)]
                dn = dn.astype(jnp.float64)
                e = log_factor(up, dn, t_fix) - log_factor(up, dn, t_hat)
                out.append(jnp.where(loc[None, :] >= 0, e, 0.0).astype(jnp.float32))
            return None, tuple(out)

        _, E = lax.scan(body, None, jnp.asarray(starts, jnp.int32))
        return E

    # ------------------------------------------------------------------ taylor: one pass
    def _taylor_pass(self, thetas, jfix, pre, E, aux):
        """q and its gradient for the M parameter vectors ``thetas`` (M, P) (Taylor model)."""
        model = self.model
        nf = model.n_free
        kappa = jnp.asarray(model.ratio_scale)
        vs = self.vscale
        A = jax.vmap(model.amplitudes)(thetas).T  # (C, M)
        dA = jax.vmap(jax.jacfwd(model.amplitudes))(thetas)  # (M, C, P)
        dalpha = thetas[:, nf:] - self.theta_hat[nf:][None, :]  # (M, K)
        M = thetas.shape[0]
        dalpha = jnp.where(jnp.arange(self.K)[None, :] == jfix[:, None], 0.0, dalpha)
        D = dalpha.T  # (K, M)
        Dc = [
            None if not s.np_index.size else (D[s.np_index], D[s.np_index] ** 2)
            for s in model._specs
        ]
        val = jnp.zeros(M, jnp.float64)
        asum = jnp.zeros((len(model._specs), M), jnp.float64)
        G = [None if d is None else jnp.zeros((2, d[0].shape[0], M)) for d in Dc]
        for p_s, E_s in zip(pre, E):

            def body(carry, xs, p_s=p_s):
                val, asum, G = carry
                ch, e = xs
                lr = []
                for c, d in enumerate(Dc):
                    x = ch["lr"][:, c][:, None]
                    if d is not None:
                        h1 = ch["h1"][c]
                        h2 = ch["h2"][c]
                        x = x + (h1 @ d[0].astype(jnp.float32)).astype(jnp.float64)
                        x = x + 0.5 * (h2 @ d[1].astype(jnp.float32)).astype(jnp.float64)
                        x = x + e[c].astype(jnp.float64)
                    lr.append(x)
                R = jnp.exp(jnp.stack(lr, axis=1))  # (m, C, M)
                a = jnp.zeros_like(R)
                if "w" in ch:
                    w = ch["w"]
                    live = (w != 0)[:, None]
                    s = jnp.einsum("icm,c,cm->im", R, kappa, A)
                    s = jnp.where(live, s, 1.0)
                    val = val + w @ jnp.log(s)
                    a = w[:, None, None] * R * kappa[None, :, None] / s[:, None, :]
                if "v" in ch:
                    u = ch["v"][:, None, None] * R * vs[None, :, None]
                    val = val - jnp.einsum("icm,cm->m", u, A)
                    a = a - u
                asum = asum + a.sum(axis=0)
                newG = []
                for c, d in enumerate(Dc):
                    if d is None:
                        newG.append(None)
                        continue
                    da = (a[:, c, :] - ch["a"][:, c][:, None]).astype(jnp.float32)
                    g1 = (ch["h1"][c].T @ da).astype(jnp.float64)
                    g2 = (ch["h2"][c].T @ a[:, c, :].astype(jnp.float32)).astype(jnp.float64)
                    newG.append(G[c] + jnp.stack([g1, g2]))
                return (val, asum, newG), None

            xs = ({k: v for k, v in p_s.items() if k != "g1"}, E_s)
            (val, asum, G), _ = lax.scan(body, (val, asum, G), xs)
        # gradient of L for each refit: sum_c asum_c dA_c + A_c sum_i a_ic dh_ic
        gL = jnp.einsum("cm,mcp->mp", asum, dA)
        for c, spec in enumerate(model._specs):
            if G[c] is None:
                continue
            g1hat = sum(p_s["g1"][c] for p_s in pre)  # (K_c,)
            dh = g1hat[:, None] + G[c][0] + Dc[c][0] * G[c][1]  # (K_c, M)
            gL = gL.at[:, spec.cols].add((A[c][None, :] * dh).T)
        extra = model._extra_fn(self.data)
        ve, ge = jax.vmap(jax.value_and_grad(extra), in_axes=(0, None))(thetas, aux)
        return ve - 2.0 * val, ge - 2.0 * gL

    def _exact_pass(self, thetas, data, aux):
        return jax.vmap(lambda t: self.model.q_value_grad(t, data, aux))(thetas)

    # ------------------------------------------------------------------ driver helpers
    def offsets(self, jfix: np.ndarray, alpha_fix: np.ndarray):
        if self.expansion != "taylor":
            return None
        return [
            self.fns["fixed"](
                self.theta_hat,
                {k: smp[k] for k in ("up", "down")},
                jnp.asarray(jfix),
                int(np.shape(smp["r"][0])[0]),
                jnp.asarray(alpha_fix, jnp.float64),
            )
            for smp, _ in self.samples
        ]

    def grads(self, thetas: np.ndarray, jfix: np.ndarray, E) -> tuple[np.ndarray, np.ndarray]:
        t = jnp.asarray(thetas, jnp.float64)
        if self.expansion == "taylor":
            q, g = self.fns["pass"](t, jnp.asarray(jfix), self.pre, E, self.aux)
        else:
            q, g = self.fns["exact"](t, self.data, self.aux)
        return np.asarray(q), np.asarray(g)


def _bfgs_inverse_update(hinv: np.ndarray, s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """BFGS update of the inverse Hessians (M, P, P) with steps ``s`` and gradient changes ``y``
    (M, P); refits whose curvature ``y.s`` is not positive keep theirs."""
    ys = np.einsum("mp,mp->m", y, s)
    ok = ys > 1e-300
    rho = np.where(ok, 1.0 / np.where(ok, ys, 1.0), 0.0)
    hy = np.einsum("mpq,mq->mp", hinv, y)
    yhy = np.einsum("mp,mp->m", y, hy)
    upd = (1.0 + rho * yhy)[:, None, None] * rho[:, None, None] * s[:, :, None] * s[
        :, None, :
    ] - rho[:, None, None] * (hy[:, :, None] * s[:, None, :] + s[:, :, None] * hy[:, None, :])
    return hinv + np.where(ok[:, None, None], upd, 0.0)


def batched_refit_impacts(
    target: Workspace | Model,
    result: FitResult,
    nuisances: Iterable[str] | None = None,
    pois: Sequence[str] | None = None,
    prefit: bool = True,
    batch_size: int = 100,
    expansion: str = "taylor",
    edm_tol: float = 1e-8,
    max_passes: int = 20,
    chunk_size: int = _DEFAULT_CHUNK,
    secant: bool = True,
    data=None,
    aux=None,
) -> BatchedImpacts:
    """All refit impacts of ``nuisances`` (default: every one) at once.

    Args:
        target / result: the model and its best fit (``result.hessian`` is the chord Hessian).
        prefit: also the pre-fit (+-1) shifts (4 refits per nuisance, else 2).
        batch_size: refits advanced together per pass over the events (memory: the chunk's
            temporaries grow as chunk_size x batch_size x processes x 8 bytes; in the Taylor
            expansion, plus the fixed nuisances' exact offsets, events x processes x batch_size
            x 4 bytes).
        expansion: "taylor" (matrix products over a second-order per-event expansion in the
            profiled nuisances; fast) or "exact" (the model's chunk kernel vmapped over the
            batch: exact, as costly per refit as a gradient pass).
        edm_tol: convergence of each refit, ``g_F^T H-hat_FF^-1 g_F / 2``.
        data / aux: other data pytree and auxiliary values (expected impacts); default the
            model's.

    Returns:
        :class:`BatchedImpacts` (the impacts in the same form as
        :func:`~sbi_engine.fit.impacts.refit_impacts`, method "refit").
    """
    enable_float64()
    if expansion not in ("taylor", "exact"):
        raise ValueError(f"expansion must be 'taylor' or 'exact', got {expansion!r}")
    t0 = time.perf_counter()
    model = target if isinstance(target, Model) else model_for(target)
    names = list(nuisances) if nuisances is not None else list(model.nuisance_names)
    pois = list(pois or model.poi_names)
    if getattr(model, "streaming", False) or model.mesh is not None:
        imps = refit_impacts(model, result, names, pois, prefit=prefit)
        n_ref = len(names) * (4 if prefit else 2)
        return BatchedImpacts(
            imps, n_ref, 0, 0, n_ref, float("nan"), time.perf_counter() - t0, expansion, True
        )
    data = model.data if data is None else data
    aux_arr = np.asarray(model.aux if aux is None else aux, dtype=np.float64)
    C, theta_hat, H = result.covariance, np.asarray(result.theta), np.asarray(result.hessian)
    base_fixed = np.array([n in result.fixed or n in result.at_bound for n in model.names])
    labels = SHIFT_LABELS if prefit else SHIFT_LABELS[:2]
    # one row per refit: (nuisance index in theta, label, target value)
    rows = []
    for name in names:
        j = model.index[name]
        sig = float(np.sqrt(max(C[j, j], 0.0)))
        shift = {"postfit_up": sig, "postfit_down": -sig, "prefit_up": 1.0, "prefit_down": -1.0}
        for lab in labels:
            rows.append(
                (j, lab, float(np.clip(theta_hat[j] + shift[lab], model.lower[j], model.upper[j])))
            )
    engine = _Engine(model, result, data, aux_arr, int(chunk_size), expansion)
    P = model.n_params
    final = np.empty((len(rows), P))
    passes = batches = n_conv = 0
    max_edm = 0.0
    for b0 in range(0, len(rows), batch_size):
        batch = rows[b0 : b0 + batch_size]
        Mb = len(batch)
        # pad the last batch by repeating its first row, so one compilation serves every batch
        padded = batch + [batch[0]] * (batch_size - Mb) if len(rows) > batch_size else batch
        jcol = np.array([r[0] for r in padded])
        tval = np.array([r[2] for r in padded])
        theta = np.repeat(theta_hat[None, :], len(padded), axis=0)
        hinv = np.empty((len(padded), P, P))
        free = np.empty((len(padded), P), dtype=bool)
        for m, (j, v) in enumerate(zip(jcol, tval)):
            if C[j, j] > 0:
                theta[m] += C[:, j] / C[j, j] * (v - theta_hat[j])
            theta[m, j] = v
            fr = ~base_fixed.copy()
            fr[j] = False
            free[m] = fr
            Hm = np.where(fr[:, None] & fr[None, :], H, 0.0) + np.diag(np.where(fr, 0.0, 1.0))
            hinv[m] = np.linalg.inv(Hm)
        theta = np.clip(theta, model.lower, model.upper)
        theta[~free] = np.where(
            np.arange(P)[None, :] == jcol[:, None], tval[:, None], theta_hat[None, :]
        )[~free]
        E = engine.offsets(jcol - model.n_free, theta[np.arange(len(padded)), jcol])
        edm = np.full(len(padded), np.inf)
        g_old = s_old = None
        for _ in range(max_passes):
            _, g = engine.grads(theta, jcol - model.n_free, E)
            passes += 1
            gf = np.where(free, g, 0.0)
            if g_old is not None and s_old is not None and secant:
                hinv = _bfgs_inverse_update(hinv, s_old, gf - g_old)
            step = -np.einsum("mpq,mq->mp", hinv, gf)
            edm = 0.5 * np.einsum("mp,mp->m", gf, -step)
            new = np.clip(theta + np.where(free, step, 0.0), model.lower, model.upper)
            g_old, s_old, theta = gf, new - theta, new
            if np.all(edm[:Mb] < edm_tol):
                break
        batches += 1
        n_conv += int(np.sum(edm[:Mb] < edm_tol))
        max_edm = max(max_edm, float(np.max(edm[:Mb])))
        final[b0 : b0 + Mb] = theta[:Mb]
    out = []
    for k, name in enumerate(names):
        n_lab = len(labels)
        block = final[k * n_lab : (k + 1) * n_lab]
        for p in pois:
            i = model.index[p]
            d = {lab: float(block[li, i] - theta_hat[i]) for li, lab in enumerate(labels)}
            out.append(
                Impact(
                    p,
                    name,
                    d.get("prefit_up", np.nan),
                    d.get("prefit_down", np.nan),
                    d["postfit_up"],
                    d["postfit_down"],
                    "refit",
                )
            )
    return BatchedImpacts(
        out,
        len(rows),
        passes,
        batches,
        n_conv,
        max_edm,
        time.perf_counter() - t0,
        expansion,
    )
