"""`nsbi bench fit`: timings of the chunked NLL, gradient, exact Hessian, fit and impacts on a
synthetic workspace (3 processes, every NP with a normalisation and a per-event shape effect on
every process), with the iminuit (NumPy NLL) and the unchunked jax.hessian baselines measured
in the same run on the same NLL.

All JIT compilation is booked in ``compile_s``; the other timings exclude it. Per-event arrays
are generated directly as float32 JAX arrays, so the process holds one copy of the data.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_arguments", "run", "synthetic_workspace", "numpy_nll"]

# Above this many (events x NPs x processes) elements the iminuit baseline is skipped: with
# numerical derivatives MIGRAD + HESSE need O(NPs^2) NLL calls of O(elements) work each, i.e.
# hours at 1e6 x 100 on two cores.
IMINUIT_MAX_ELEMENTS = 2e7


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=float, default=1e5, help="number of events N")
    parser.add_argument("--nps", type=int, default=50, help="number of nuisance parameters K")
    parser.add_argument("--chunk-size", type=int, default=16384)
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=2, help="best of this many calls for nll/grad/hessian")
    parser.add_argument("--refit-nps", type=int, default=2, help="NPs used to time refit impacts")
    parser.add_argument("--no-iminuit", action="store_true", help="skip the iminuit baseline")
    parser.add_argument("--iminuit-max-s", type=float, default=1800.0,
                        help="stop the iminuit baseline after this many seconds and report it as a lower bound")
    parser.add_argument("--no-full-hessian", action="store_true", help="skip the unchunked jax.hessian baseline")
    parser.add_argument("--full-hessian-max-mb", type=float, default=4000.0,
                        help="skip the unchunked jax.hessian baseline when its projected memory exceeds this")


def _rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def synthetic_workspace(n: int, k: int, seed: int = 0):
    """3 processes (S, SBI, B with the off-shell coefficients); K NPs each with a norm and a
    shape effect on every process; weights = the expected intensity at mu = 1 (Asimov-like)."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from sbi_engine.fit import Workspace  # noqa: PLC0415

    key = jax.random.PRNGKey(seed)
    f32 = jnp.float32
    procs = ("S", "SBI", "B")
    coeff = {"S": "mu - sqrt(mu)", "SBI": "sqrt(mu)", "B": "1 - sqrt(mu)"}
    yields = {"S": 100.0, "SBI": 380.0, "B": 400.0}
    ratios = {}
    for j, c in enumerate(procs):
        z = jax.random.normal(jax.random.fold_in(key, j), (n,), dtype=f32)
        a = 0.3 if c != "SBI" else 0.0
        ratios[c] = jnp.exp(a * z - 0.5 * a * a).astype(f32)
    nuis = []
    for i in range(k):
        effects = {}
        for j, c in enumerate(procs):
            z = jax.random.normal(jax.random.fold_in(key, 1000 + 3 * i + j), (n,), dtype=f32)
            eps = 0.02 + 0.03 * ((i * 7 + j) % 5) / 4.0
            up = jnp.exp(eps * z - 0.5 * eps * eps).astype(f32)
            down = jnp.exp(-eps * z - 0.5 * eps * eps).astype(f32)
            effects[c] = {"norm": (1.0 + 0.01 * (1 + (i + j) % 4), 1.0 - 0.008 * (1 + (i + j) % 4)),
                          "shape": (up, down)}
        nuis.append({"name": f"np{i:03d}", "effects": effects})
    w = jnp.asarray(yields["SBI"] / n * np.asarray(ratios["SBI"], dtype=np.float64))
    return Workspace.from_arrays(
        pois={"mu": {"init": 1.0, "bounds": (0.0, 10.0)}},
        processes={c: {"yield": yields[c], "coefficient": coeff[c], "ratio": ratios[c]} for c in procs},
        weights=w, nuisances=nuis, data_kind="asimov", generated_at={"mu": 1.0}, validate_values=False,
    )


