"""``nsbi bench train``: training throughput of ratio ensembles, against the machine's matmul rate.

For each model (the ATLAS-sized 7x1500 MLP and a small 3x64 one), ensemble size M and layout
strategy ("vmap": all members in one compiled program; "packs": packs of k members one after
another) it times the real training program (``sbi_engine.ratio.steps.make_interval``: batch
draw, forward, backward, Adam update) and reports samples per second per member and the
achieved GFLOP/s (6 x multiply-accumulates per sample: forward 2, backward 4; matmuls only;
the multiply-accumulates are the parameters less the biases, so this is the usual "6 x
parameters x samples"). The machine's own XLA matmul rate is measured in the same process, in
float32 and in bfloat16, before and after the runs, so the fraction is fair to a loaded
machine: each run's ``matmul_fraction`` is its rate over the measured matmul rate of its own
dtype (``--dtype float32,bfloat16`` times both); on a GPU whose peak is known the fraction of
that peak is reported too.

JAX and the engine's training code are imported inside the functions that time something:
``nsbi bench --help`` imports this module for its options.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

SCHEMA = "nsbi-bench-train/1"

# Dense float32 (non-tensor-core) peak GFLOP/s of common accelerators, by device_kind prefix.
DEVICE_PEAK_F32_GFLOPS: dict[str, float] = {
    "NVIDIA H200": 67_000.0,
    "NVIDIA H100 80GB HBM3": 67_000.0,
    "NVIDIA H100 PCIe": 51_000.0,
    "NVIDIA H100": 67_000.0,
    "NVIDIA A100": 19_500.0,
    "NVIDIA L4": 30_300.0,
    "NVIDIA A10G": 31_200.0,
    "Tesla V100": 15_700.0,
    "Tesla T4": 8_100.0,
}

MODELS: dict[str, tuple[int, int]] = {"7x1500": (7, 1500), "3x64": (3, 64)}


@dataclass(frozen=True)
class BenchPlan:
    """What to time. ``batch`` maps (model, members) to the per-member batch size."""

    models: tuple[str, ...] = ("7x1500", "3x64")
    members: tuple[int, ...] = (1, 8, 32)
    strategies: tuple[str, ...] = ("vmap", "packs")
    pack_size: int = 1
    timed_calls: int = 2
    dtypes: tuple[str, ...] = ("float32",)
    n_features: int = 4
    n_train: int = 65536
    matmul_sizes: tuple[int, ...] | None = (
        None  # None: (1024, 2048) on CPU, (4096, 8192) on accelerators
    )

    def batch(self, model: str, members: int, accelerator: bool) -> tuple[int, str | None]:
        if model == "3x64" or accelerator:
            return 4096 if model == "7x1500" else 1024, None
        # On a CPU a 7x1500 step costs ~0.33 TFLOP at batch 4096; keep M x batch at 8192 samples.
        batch = {1: 4096, 8: 1024}.get(members, max(64, 8192 // members))
        note = (
            None
            if members == 1
            else (
                f"batch reduced to {batch} per member on CPU to bound wall time "
                f"(M x batch = {members * batch} samples per step)"
            )
        )
        return batch, note

    def steps_per_call(self, model: str, accelerator: bool = False) -> int:
        """Steps per timed call: on a GPU enough that one call lasts well over the dispatch
        and the host round trip (7x1500: ~1-20 ms a step there; 3x64: microseconds)."""
        if accelerator:
            return 20 if model == "7x1500" else 500
        return 1 if model == "7x1500" else 50


def _block(tree: Any) -> None:
    import jax

    jax.tree.map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, tree)


def matmul_gflops(
    sizes: tuple[int, ...] | None = None, repeats: int = 3, dtype: str = "float32"
) -> dict[str, Any]:
    """Best XLA matmul rate over a few square sizes (GFLOP/s = 2 n^3 / s) in ``dtype``
    (float32 or bfloat16; random normal inputs, XLA's default precision)."""
    import jax
    import jax.numpy as jnp

    if sizes is None:
        sizes = (1024, 2048) if jax.default_backend() == "cpu" else (4096, 8192)
    dt = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    f = jax.jit(lambda a, b: a @ b)
    per_size = {}
    for n in sizes:
        key = jax.random.PRNGKey(n)
        a = jax.random.normal(key, (n, n), dtype=jnp.float32).astype(dt)
        b = jax.random.normal(jax.random.fold_in(key, 1), (n, n), dtype=jnp.float32).astype(dt)
        f(a, b).block_until_ready()
        best = np.inf
        for _ in range(repeats):
            t = time.perf_counter()
            f(a, b).block_until_ready()
            best = min(best, time.perf_counter() - t)
        per_size[str(n)] = 2.0 * n**3 / best / 1e9
    return {"gflops": max(per_size.values()), "per_size": per_size, "dtype": dtype}


def device_info() -> dict[str, Any]:
    import jax

    dev = jax.devices()[0]
    peak = None
    for prefix, value in DEVICE_PEAK_F32_GFLOPS.items():
        if str(dev.device_kind).startswith(prefix):
            peak = value
            break
    return {
        "backend": jax.default_backend(),
        "device_kind": str(dev.device_kind),
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "jax_version": jax.__version__,
        # jax.config declares its options as dynamic attributes, which type checkers cannot see
        "default_matmul_precision": str(jax.config.jax_default_matmul_precision),  # type: ignore[attr-defined]
        "peak_f32_gflops": peak,
    }


def _xla_flops(compiled: Any) -> float | None:
    try:
        cost = compiled.cost_analysis()
        if isinstance(cost, (list, tuple)):
            cost = cost[0]
        return float(cost["flops"]) if cost and "flops" in cost else None
    except Exception:
        return None


def time_training(
    model_name: str,
    members: int,
    strategy: str,
    pack_size: int,
    batch: int,
    steps_per_call: int,
    timed_calls: int,
    dtype: str = "float32",
    n_features: int = 4,
    n_train: int = 65536,
    seed: int = 0,
) -> dict[str, Any]:
    """Time the real training program for one configuration; every pack is actually run."""
    import jax
    import jax.numpy as jnp

    from sbi_engine.precision import enable_float64
    from sbi_engine.ratio.config import TrainConfig
    from sbi_engine.ratio.model import build_model, init_stacked, macs_per_sample, n_parameters
    from sbi_engine.ratio.steps import make_interval, make_optimizer

    enable_float64()  # as train_ensemble runs it
    layers, width = MODELS[model_name]
    k = members if strategy == "vmap" else min(pack_size, members)
    config = TrainConfig(
        hidden_layers=layers,
        width=width,
        members=members,
        batch_size=batch,
        max_steps=10_000,
        dtype=dtype,
    )
    model = build_model(layers, width, "silu", dtype)
    tx = make_optimizer(config)
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(n_train, n_features)).astype(np.float32))
    y = jnp.asarray((rng.random(n_train) < 0.5).astype(np.float32))
    packs = [min(k, members - s) for s in range(0, members, k)]
    states, programs = [], {}
    for i, size in enumerate(packs):
        keys = jax.random.split(jax.random.PRNGKey(seed + i), size)
        params = init_stacked(model, keys, n_features)
        opt = jax.vmap(tx.init)(params)
        w = jnp.ones((size, n_train), jnp.float32)
        args = [params, opt, jnp.asarray(0, jnp.int32), jnp.ones(size, bool), keys, x, y, w]
        if size not in programs:
            fn = make_interval(model, tx, batch, steps_per_call, donate=True)
            programs[size] = fn.lower(*args).compile()
        states.append(args)

    def run_all() -> None:
        for args in states:
            size = args[3].shape[0]
            p, o, loss = programs[size](*args)
            args[0], args[1] = p, o
            args[2] = args[2] + steps_per_call
            _block(loss)
        _block([a[0] for a in states])

    run_all()  # warm-up: first execution allocates
    t0 = time.perf_counter()
    for _ in range(timed_calls):
        run_all()
    seconds = time.perf_counter() - t0
    steps = timed_calls * steps_per_call
    samples_per_member = steps * batch
    macs = macs_per_sample(n_features, layers, width)
    gflops = 6.0 * macs * samples_per_member * members / seconds / 1e9
    xla = _xla_flops(programs[packs[0]])
    return {
        "model": model_name,
        "hidden_layers": layers,
        "width": width,
        "parameters": n_parameters(n_features, layers, width),
        "members": members,
        "strategy": strategy,
        "pack_size": k,
        "packs": len(packs),
        "batch_size": batch,
        "dtype": dtype,
        "steps_timed": steps,
        "seconds": seconds,
        "samples_per_s_per_member": samples_per_member / seconds,
        "gflops": gflops,
        "flops_per_step_model": 6.0 * macs * batch * packs[0],
        "flops_per_step_xla": xla,  # XLA's cost analysis counts the scanned step body once
    }


