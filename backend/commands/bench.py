"""`nsbi bench`: benchmarks that write JSON.

Subcommands: ``train`` (ratio-ensemble training throughput, ``sbi_engine.bench.train_bench``),
``fit`` (``sbi_engine.bench.fit_bench``), ``controlplane`` (``backend.bench_controlplane``) and
``launch`` (``backend.bench_launch``). Each implementation is imported only when its
subcommand runs, so a missing one breaks only itself.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

# subcommand -> (module implementing run(args) -> int, help)
_DELEGATES: dict[str, tuple[str, str]] = {
    "fit": ("sbi_engine.bench.fit_bench", "Fit benchmarks (NLL, Hessian, minimisation) with JSON output."),
    "controlplane": ("backend.bench_controlplane", "Control-plane benchmarks (database, controller ticks)."),
    "launch": ("backend.bench_launch", "Launcher benchmarks (start-up latency of job attempts)."),
}


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _str_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", metavar="BENCH")
    train = sub.add_parser("train", help="Training throughput of ratio ensembles vs the machine's matmul rate.",
                           description="Time ensemble training for the 7x1500 and 3x64 MLPs, M = 1, 8, 32, "
                                       "vmap and packs strategies; write JSON.")
    train.add_argument("--json", metavar="FILE", help="write the report here (default: print it)")
    train.add_argument("--models", type=_str_list, default=("7x1500", "3x64"), help="comma-separated: 7x1500,3x64")
    train.add_argument("--members", type=_int_list, default=(1, 8, 32), help="comma-separated ensemble sizes")
    train.add_argument("--strategies", type=_str_list, default=("vmap", "packs"), help="comma-separated: vmap,packs")
    train.add_argument("--pack-size", type=int, default=1, help="members per pack for the packs strategy")
    train.add_argument("--timed-calls", type=int, default=2, help="timed calls per configuration (after warm-up)")
    train.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                       help="matmul dtype of the networks (bfloat16 is meant for GPUs)")
    train.add_argument("--matmul-sizes", type=_int_list, default=None,
                       help="square matmul sizes for the reference rate (default 1024,2048 on CPU, 4096,8192 on GPU)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(_bench_run=_run_train)
    for name, (module, help_text) in _DELEGATES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_bench_run=None, _bench_module=module)
        _add_delegate_arguments(p, module)


def _add_delegate_arguments(parser: argparse.ArgumentParser, module_name: str) -> None:
    """Let a teammate's module add its own options; tolerate extra args if it is missing."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            parser.add_argument("--json", metavar="FILE", help="write the report here")
            parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            return
        raise
    if hasattr(module, "add_arguments"):
        module.add_arguments(parser)
    else:
        parser.add_argument("--json", metavar="FILE", help="write the report here")
        parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def _run_train(args: argparse.Namespace) -> int:
    from sbi_engine.bench.train_bench import MODELS, BenchPlan, run_bench, write_report

    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        print(f"nsbi bench train: unknown model(s) {unknown}; choose from {sorted(MODELS)}", file=sys.stderr)
        return 2
    bad = [s for s in args.strategies if s not in ("vmap", "packs")]
    if bad or not args.members or min(args.members) < 1 or args.pack_size < 1 or args.timed_calls < 1:
        print("nsbi bench train: strategies must be vmap/packs, members, --pack-size and --timed-calls >= 1",
              file=sys.stderr)
        return 2
    plan = BenchPlan(models=tuple(args.models), members=tuple(args.members), strategies=tuple(args.strategies),
                     pack_size=args.pack_size, timed_calls=args.timed_calls, dtype=args.dtype,
                     matmul_sizes=tuple(args.matmul_sizes) if args.matmul_sizes else None)
    report = run_bench(plan, progress=not args.no_progress,
                       log=lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        write_report(report, args.json)
        s = report["summary"]
        print(f"wrote {args.json}: matmul {report['matmul_gflops']:.1f} GFLOP/s, best 7x1500 fraction "
              f"{s['best_7x1500_fraction_of_matmul']}", file=sys.stderr)
    else:
        import json

        print(json.dumps(report, indent=2, sort_keys=True))
    return 0


def run(args: argparse.Namespace) -> int:
    runner: Any = getattr(args, "_bench_run", None)
    if runner is not None:
        return int(runner(args) or 0)
    module_name = getattr(args, "_bench_module", None)
    if module_name is None:
        print("nsbi bench: choose a benchmark: train, fit, controlplane or launch (see nsbi bench --help)",
              file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            print(f"nsbi bench {args.bench_command}: not available yet ({module_name} is not in this build)",
                  file=sys.stderr)
            return 2
        raise
    return int(module.run(args) or 0)