def numpy_nll(model) -> Any:
    """The same q(theta) written in NumPy (for the iminuit baseline)."""
    from sbi_engine.fit.interp import _MINV  # noqa: PLC0415

    ws = model.workspace
    w = np.asarray(model.data["w"])
    lr = [np.log(np.asarray(r, dtype=np.float64)) for r in model.data["r"]]
    lus = [np.log(np.stack([np.asarray(a) for a in ups], 1).astype(np.float64)) if ups else None for ups in model.data["up"]]
    lds = [np.log(np.stack([np.asarray(a) for a in dns], 1).astype(np.float64)) if dns else None for dns in model.data["down"]]
    yields = np.array([p.yield_ for p in ws.processes])
    exprs = [p.coefficient for p in ws.processes]
    nf = model.n_free
    idx = [s.np_index for s in model._specs]

    def terms(alpha):
        inside = np.abs(alpha) <= 1
        pw = np.stack([alpha ** i for i in range(1, 7)], -1)
        c = np.where(inside[:, None], pw @ _MINV, 0.0)
        return c, np.where(alpha > 1, alpha, 0.0), np.where(alpha < -1, -alpha, 0.0)

    def logf(lu, ld, c, bu, bd):
        u, d = np.exp(lu), np.exp(ld)
        b = (u - 1, d - 1, u * lu, -d * ld, u * lu * lu, d * ld * ld)
        poly = 1.0 + sum(b[j] * c[..., j] for j in range(6))
        return np.log(np.maximum(poly, 1e-12)) + bu * lu + bd * ld

    def q(theta):
        theta = np.asarray(theta, dtype=np.float64)
        vals = {n: theta[i] for i, n in enumerate(model._free_names)}
        alpha = theta[nf:]
        c, bu, bd = terms(alpha)
        m = np.array([float(e(vals, np)) for e in exprs])
        eta = np.exp(logf(np.log(model._kup), np.log(model._kdn), c, bu, bd).sum(1))
        A = m * yields * eta
        s = np.zeros_like(w)
        for j in range(len(exprs)):
            h = lr[j].copy()
            if lus[j] is not None:
                i = idx[j]
                h += logf(lus[j], lds[j], c[i], bu[i], bd[i]).sum(1)
            s += A[j] * np.exp(h)
        return 2 * A.sum() - 2 * np.dot(w, np.log(s)) + np.sum((alpha - model.aux) ** 2)

    return q


