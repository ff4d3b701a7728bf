"""`nsbi bench`: benchmarks that write JSON (train, train-loop, fit, controlplane, launch).

The benchmarks are development tools, not part of the installed package: they live in the
top-level ``benchmarks`` package of the source checkout (``launch`` also needs the fake Compute
service from ``nsbi_testing``), which the wheel leaves out. This command finds the checkout as
the directory above the ``backend`` package -- true for the editable development install,
whatever the working directory -- and imports ``benchmarks.<name>`` from there. From a wheel
install it says so in one line and exits 2.

Each benchmark module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and imports
JAX, the database layer and the like only inside its functions, so building the parser for
``nsbi bench --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType

# subcommand -> (module in the checkout's benchmarks package, help)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "train": (
        "benchmarks.train",
        "Training throughput of ratio ensembles vs the machine's matmul rate.",
    ),
    "train-loop": (
        "benchmarks.train_loop",
        "Wall time of whole trainings, validation passes included (eval_budget_share).",
    ),
    "fit": ("benchmarks.fit", "Fit benchmarks (NLL, Hessian, minimisation) with JSON output."),
    "controlplane": (
        "benchmarks.controlplane",
        "Control-plane benchmarks (database, controller ticks).",
    ),
    "launch": ("benchmarks.launch", "Launcher benchmarks (start-up latency of job attempts)."),
}

NO_CHECKOUT = (
    "nsbi bench: the benchmarks live in the source checkout (benchmarks/ beside backend/), "
    "which this installation lacks; run them from a development install (pip install -e .)"
)


def checkout_root() -> Path | None:
    """The source checkout this ``backend`` was imported from, if it has the benchmarks."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "benchmarks" / "__init__.py").is_file() else None


def load_benchmark(module_name: str) -> ModuleType | None:
    """Import ``module_name`` from the checkout (None without one); the checkout goes first
    on ``sys.path`` so that its ``benchmarks`` and ``nsbi_testing`` are the ones imported."""
    root = checkout_root()
    if root is None:
        return None
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(module_name)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", metavar="BENCH")
    for name, (module_name, help_text) in BENCHMARKS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_bench_module=module_name)
        try:
            module = load_benchmark(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module_name.startswith(exc.name):
                raise
            module = None
        if module is None:  # run() explains; accept whatever options the benchmark would take
            p.set_defaults(_extra_ok=True)
            p.epilog = NO_CHECKOUT.removeprefix("nsbi bench: ").capitalize() + "."
        else:
            module.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    module_name = getattr(args, "_bench_module", None)
    if module_name is None:
        print(
            "nsbi bench: choose a benchmark: train, fit, controlplane or launch (see nsbi bench --help)",
            file=sys.stderr,
        )
        return 2
    try:
        module = load_benchmark(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            print(
                f"nsbi bench {args.bench_command}: not available ({module_name} is not in this checkout)",
                file=sys.stderr,
            )
            return 2
        raise
    if module is None:
        print(NO_CHECKOUT, file=sys.stderr)
        return 2
    return int(module.run(args) or 0)
