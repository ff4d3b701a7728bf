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
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="events per chunk (default: the model's, 16384 in memory, 8192 streamed)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeat", type=int, default=2, help="best of this many calls for nll/grad/hessian"
    )
    parser.add_argument(
        "--refit-nps",
        type=_refit_nps,
        default=2,
        help="NPs used to time one-at-a-time refit impacts, or 'all': every pre- and post-fit "
        "refit impact in one batched computation (impacts_refit_all_s), checked against "
        "one-at-a-time refits of --check-nps nuisances chosen at random "
        "(impacts_refit_all_max_rel_dev)",
    )
    parser.add_argument(
        "--check-nps", type=int, default=5, help="with --refit-nps all: NPs refitted one at a time"
    )
    parser.add_argument(
        "--impacts-batch", type=int, default=100, help="refits advanced together per event pass"
    )
    parser.add_argument(
        "--impacts-expansion",
        choices=("taylor", "exact"),
        default="taylor",
        help="batched refits: per-event second-order expansion (fast) or the exact kernel",
    )
    parser.add_argument(
        "--start-offset",
        type=float,
        default=0.5,
        help="both fits (ours and iminuit's) start with the POIs at init x (1 + offset) and the "
        "NPs at alternating +-offset, not at the Asimov truth (0: start at the truth)",
    )
    parser.add_argument("--no-iminuit", action="store_true", help="skip the iminuit baseline")
    parser.add_argument(
        "--iminuit-max-s",
        type=float,
        default=1800.0,
        help="stop the iminuit baseline after this many seconds and report it as a lower bound",
    )
    parser.add_argument(
        "--no-full-hessian", action="store_true", help="skip the unchunked jax.hessian baseline"
    )
    parser.add_argument(
        "--full-hessian-max-mb",
        type=float,
        default=4000.0,
        help="skip the unchunked jax.hessian baseline when its projected memory exceeds this",
    )
    parser.add_argument(
        "--stream",
        metavar="DIR",
        help="write the synthetic workspace to DIR (reused if already there) and stream its "
        "events from disk (StreamingModel) instead of holding them in memory",
    )
    parser.add_argument(
        "--devices",
        type=int,
        default=None,
        metavar="N",
        help="shard the events over N local devices (Model(devices=N); on CPU set "
        "XLA_FLAGS=--xla_force_host_platform_device_count=N before the run); not with --stream",
    )
    from backend.commands.fit import add_distributed_arguments  # noqa: PLC0415

    add_distributed_arguments(parser)


def device_memory() -> dict[str, dict[str, int]]:
    """Bytes in use and at peak on each of this process's devices, where the backend reports
    them (GPUs do; CPU devices report nothing and are left out)."""
    import jax  # noqa: PLC0415

    out = {}
    for d in jax.local_devices():
        try:
            stats = d.memory_stats() or {}
        except Exception:  # a backend without memory statistics
            stats = {}
        if stats:
            out[str(d.id)] = {
                k: int(stats[k])
                for k in ("bytes_in_use", "peak_bytes_in_use", "bytes_limit")
                if k in stats
            }
    return out


def _refit_nps(text: str) -> int | str:
    if text == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'all', got {text!r}") from None