def run(args: argparse.Namespace) -> int:
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from sbi_engine.fit import Model, fit  # noqa: PLC0415
    from sbi_engine.fit.impacts import covariance_impacts, refit_impacts  # noqa: PLC0415

    n, k = int(args.events), int(args.nps)
    out: dict[str, Any] = {"events": n, "nps": k, "processes": 3, "chunk_size": args.chunk_size,
                           "device": str(jax.devices()[0])}
    print(f"bench fit: generating N={n}, K={k} ...", file=sys.stderr)
    ws = synthetic_workspace(n, k, args.seed)
    model = Model(ws, chunk_size=args.chunk_size)
    out["data_mb"] = model.data_nbytes / 2**20
    clock = model.clock

    cpu: dict[str, float] = {}

    def timed(fn, repeat=1, label=None):
        """Wall seconds per call excluding JIT compilation done inside (best of ``repeat``);
        the process CPU seconds of the same call go to ``<label>_cpu_s`` (the machine is shared)."""
        best = None
        for _ in range(repeat):
            c0 = clock.seconds
            t0, p0 = time.perf_counter(), time.process_time()
            r = fn()
            dt = time.perf_counter() - t0 - (clock.seconds - c0)
            if best is None or dt < best:
                best = dt
                if label:
                    cpu[label + "_cpu_s"] = time.process_time() - p0
        return best, r

    theta = model.init.copy()
    theta[model.n_free:] = 0.1
    out["nll_s"], _ = timed(lambda: model.nll(theta), args.repeat, "nll")
    out["grad_s"], _ = timed(lambda: model.value_and_grad(theta), args.repeat, "grad")
    out["hessian_s"], _ = timed(lambda: model.value_grad_hessian(theta), args.repeat, "hessian")
    print(f"  nll {out['nll_s']:.3f} s, grad {out['grad_s']:.3f} s, hessian {out['hessian_s']:.3f} s", file=sys.stderr)
    out["fit_s"], res = timed(lambda: fit(model), 1, "fit")
    out["fit_converged"] = bool(res.converged)
    out["fit_iterations"] = res.n_iter
    out["fit_message"] = res.message
    out["impacts_cov_s"], _ = timed(lambda: covariance_impacts(model, res))
    n_ref = max(1, min(args.refit_nps, k))
    dt, _ = timed(lambda: refit_impacts(model, res, list(model.nuisance_names[:n_ref])))
    out["impacts_refit_per_np_s"] = dt / n_ref
    out["fit_hessian_covimpacts_s"] = out["fit_s"] + out["impacts_cov_s"]
    print(f"  fit {out['fit_s']:.2f} s ({res.n_iter} it, {res.message}), refit impact/NP "
          f"{out['impacts_refit_per_np_s']:.2f} s", file=sys.stderr)
    # unchunked jax.hessian baseline
    P = model.n_params
    elems = n * k * 3
    proj_mb = elems * 8 * (2 * P + 12) / 2**20  # per-element float64 temporaries with P batched tangents
    out["baseline_full_hessian_projected_mb"] = proj_mb
    if args.no_full_hessian or proj_mb > args.full_hessian_max_mb:
        out["baseline_full_hessian_s"] = None
        out["baseline_full_hessian_skipped"] = (f"projected memory {proj_mb:.0f} MB for jax.hessian over all "
                                                f"events at once exceeds {args.full_hessian_max_mb:.0f} MB")
    else:
        aux = jnp.asarray(model.aux)
        f = jax.jit(jax.hessian(model.q_unchunked))
        t0 = time.perf_counter()
        c = f.lower(jnp.asarray(theta), model.data, aux).compile()
        out["baseline_full_hessian_compile_s"] = time.perf_counter() - t0  # not part of compile_s (ours)
        dt, Hf = timed(lambda: c(jnp.asarray(theta), model.data, aux))
        out["baseline_full_hessian_s"] = dt
        Hc = model.hessian(theta)
        out["full_hessian_max_rel_diff"] = float(np.max(np.abs(np.asarray(Hf) - Hc)) / np.max(np.abs(Hc)))
    # iminuit baseline on a NumPy NLL
    if args.no_iminuit or elems > IMINUIT_MAX_ELEMENTS:
        out["baseline_iminuit_s"] = None
        out["baseline_iminuit_skipped"] = (f"N x K x processes = {elems:.3g} > {IMINUIT_MAX_ELEMENTS:.3g}: MIGRAD+HESSE "
                                           "with numerical derivatives needs O(K^2) NumPy NLL calls (hours here)")
    else:
        from iminuit import Minuit  # noqa: PLC0415

        q = numpy_nll(model)
        out["numpy_nll_matches"] = float(abs(q(theta) - model.nll(theta)))

        class _Stop(Exception):
            pass

        t0 = time.perf_counter()
        calls = [0]

        def q_capped(x):
            calls[0] += 1
            if time.perf_counter() - t0 > args.iminuit_max_s:
                raise _Stop
            return q(x)

        m = Minuit(q_capped, model.init.copy(), name=list(model.names))
        m.errordef = Minuit.LEAST_SQUARES
        m.limits = [(lo, hi) for lo, hi in zip(model.lower, model.upper)]
        try:
            m.migrad()
            m.hesse()
            out["baseline_iminuit_s"] = time.perf_counter() - t0
            out["baseline_iminuit_valid"] = bool(m.valid)
            out["iminuit_max_dtheta_over_sigma"] = float(np.max(np.abs(np.array(m.values) - res.theta)
                                                                / np.sqrt(np.diag(res.covariance))))
        except _Stop:
            out["baseline_iminuit_s"] = time.perf_counter() - t0
            out["baseline_iminuit_stopped"] = (f"stopped after {args.iminuit_max_s:.0f} s without finishing "
                                               "MIGRAD+HESSE: baseline_iminuit_s is a lower bound")
        out["baseline_iminuit_nfcn"] = calls[0]
        out["speedup_vs_iminuit_incl_compile"] = out["baseline_iminuit_s"] / (out["fit_s"] + clock.seconds)
    out["compile_s"] = clock.seconds
    out["compile_count"] = clock.count
    out.update(cpu)
    out["load_average_1m_at_end"] = os.getloadavg()[0]
    out["peak_rss_mb"] = _rss_peak_mb()
    text = json.dumps(out, indent=2, sort_keys=True)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0