def run_bench(
    plan: BenchPlan | None = None, progress: bool = False, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run the whole plan and return the JSON-ready report."""
    from sbi_engine.precision import enable_float64

    enable_float64()  # as train_ensemble runs it
    plan = plan or BenchPlan()
    info = device_info()
    accelerator = info["backend"] != "cpu"
    t_start = time.perf_counter()
    mm_dtypes = ("float32", "bfloat16")
    mm_start = {d: matmul_gflops(plan.matmul_sizes, dtype=d) for d in mm_dtypes}
    # (model, members, strategy, dtype, alias)
    jobs: list[tuple[str, int, str, str, str | None]] = []
    for dtype in plan.dtypes:
        for model in plan.models:
            for members in plan.members:
                for strategy in plan.strategies:
                    if (
                        strategy == "packs"
                        and min(plan.pack_size, members) >= members
                        and "vmap" in plan.strategies
                    ):
                        # one pack holding every member is the vmap layout: time it once, label both
                        jobs.append((model, members, strategy, dtype, "same_as_vmap"))
                        continue
                    jobs.append((model, members, strategy, dtype, None))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="bench train", unit="config")
    runs: list[dict[str, Any]] = []
    for model, members, strategy, dtype, alias in jobs:
        batch, note = plan.batch(model, members, accelerator)
        if alias:
            src = next(
                r
                for r in runs
                if r["model"] == model
                and r["members"] == members
                and r["strategy"] == "vmap"
                and r["dtype"] == dtype
            )
            run = {
                **src,
                "strategy": strategy,
                "note": f"pack_size {plan.pack_size} >= members: identical to vmap",
            }
        else:
            run = time_training(
                model,
                members,
                strategy,
                plan.pack_size,
                batch,
                plan.steps_per_call(model, accelerator),
                plan.timed_calls,
                dtype,
                plan.n_features,
                plan.n_train,
            )
            if note:
                run["note"] = note
        runs.append(run)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(model=model, M=members, s=strategy, gflops=f"{run['gflops']:.0f}")
        if log:
            log(
                f"{model:>7} {dtype:<8} M={members:<3} {strategy:<5} k={run['pack_size']:<3} batch={run['batch_size']:<5} "
                f"{run['samples_per_s_per_member']:>12.0f} samples/s/member {run['gflops']:>8.1f} GFLOP/s"
            )
    if bar is not None:
        bar.close()
    mm_end = {d: matmul_gflops(plan.matmul_sizes, dtype=d) for d in mm_dtypes}
    rate = {d: max(mm_start[d]["gflops"], mm_end[d]["gflops"]) for d in mm_dtypes}
    matmul = rate["float32"]
    for run in runs:
        run["fraction_of_matmul"] = run["gflops"] / matmul  # against float32, whatever the dtype
        run["matmul_fraction"] = run["gflops"] / rate[run["dtype"]]  # against its own dtype
        run["matmul_fraction_fp32"] = run["gflops"] / rate["float32"]
        run["matmul_fraction_bf16"] = run["gflops"] / rate["bfloat16"]
        run["fraction_of_peak"] = (
            run["gflops"] / info["peak_f32_gflops"] if info["peak_f32_gflops"] else None
        )
    big = [r for r in runs if r["model"] == "7x1500"]
    best_big = max((r["fraction_of_matmul"] for r in big if r["dtype"] == "float32"), default=None)
    best: dict[str, dict[str, float]] = {}  # model -> dtype -> best matmul_fraction
    for r in runs:
        cell = best.setdefault(r["model"], {})
        cell[r["dtype"]] = max(cell.get(r["dtype"], 0.0), r["matmul_fraction"])
    best_per_member = {
        m: {
            d: max(
                r["samples_per_s_per_member"] for r in runs if r["model"] == m and r["dtype"] == d
            )
            for d in best[m]
        }
        for m in best
    }
    return {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "device": info,
        "matmul_gflops": matmul,
        "matmul_gflops_bf16": rate["bfloat16"],
        "matmul": {
            "start": mm_start["float32"],
            "end": mm_end["float32"],
            "dtype": "float32",
            "bfloat16": {"start": mm_start["bfloat16"], "end": mm_end["bfloat16"]},
            "note": "best of the rates measured before and after the runs, per dtype",
        },
        "matmul_fraction_of_peak": matmul / info["peak_f32_gflops"]
        if info["peak_f32_gflops"]
        else None,
        "flop_model": "6 x multiply-accumulates per sample and member (forward 2, backward 4), matmuls only",
        "plan": {
            "models": list(plan.models),
            "members": list(plan.members),
            "strategies": list(plan.strategies),
            "pack_size": plan.pack_size,
            "timed_calls": plan.timed_calls,
            "dtypes": list(plan.dtypes),
            "n_train": plan.n_train,
            "n_features": plan.n_features,
        },
        "runs": runs,
        "summary": {
            "best_7x1500_fraction_of_matmul": best_big,
            "7x1500_at_least_half_matmul": (best_big >= 0.5) if best_big is not None else None,
            # best achieved rate over the measured matmul rate of the same dtype, per model
            "matmul_fraction": best,
            "best_samples_per_s_per_member": best_per_member,
        },
        "wall_seconds": time.perf_counter() - t_start,
    }


def write_report(report: dict[str, Any], path: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(report, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- `nsbi bench train`


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


def _str_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Time ensemble training for the 7x1500 and 3x64 MLPs, M = 1, 8, 32, "
        "vmap and packs strategies; write JSON."
    )
    parser.add_argument("--json", metavar="FILE", help="write the report here (default: print it)")
    parser.add_argument(
        "--models", type=_str_list, default=("7x1500", "3x64"), help="comma-separated: 7x1500,3x64"
    )
    parser.add_argument(
        "--members", type=_int_list, default=(1, 8, 32), help="comma-separated ensemble sizes"
    )
    parser.add_argument(
        "--strategies",
        type=_str_list,
        default=("vmap", "packs"),
        help="comma-separated: vmap,packs",
    )
    parser.add_argument(
        "--pack-size", type=int, default=1, help="members per pack for the packs strategy"
    )
    parser.add_argument(
        "--timed-calls", type=int, default=2, help="timed calls per configuration (after warm-up)"
    )
    parser.add_argument(
        "--dtype",
        type=_str_list,
        default=("float32",),
        help="comma-separated compute dtypes of the networks to time: float32, bfloat16 "
        "(mixed precision: bfloat16 matmuls, float32 weights and loss; meant for GPUs)",
    )
    parser.add_argument(
        "--matmul-sizes",
        type=_int_list,
        default=None,
        help="square matmul sizes for the reference rate (default 1024,2048 on CPU, 4096,8192 on GPU)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        print(
            f"nsbi bench train: unknown model(s) {unknown}; choose from {sorted(MODELS)}",
            file=sys.stderr,
        )
        return 2
    bad_dtypes = [d for d in args.dtype if d not in ("float32", "bfloat16")]
    if bad_dtypes or not args.dtype:
        print(
            f"nsbi bench train: --dtype takes float32 and/or bfloat16, got {list(args.dtype)}",
            file=sys.stderr,
        )
        return 2
    bad = [s for s in args.strategies if s not in ("vmap", "packs")]
    if (
        bad
        or not args.members
        or min(args.members) < 1
        or args.pack_size < 1
        or args.timed_calls < 1
    ):
        print(
            "nsbi bench train: strategies must be vmap/packs, members, --pack-size and --timed-calls >= 1",
            file=sys.stderr,
        )
        return 2
    plan = BenchPlan(
        models=tuple(args.models),
        members=tuple(args.members),
        strategies=tuple(args.strategies),
        pack_size=args.pack_size,
        timed_calls=args.timed_calls,
        dtypes=tuple(args.dtype),
        matmul_sizes=tuple(args.matmul_sizes) if args.matmul_sizes else None,
    )
    report = run_bench(
        plan,
        progress=not args.no_progress,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    if args.json:
        write_report(report, args.json)
        s = report["summary"]
        print(
            f"wrote {args.json}: matmul {report['matmul_gflops']:.1f} GFLOP/s float32, "
            f"{report['matmul_gflops_bf16']:.1f} bfloat16; best matmul fraction per model and "
            f"dtype {s['matmul_fraction']}",
            file=sys.stderr,
        )
    else:
        print(json.dumps(report, indent=2, sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.train``: the same as ``nsbi bench train`` without building the other
    benchmarks' options (the GPU check runs it where the control plane's packages are absent)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train")
    add_arguments(parser)
    return int(run(parser.parse_args(argv)) or 0)


if __name__ == "__main__":
    sys.exit(main())
