"""`nsbi export onnx ENSEMBLE OUT.onnx`: an ensemble file (`.npz`) as an ONNX model, for
analysis code that runs networks with ONNX Runtime (C++/ROOT, Python). See
`sbi_engine.ratio.onnx_export` for the model's inputs, outputs and metadata."""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["add_arguments", "run"]

_AGGREGATES = ("mean_ratio", "median_score", "mean_log_ratio")  # = sbi_engine.ratio.AGGREGATES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="format", metavar="FORMAT")
    onnx = sub.add_parser(
        "onnx",
        help="ONNX model: raw features in, per-member and aggregated log ratios out",
        description="Write ENSEMBLE as an ONNX model. Input `features` float32 [N, F] (raw "
        "features in the ensemble's order; periodic encoding and standardisation are in the "
        "graph); outputs `member_log_ratios` [N, M], `log_ratio` [N] (the aggregate), "
        "`log_ratio_spread` [N]; feature names, aggregate and the ensemble metadata in the "
        "model's metadata_props.",
    )
    onnx.add_argument("ensemble", help="ensemble file written by Ensemble.save (.npz)")
    onnx.add_argument("out", help="ONNX file to write (e.g. ratio.onnx)")
    onnx.add_argument(
        "--aggregate",
        choices=_AGGREGATES,
        default="mean_ratio",
        help="how `log_ratio` combines the members (default mean_ratio: log of the mean ratio)",
    )
    onnx.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    onnx.add_argument(
        "--verify",
        type=int,
        default=0,
        metavar="N",
        help="run the written file with onnxruntime on N synthetic events and compare with "
        "the ensemble; exit 1 if an output differs by more than --tolerance",
    )
    onnx.add_argument("--tolerance", type=float, default=1e-5, help="for --verify (default 1e-5)")


def _fail(message: str) -> int:
    print(f"nsbi export onnx: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    if getattr(args, "format", None) != "onnx":
        print("nsbi export: give a format: `nsbi export onnx ENSEMBLE OUT.onnx`", file=sys.stderr)
        return 2
    if not os.path.isfile(args.ensemble):
        return _fail(f"{args.ensemble}: no such ensemble file")
    parent = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(parent):
        return _fail(f"{args.out}: folder {parent} does not exist")
    if os.path.isdir(args.out):
        return _fail(f"{args.out} is a folder; give the path of the .onnx file to write")
    if args.opset < 13:
        return _fail(f"--opset {args.opset}: need 13 or later")

    from sbi_engine.ratio import Ensemble
    from sbi_engine.ratio.onnx_export import OnnxUnavailable, save_onnx, synthetic_events, verify

    try:
        ensemble = Ensemble.load(args.ensemble)
    except (ValueError, KeyError) as exc:
        return _fail(str(exc))
    try:
        files = save_onnx(ensemble, args.out, aggregate=args.aggregate, opset=args.opset)
    except OnnxUnavailable as exc:
        return _fail(str(exc))
    except (ValueError, OSError) as exc:
        return _fail(str(exc))
    size = sum(os.path.getsize(f) for f in files)
    print(
        f"wrote {', '.join(files)} ({size / 1e6:.1f} MB): {ensemble!r}, aggregate {args.aggregate}"
    )
    print(
        f"  input  features float32 [N, {len(ensemble.feature_names)}] = {list(ensemble.feature_names)}"
    )
    print(
        f"  outputs member_log_ratios [N, {ensemble.members}], log_ratio [N], log_ratio_spread [N]"
    )
    if args.verify > 0:
        try:
            diffs = verify(ensemble, args.out, synthetic_events(ensemble, args.verify))
        except OnnxUnavailable as exc:
            return _fail(str(exc))
        worst = max(diffs.values())
        print(
            f"  verify on {args.verify} events, max |onnxruntime - Ensemble|: {json.dumps(diffs)}"
        )
        if not worst <= args.tolerance:
            print(
                f"nsbi export onnx: outputs differ by {worst:.3g} > tolerance {args.tolerance:g}",
                file=sys.stderr,
            )
            return 1
    return 0