def _refit_all(model, res, args, timed, out: dict[str, Any]) -> None:
    """Every refit impact batched, then ``--check-nps`` random NPs one at a time.

    ``impacts_refit_all_max_rel_dev``: over the checked NPs, the largest
    ``max_shift |batched - one-at-a-time| / max_shift |one-at-a-time|`` (the deviation on the
    scale of that NP's impact, so a near-zero shift does not divide by zero)."""
    from sbi_engine.fit.impacts import refit_impacts  # noqa: PLC0415
    from sbi_engine.fit.impacts_batched import batched_refit_impacts  # noqa: PLC0415

    names = list(model.nuisance_names)
    dt, batched = timed(
        lambda: batched_refit_impacts(
            model,
            res,
            names,
            batch_size=args.impacts_batch,
            expansion=args.impacts_expansion,
        ),
        1,
        "impacts_refit_all",
    )
    out["impacts_refit_all_s"] = dt
    for key, value in batched.to_dict().items():
        if key != "seconds":
            out[f"impacts_refit_all_{key}"] = value
    out["impacts_refit_all_batch"] = args.impacts_batch
    print(
        f"  all refit impacts: {dt:.1f} s ({batched.refits} refits, {batched.passes} passes)",
        file=sys.stderr,
    )
    rng = np.random.default_rng(args.seed + 14)
    n_check = min(args.check_nps, len(names))
    check = sorted(rng.choice(len(names), size=n_check, replace=False).tolist())
    chosen = [names[i] for i in check]
    dt1, single = timed(lambda: refit_impacts(model, res, chosen), 1)
    out["impacts_refit_per_np_s"] = dt1 / max(n_check, 1)
    out["impacts_refit_all_checked_nps"] = chosen
    by_name = {(i.poi, i.nuisance): i for i in batched.impacts}
    devs = []
    keys = ("postfit_up", "postfit_down", "prefit_up", "prefit_down")
    for one in single:
        b = by_name[(one.poi, one.nuisance)]
        ref = np.array([getattr(one, k) for k in keys])
        got = np.array([getattr(b, k) for k in keys])
        devs.append(float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-300)))
    out["impacts_refit_all_rel_devs"] = devs
    out["impacts_refit_all_max_rel_dev"] = max(devs) if devs else None
    out["impacts_refit_all_one_at_a_time_projected_s"] = out["impacts_refit_per_np_s"] * len(names)


