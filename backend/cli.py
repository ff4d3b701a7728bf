"""The `nsbi` command line.

Each command group lives in its own module under `backend.commands`. `main` imports only the
module of the command being run (`nsbi --help` imports none), so the help stays fast and a
missing optional dependency only breaks its own command. A command module exposes
`add_arguments(parser)` and `run(args) -> int`, and imports heavy things (JAX, the database
layer, cloud SDKs) inside `run`, never at module level: `build_parser()` with every command
loaded must not import JAX.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Collection, Sequence

# name -> (module, one-line help). Order is the order shown by `nsbi --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("backend.commands.up", "Start the controller and the dashboard (what `make run` does)."),
    "demo": (
        "backend.commands.demo",
        "Headless demo: simulate, train a small ensemble, fit mu on Asimov data.",
    ),
    "controller": (
        "backend.commands.controller",
        "Run the controller: the reconcile loop that launches and tracks jobs.",
    ),
    "worker": (
        "backend.commands.worker",
        "Run one job attempt from its job URI (used by launchers).",
    ),
    "db": ("backend.commands.db", "Database maintenance (`nsbi db upgrade`)."),
    "campaign": (
        "backend.commands.campaign",
        "Create, launch, cancel, retry and inspect campaigns.",
    ),
    "jobs": ("backend.commands.jobs", "List jobs and their states."),
    "cost": ("backend.commands.cost", "GPU-hours and cost per campaign; estimates before launch."),
    "analysis": (
        "backend.commands.analysis",
        "Validate and run an analysis file: train, fit, report, reusing earlier results.",
    ),
    "closure": (
        "backend.commands.closure",
        "Learned ratios against the exact likelihood on benchmark problems; coverage.",
    ),
    "fit": (
        "backend.commands.fit",
        "Fit a workspace: best fit, errors, pulls, impacts, scans, toys.",
    ),
    "problems": (
        "backend.commands.problems",
        "Benchmark problems with exact likelihoods: list, generate samples + analysis file.",
    ),
    "export": (
        "backend.commands.export",
        "Export an ensemble for other tools (`nsbi export onnx ENSEMBLE OUT.onnx`).",
    ),
    "bench": (
        "backend.commands.bench",
        "Benchmarks with JSON output (train, fit, controlplane, launch).",
    ),
}


def build_parser(load: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The `nsbi` parser with the options of the commands in ``load`` (default: all of them);
    the others are listed but take no options."""
    parser = argparse.ArgumentParser(
        prog="nsbi",
        description="nsbi-workbench: neural simulation-based inference at scale.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.set_defaults(_module=module_name)
        if load is not None and name not in load:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            cmd.set_defaults(_missing=True)
            continue
        module.add_arguments(cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # the top-level parser has no options but -h, so the first word is the command
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser([command] if command in COMMANDS else [])
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "_extra_ok", False):  # a command may take options it cannot list
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    if getattr(args, "_missing", False):
        print(f"nsbi {args.command}: not available in this build", file=sys.stderr)
        return 2
    module = importlib.import_module(args._module)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