def _rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def synthetic_workspace(n: int, k: int, seed: int = 0):
    """3 processes (S, SBI, B with the off-shell coefficients); K NPs each with a norm and a
    shape effect on every process; weights = the expected intensity at mu = 1 (Asimov-like)."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from sbi_engine.fit import Workspace  # noqa: PLC0415
    from sbi_engine.precision import enable_float64  # noqa: PLC0415

    enable_float64()  # before the arrays: the weights are float64
    key = jax.random.PRNGKey(seed)
    f32 = jnp.float32
    procs, coeff, yields = _SYN_PROCS, _SYN_COEFF, _SYN_YIELDS
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
            eps, norm = _synthetic_effects(i, j)
            up = jnp.exp(eps * z - 0.5 * eps * eps).astype(f32)
            down = jnp.exp(-eps * z - 0.5 * eps * eps).astype(f32)
            effects[c] = {"norm": norm, "shape": (up, down)}
        nuis.append({"name": f"np{i:03d}", "effects": effects})
    w = jnp.asarray(yields["SBI"] / n * np.asarray(ratios["SBI"], dtype=np.float64))
    return Workspace.from_arrays(
        pois={"mu": {"init": 1.0, "bounds": (0.0, 10.0)}},
        processes={
            c: {"yield": yields[c], "coefficient": coeff[c], "ratio": ratios[c]} for c in procs
        },
        weights=w,
        nuisances=nuis,
        data_kind="asimov",
        generated_at={"mu": 1.0},
        validate_values=False,
    )


def fit_start(model, offset: float) -> np.ndarray:
    """The common starting point of the timed fits: the synthetic data are Asimov at the initial
    values, so starting there would time a single confirming iteration, not a fit."""
    start = np.asarray(model.init, dtype=np.float64).copy()
    start[: model.n_free] *= 1.0 + offset
    signs = np.where(np.arange(start.size - model.n_free) % 2 == 0, 1.0, -1.0)
    start[model.n_free :] += offset * signs
    return np.clip(start, model.lower, model.upper)


def _pin_malloc_threshold(nbytes: int) -> None:
    """Fix glibc's mmap threshold (no-op elsewhere).

    glibc raises its threshold after large frees, so the many few-MB temporaries of synthetic
    generation stay in the heap afterwards (about 1 GB at 1e6 x 100) and ``peak_rss_mb`` would
    measure the generator's fragmentation rather than the fit. Pinning the threshold low while
    generating returns them; pinning it high afterwards keeps the fit's chunk buffers reusable.
    """
    try:
        import ctypes  # noqa: PLC0415

        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
        libc.mallopt(-3, int(nbytes))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def _synthetic_effects(i: int, j: int) -> tuple[float, tuple[float, float]]:
    """(shape width eps, norm (up, down)) of NP i on process j (shared by both generators)."""
    eps = 0.02 + 0.03 * ((i * 7 + j) % 5) / 4.0
    return eps, (1.0 + 0.01 * (1 + (i + j) % 4), 1.0 - 0.008 * (1 + (i + j) % 4))


_SYN_PROCS = ("S", "SBI", "B")
_SYN_COEFF = {"S": "mu - sqrt(mu)", "SBI": "sqrt(mu)", "B": "1 - sqrt(mu)"}
_SYN_YIELDS = {"S": 100.0, "SBI": 380.0, "B": 400.0}


def write_synthetic_workspace(
    path: Path, n: int, k: int, seed: int = 0, block: int = 1 << 21
) -> Path:
    """The synthetic workspace of :func:`synthetic_workspace`, written to disk array by array
    (NumPy generator, float32 ``.npy`` files, ``block`` events at a time) without ever holding
    it in memory; ``norm_weights`` are written explicitly (1/n: the Asimov weights divided by the
    intensity at the generation point)."""
    path = Path(path)
    folder = path.parent / f"{path.stem}.arrays"
    folder.mkdir(parents=True, exist_ok=True)

    def write(name: str, fill) -> dict[str, str]:
        arr = np.lib.format.open_memmap(
            folder / f"{name}.npy",
            mode="w+",
            dtype=np.float32 if name != "weights" and name != "norm_weights" else np.float64,
            shape=(n,),
        )
        for start in range(0, n, block):
            stop = min(n, start + block)
            arr[start:stop] = fill(start, stop)
        arr.flush()
        del arr
        return {"file": f"{folder.name}/{name}.npy"}

    def lognormal(stream: int, a: float, sign: float = 1.0):
        def fill(start: int, stop: int) -> np.ndarray:
            rng = np.random.default_rng([seed, stream, start])
            z = rng.standard_normal(stop - start, dtype=np.float32)
            return np.exp(sign * a * z - np.float32(0.5 * a * a))

        return fill

    processes = []
    for j, c in enumerate(_SYN_PROCS):
        a = 0.3 if c != "SBI" else 0.0
        processes.append(
            {
                "name": c,
                "yield": _SYN_YIELDS[c],
                "coefficient": _SYN_COEFF[c],
                "ratio": write(f"ratio_{c}", lognormal(j, a)),
            }
        )
    nuisances = []
    for i in range(k):
        effects = []
        for j, c in enumerate(_SYN_PROCS):
            eps, norm = _synthetic_effects(i, j)
            stream = 1000 + 3 * i + j
            effects.append(
                {
                    "process": c,
                    "norm": {"up": norm[0], "down": norm[1]},
                    "shape": {
                        "up": write(f"shape_np{i:03d}_{c}_up", lognormal(stream, eps)),
                        "down": write(f"shape_np{i:03d}_{c}_down", lognormal(stream, eps, -1.0)),
                    },
                }
            )
        nuisances.append(
            {
                "name": f"np{i:03d}",
                "constraint": {"type": "gaussian", "aux": 0.0},
                "init": 0.0,
                "bounds": [-5.0, 5.0],
                "effects": effects,
            }
        )
    doc = {
        "format": "nsbi-workspace",
        "version": 1,
        "parameters": {"pois": [{"name": "mu", "init": 1.0, "bounds": [0.0, 10.0]}]},
        "processes": processes,
        "nuisances": nuisances,
        "data": {
            "kind": "asimov",
            "n_events": n,
            "generated_at": {"mu": 1.0},
            "weights": write("weights", lambda a, b: np.full(b - a, _SYN_YIELDS["SBI"] / n)),
            "norm_weights": write("norm_weights", lambda a, b: np.full(b - a, 1.0 / n)),
        },
        "metadata": {"synthetic": {"events": n, "nps": k, "seed": seed}},
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def _iminuit_baseline(
    fcn: Any, grad: Any, start: np.ndarray, names: list[str], limits: list[Any], max_s: float
) -> dict[str, Any]:
    """MIGRAD + HESSE on ``fcn`` (with ``grad`` when given), stopped after ``max_s`` seconds.

    Returns seconds, nfcn, ngrad, valid and theta; a stopped run says so and its seconds are a
    lower bound.
    """
    from iminuit import Minuit  # noqa: PLC0415

    class _Stop(Exception):
        pass

    t0 = time.perf_counter()
    calls = [0]

    def capped(x: np.ndarray) -> float:
        calls[0] += 1
        if time.perf_counter() - t0 > max_s:
            raise _Stop
        return float(fcn(x))

    m = Minuit(capped, start.copy(), grad=grad, name=names)
    m.errordef = Minuit.LEAST_SQUARES
    m.limits = limits
    out: dict[str, Any] = {}
    try:
        m.migrad()
        m.hesse()
        out["valid"] = bool(m.valid)
        out["theta"] = [float(v) for v in m.values]
    except _Stop:
        out["stopped"] = (
            f"stopped after {max_s:.0f} s without finishing MIGRAD+HESSE: the time is a lower bound"
        )
    out["seconds"] = time.perf_counter() - t0
    out["nfcn"] = calls[0]
    out["ngrad"] = int(m.ngrad) if grad is not None else 0
    return out


def numpy_nll(model) -> Any:
    """The same q(theta) written in NumPy (for the iminuit baseline).

    Written as a careful NumPy user would: everything that does not depend on theta (log ratios,
    the six code-4 basis arrays per shape effect) is computed once, and each call runs the
    multiply-adds in place, so the baseline is not slowed by avoidable temporaries.
    """
    from sbi_engine.fit.interp import _MINV  # noqa: PLC0415

    ws = model.workspace
    w = np.asarray(model.data["w"], dtype=np.float64)
    lr = [np.log(np.asarray(r, dtype=np.float64)) for r in model.data["r"]]

    def _basis_of(lu, ld):
        u, d = np.exp(lu), np.exp(ld)
        return (u - 1, d - 1, u * lu, -d * ld, u * lu * lu, d * ld * ld)

    def basis(ups, dns):
        """(log up, log down, the six polynomial basis arrays) of one process, (N, K_c) each."""
        lu = np.log(np.stack([np.asarray(a) for a in ups], 1).astype(np.float64))
        ld = np.log(np.stack([np.asarray(a) for a in dns], 1).astype(np.float64))
        return lu, ld, _basis_of(lu, ld)

    shapes = [
        basis(ups, dns) if ups else None for ups, dns in zip(model.data["up"], model.data["down"])
    ]
    log_kup, log_kdn = np.log(model._kup), np.log(model._kdn)  # yield factors, (C, K)
    yield_basis = _basis_of(log_kup, log_kdn)
    yields = np.array([p.yield_ for p in ws.processes])
    exprs = [p.coefficient for p in ws.processes]
    nf = model.n_free
    idx = [s.np_index for s in model._specs]
    v = np.asarray(model.data["v"], dtype=np.float64) if "v" in model.data else None
    vscale = np.asarray(model.data["vscale"], dtype=np.float64) if "vscale" in model.data else None
    k = np.asarray(
        model.ratio_scale, dtype=np.float64
    )  # ratios normalised on the normalisation sample (1 without)

    def terms(alpha):
        inside = np.abs(alpha) <= 1
        pw = np.stack([alpha**i for i in range(1, 7)], -1)
        c = np.where(inside[:, None], pw @ _MINV, 0.0)
        return c, np.where(alpha > 1, alpha, 0.0), np.where(alpha < -1, -alpha, 0.0)

    def log_factor_sum(lu, ld, b, c, bu, bd):
        """sum_k ln f_k per event: the code-4 factor (polynomial inside, exponential outside)."""
        poly = np.ones_like(lu)
        tmp = np.empty_like(lu)
        for j in range(6):
            np.multiply(b[j], c[:, j], out=tmp)
            poly += tmp
        np.maximum(poly, 1e-12, out=poly)
        np.log(poly, out=poly)
        np.multiply(lu, bu, out=tmp)
        poly += tmp
        np.multiply(ld, bd, out=tmp)
        poly += tmp
        return poly.sum(1)

    def q(theta):
        theta = np.asarray(theta, dtype=np.float64)
        vals = {n: theta[i] for i, n in enumerate(model._free_names)}
        alpha = theta[nf:]
        c, bu, bd = terms(alpha)
        m = np.array([float(e(vals, np)) for e in exprs])
        eta = np.exp(log_factor_sum(log_kup, log_kdn, yield_basis, c, bu, bd))  # (C,)
        A = m * yields * eta
        s = np.zeros_like(w)
        nu = 0.0
        for j in range(len(exprs)):
            h = lr[j].copy()
            if shapes[j] is not None:
                i = idx[j]
                lu, ld, b = shapes[j]
                h += log_factor_sum(lu, ld, b, c[i], bu[i], bd[i])
            R = np.exp(h, out=h)
            s += (A[j] * k[j]) * R
            # shape normalisation n_c = sum_i v_i R_c / sum_i v_i r_c (1 without shapes / weights)
            nu += A[j] * (
                float(np.dot(v, R)) * vscale[j] if v is not None and vscale[j] > 0 else 1.0
            )
        return 2 * nu - 2 * np.dot(w, np.log(s)) + np.sum((alpha - model.aux) ** 2)

    return q


def run(args: argparse.Namespace) -> int:
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from backend.commands.fit import start_distributed  # noqa: PLC0415
    from sbi_engine.fit import Model, fit  # noqa: PLC0415
    from sbi_engine.fit.impacts import covariance_impacts, refit_impacts  # noqa: PLC0415
    from sbi_engine.precision import enable_float64  # noqa: PLC0415

    try:
        dist = start_distributed(args)  # before JAX touches a device
    except ValueError as exc:
        print(f"bench fit: {exc}", file=sys.stderr)
        return 2
    if dist is not None:
        if args.devices is None:
            args.devices = dist.global_devices
        if args.devices != dist.global_devices:  # a mesh must hold devices of every process
            print(
                f"bench fit: with several processes --devices must be all {dist.global_devices}",
                file=sys.stderr,
            )
            return 2
    enable_float64()
    n, k = int(args.events), int(args.nps)
    out: dict[str, Any] = {
        "events": n,
        "nps": k,
        "processes": 3,
        "chunk_size": args.chunk_size,
        "device": str(jax.devices()[0]),
        "devices": int(args.devices or 1),
        "jax_processes": jax.process_count(),
    }
    if args.stream and args.devices:
        print("bench fit: --devices shards in-memory events; drop --stream", file=sys.stderr)
        return 2
    model: Model  # a StreamingModel with --stream
    if args.stream:
        from sbi_engine.fit import Workspace  # noqa: PLC0415
        from sbi_engine.fit.stream import StreamingModel  # noqa: PLC0415

        path = Path(args.stream) / f"synthetic-{n}x{k}-s{args.seed}.json"
        if not path.exists():
            print(f"bench fit: writing N={n}, K={k} to {path} ...", file=sys.stderr)
            t0 = time.perf_counter()
            write_synthetic_workspace(path, n, k, args.seed)
            out["write_s"] = time.perf_counter() - t0
        ws = Workspace.load(path, mmap=True)
        model = StreamingModel(ws, **({"chunk_size": args.chunk_size} if args.chunk_size else {}))
        out["streamed_from"] = str(path)
    else:
        print(f"bench fit: generating N={n}, K={k} ...", file=sys.stderr)
        _pin_malloc_threshold(1 << 20)
        ws = synthetic_workspace(n, k, args.seed)
        _pin_malloc_threshold(64 << 20)
        model = Model(
            ws,
            devices=args.devices,
            **({"chunk_size": args.chunk_size} if args.chunk_size else {}),
        )
    out["data_mb"] = model.data_nbytes / 2**20
    if not args.stream:
        from sbi_engine.fit.sharding import bytes_per_device  # noqa: PLC0415

        # the event arrays held by each device (1/devices of them, padding rows included)
        out["event_bytes_per_device"] = bytes_per_device(model.data)
        out["event_rows"] = int(model.n_rows)
    out["chunk_size"] = model.chunk_size
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
    theta[model.n_free :] = 0.1
    out["nll_s"], _ = timed(lambda: model.nll(theta), args.repeat, "nll")
    out["grad_s"], _ = timed(lambda: model.value_and_grad(theta), args.repeat, "grad")
    out["hessian_s"], _ = timed(lambda: model.value_grad_hessian(theta), args.repeat, "hessian")
    print(
        f"  nll {out['nll_s']:.3f} s, grad {out['grad_s']:.3f} s, hessian {out['hessian_s']:.3f} s",
        file=sys.stderr,
    )
    start = fit_start(model, args.start_offset)
    out["fit_start_offset"] = args.start_offset
    out["fit_s"], res = timed(lambda: fit(model, init=start), 1, "fit")
    out["fit_converged"] = bool(res.converged)
    out["q_min"] = float(res.q_min)
    out["mu_hat"] = float(res.values["mu"])
    out["fit_iterations"] = res.n_iter
    out["fit_message"] = res.message
    out["impacts_cov_s"], _ = timed(lambda: covariance_impacts(model, res))
    n_ref = 0 if args.refit_nps == "all" else max(0, min(args.refit_nps, k))
    if args.refit_nps == "all":
        _refit_all(model, res, args, timed, out)
    elif n_ref:
        dt, _ = timed(lambda: refit_impacts(model, res, list(model.nuisance_names[:n_ref])))
        out["impacts_refit_per_np_s"] = dt / n_ref
    else:
        out["impacts_refit_per_np_s"] = None
        out["impacts_refit_skipped"] = "--refit-nps 0"
    out["fit_hessian_covimpacts_s"] = out["fit_s"] + out["impacts_cov_s"]
    print(
        f"  fit {out['fit_s']:.2f} s ({res.n_iter} it, {res.message}), refit impact/NP "
        f"{out['impacts_refit_per_np_s']} s",
        file=sys.stderr,
    )
    # unchunked jax.hessian baseline
    P = model.n_params
    elems = n * k * 3
    proj_mb = (
        elems * 8 * (2 * P + 12) / 2**20
    )  # per-element float64 temporaries with P batched tangents
    out["baseline_full_hessian_projected_mb"] = proj_mb
    if args.stream:
        out["baseline_full_hessian_s"] = None
        out["baseline_full_hessian_skipped"] = "streamed run: the events are not in memory"
    elif args.no_full_hessian or proj_mb > args.full_hessian_max_mb:
        out["baseline_full_hessian_s"] = None
        out["baseline_full_hessian_skipped"] = (
            f"projected memory {proj_mb:.0f} MB for jax.hessian over all "
            f"events at once exceeds {args.full_hessian_max_mb:.0f} MB"
        )
    else:
        aux = jnp.asarray(model.aux)
        f = jax.jit(jax.hessian(model.q_unchunked))
        t0 = time.perf_counter()
        c = f.lower(jnp.asarray(theta), model.data, aux).compile()
        out["baseline_full_hessian_compile_s"] = (
            time.perf_counter() - t0
        )  # not part of compile_s (ours)
        dt, Hf = timed(
            lambda: jax.block_until_ready(c(jnp.asarray(theta), model.data, aux))
        )  # JAX dispatches async
        out["baseline_full_hessian_s"] = dt
        Hc = model.hessian(theta)
        out["full_hessian_max_rel_diff"] = float(
            np.max(np.abs(np.asarray(Hf) - Hc)) / np.max(np.abs(Hc))
        )
    # iminuit baseline on a NumPy NLL
    if args.stream:
        out["baseline_iminuit_s"] = None
        out["baseline_iminuit_skipped"] = "streamed run: the events are not in memory"
    elif args.no_iminuit or elems > IMINUIT_MAX_ELEMENTS:
        out["baseline_iminuit_s"] = None
        out["baseline_iminuit_skipped"] = (
            f"N x K x processes = {elems:.3g} > {IMINUIT_MAX_ELEMENTS:.3g}: MIGRAD+HESSE "
            "with numerical derivatives needs O(K^2) NumPy NLL calls (hours here)"
        )
    else:
        q = numpy_nll(model)
        out["numpy_nll_matches"] = float(abs(q(theta) - model.nll(theta)))
        out["baseline_numpy_nll_s"], _ = timed(
            lambda: q(theta), 3
        )  # one call; MIGRAD+HESSE make O(K^2)

        ours_s = out["fit_s"] + clock.seconds
        sigma = np.sqrt(np.diag(res.covariance))
        limits = list(zip(model.lower, model.upper))
        runs = {
            # the NumPy NLL with MIGRAD's numerical derivatives: what a careful NumPy user gets
            "": (q, None),
            # the project's JAX NLL, numerical derivatives, then its exact JAX gradient: separates
            # "JAX vs NumPy" from "exact vs numerical derivatives" in the speed-up
            "_jax_numgrad": (lambda x: model.nll(np.asarray(x)), None),
            "_jax_grad": (
                lambda x: model.nll(np.asarray(x)),
                lambda x: model.value_and_grad(np.asarray(x))[1],
            ),
        }
        for suffix, (fcn, grad) in runs.items():
            run = _iminuit_baseline(fcn, grad, start, list(model.names), limits, args.iminuit_max_s)
            theta_minuit = run.pop("theta", None)
            seconds = run.pop("seconds")
            out[f"baseline_iminuit{suffix}_s"] = seconds
            for key, value in run.items():
                out[f"baseline_iminuit{suffix}_{key}"] = value
            if theta_minuit is not None:
                out[f"iminuit{suffix}_max_dtheta_over_sigma"] = float(
                    np.max(np.abs(np.asarray(theta_minuit) - res.theta) / sigma)
                )
            out[f"speedup_vs_iminuit{suffix}_incl_compile"] = seconds / ours_s
    out["compile_s"] = clock.seconds
    out["compile_count"] = clock.count
    out.update(cpu)
    out["load_average_1m_at_end"] = os.getloadavg()[0]
    out["peak_rss_mb"] = _rss_peak_mb()
    # the accelerators' own counters, per device (empty on CPU: see event_bytes_per_device)
    out["device_memory"] = device_memory()
    text = json.dumps(out, indent=2, sort_keys=True)
    if jax.process_index() != 0:  # every process computed the same figures; process 0 reports
        return 0
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.fit``: the same as ``nsbi bench fit`` without building the other
    benchmarks' options (the GPU check runs it where the control plane's packages are absent)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fit")
    add_arguments(parser)
    return int(run(parser.parse_args(argv)) or 0)


if __name__ == "__main__":
    sys.exit(main())
