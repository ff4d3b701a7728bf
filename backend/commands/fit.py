"""`nsbi fit WORKSPACE`: best fit, errors, pulls, impacts, scans, Asimov and toys, as a text
summary and (optionally) JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tqdm import tqdm

__all__ = ["add_arguments", "add_distributed_arguments", "run", "start_distributed"]


def add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
    """``--coordinator/--num-processes/--process-id/--distributed``: one fit over the devices of
    several processes (hosts) through ``jax.distributed`` (docs/benchmarks.md)."""

    def env_int(name: str) -> int | None:
        value = os.environ.get(name)
        return int(value) if value else None

    g = parser.add_argument_group(
        "several processes (jax.distributed)",
        "Start the same command once per process (host); the events are sharded over the "
        "devices of all processes (--devices defaults to all of them) and process 0 writes the "
        "results. Defaults come from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID.",
    )
    g.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        default=os.environ.get("JAX_COORDINATOR_ADDRESS"),
        help="address of process 0, which listens there",
    )
    g.add_argument(
        "--num-processes",
        type=int,
        metavar="N",
        default=env_int("JAX_NUM_PROCESSES"),
    )
    g.add_argument(
        "--process-id",
        type=int,
        metavar="I",
        default=env_int("JAX_PROCESS_ID"),
        help="this process's index, 0 .. N-1",
    )
    g.add_argument(
        "--distributed",
        action="store_true",
        help="join a run that JAX detects from the environment (Slurm's srun, Open MPI)",
    )


def start_distributed(args: argparse.Namespace):
    """Join the multi-process run the flags describe (before JAX touches a device); None when
    the flags ask for one process. Raises ValueError for incomplete flags."""
    coordinator, n, pid = args.coordinator, args.num_processes, args.process_id
    if not (coordinator or n is not None or pid is not None or args.distributed):
        return None
    if not args.distributed and None in (coordinator, n, pid):
        raise ValueError(
            "several processes need --coordinator HOST:PORT, --num-processes N and "
            "--process-id I together (or --distributed under srun / mpirun)"
        )
    if n is not None and pid is not None and not 0 <= pid < n:
        raise ValueError(f"--process-id {pid} is not in 0..{n - 1}")
    from sbi_engine.fit.sharding import initialize_distributed  # noqa: PLC0415

    return initialize_distributed(coordinator, n, pid)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workspace", help="workspace JSON file (see docs/workspace.md)")
    parser.add_argument("--json", metavar="FILE", help="write all results as JSON to FILE")
    parser.add_argument(
        "--backend",
        choices=("newton", "minuit"),
        default="newton",
        help="minimiser: JAX Newton on the exact Hessian (default) or iminuit MIGRAD+HESSE",
    )
    parser.add_argument(
        "--fix",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="hold a parameter fixed (repeatable)",
    )
    parser.add_argument(
        "--impacts",
        choices=("none", "covariance", "refit", "both"),
        default="covariance",
        help="impacts on the POIs (refit: one refit per NP and direction)",
    )
    parser.add_argument(
        "--impact-nps",
        default=None,
        metavar="A,B,...",
        help="only these nuisances for refit impacts (to fan the work out)",
    )
    parser.add_argument(
        "--scan",
        action="store_true",
        help="profile-likelihood scan of each POI (68%%/95%% intervals)",
    )
    parser.add_argument("--scan-points", type=int, default=21)
    parser.add_argument(
        "--asimov",
        action="store_true",
        help="also fit Asimov data at the initial values (expected)",
    )
    parser.add_argument(
        "--toys",
        type=int,
        default=0,
        metavar="N",
        help="toy study with N toys at the reference point",
    )
    parser.add_argument(
        "--upper-limit",
        action="store_true",
        help="CLs upper limit on the first POI with q~_mu (arXiv:1007.1727): observed and "
        "expected (+-1, +-2 sigma) limits, asymptotic; with --toys N from N toys per hypothesis "
        "and tested point instead of a toy study",
    )
    parser.add_argument(
        "--cl", type=float, default=0.95, help="confidence level of --upper-limit (default 0.95)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="events per chunk (default 16384 in memory, 8192 streamed)",
    )
    parser.add_argument(
        "--devices",
        type=int,
        default=None,
        metavar="N",
        help="shard the events over N local devices (GPUs; on CPU set "
        "XLA_FLAGS=--xla_force_host_platform_device_count=N); not with --stream",
    )
    parser.add_argument(
        "--mmap", action="store_true", help="memory-map .npy arrays instead of reading them"
    )
    add_distributed_arguments(parser)
    parser.add_argument(
        "--stream",
        action="store_true",
        help="stream the events from disk chunk by chunk (memory O(chunk), for workspaces "
        "larger than RAM): fit, covariance and refit impacts, scans; not --asimov/--toys",
    )


def format_limit(limit) -> str:
    """The text block of an upper limit: observed, then expected with its bands."""
    what = f"{limit.n_toys} toys per point" if limit.method == "toys" else "asymptotic"
    e = limit.expected

    def f(v) -> str:
        return "n/a" if v is None or v != v else f"{v:.4g}"

    lines = [
        f"{limit.cl:.0%} CL upper limit on {limit.poi} (CLs, q~_mu, {what}):",
        f"  observed  {f(limit.observed)}",
        f"  expected  {f(e.get(0))}   -1 sigma {f(e.get(-1))}  +1 sigma {f(e.get(1))}"
        f"   -2 sigma {f(e.get(-2))}  +2 sigma {f(e.get(2))}",
    ]
    warning = (limit.extra or {}).get("asymptotic_warning")
    if warning:
        lines.append(f"  WARNING: {warning}")
    return "\n".join(lines)


def _parse_fix(items: list[str]) -> dict[str, float]:
    out = {}
    for it in items:
        name, _, value = it.partition("=")
        if not value:
            raise SystemExit(f"nsbi fit: --fix needs NAME=VALUE, got {it!r}")
        out[name] = float(value)
    return out


class _PassBar:
    """A progress bar over the events of each streamed pass (one pass per Newton iteration)."""

    def __init__(self) -> None:
        from tqdm import tqdm  # noqa: PLC0415

        self._tqdm = tqdm
        self.bar: tqdm | None = None
        self.passes = 0

    def __call__(self, done: int, total: int) -> None:
        bar = self.bar
        if bar is None or bar.n >= bar.total:
            if bar is not None:
                bar.close()
            self.passes += 1
            bar = self.bar = self._tqdm(
                total=total,
                desc=f"event pass {self.passes}",
                unit="ev",
                unit_scale=True,
                leave=False,
                file=sys.stderr,
            )
        bar.update(done - bar.n)


def _model(ws, args: argparse.Namespace):
    """The in-memory Model, or a StreamingModel with a per-pass progress bar (``--stream``)."""
    from sbi_engine.fit import Model  # noqa: PLC0415
    from sbi_engine.fit.stream import StreamingModel  # noqa: PLC0415

    kwargs = {"chunk_size": args.chunk_size} if args.chunk_size else {}
    if args.stream:
        return StreamingModel(ws, progress=_PassBar(), **kwargs)
    return Model(ws, devices=args.devices, **kwargs)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm  # noqa: PLC0415

    from sbi_engine.fit import Workspace, WorkspaceError, fit  # noqa: PLC0415
    from sbi_engine.fit.impacts import breakdown, covariance_impacts, pulls, ranking, refit_impacts  # noqa: PLC0415
    from sbi_engine.fit.results import to_jsonable  # noqa: PLC0415
    from sbi_engine.fit.scan import profile_scan  # noqa: PLC0415
    from sbi_engine.fit.summary import format_summary  # noqa: PLC0415
    from sbi_engine.fit.toys import expected_fit, toy_study  # noqa: PLC0415

    if args.stream and (args.asimov or args.toys or args.upper_limit):
        print(
            "nsbi fit: --asimov, --toys and --upper-limit reweight or resample the events, which "
            "needs them in memory; "
            "drop --stream for those",
            file=sys.stderr,
        )
        return 2
    if args.stream and args.devices:
        print("nsbi fit: --devices shards in-memory events; drop --stream", file=sys.stderr)
        return 2
    try:
        dist = start_distributed(args)
    except ValueError as exc:
        print(f"nsbi fit: {exc}", file=sys.stderr)
        return 2
    if dist is not None:
        if args.stream:
            print(
                "nsbi fit: several processes shard in-memory events; drop --stream", file=sys.stderr
            )
            return 2
        if args.devices is None:
            args.devices = dist.global_devices
        if args.devices != dist.global_devices:  # a mesh must hold devices of every process
            print(
                f"nsbi fit: with several processes --devices must be all "
                f"{dist.global_devices} devices, got {args.devices}",
                file=sys.stderr,
            )
            return 2
    main = dist is None or dist.is_main  # only process 0 prints and writes
    try:
        ws = Workspace.load(args.workspace, mmap=args.mmap or args.stream)
    except WorkspaceError as exc:
        print(f"nsbi fit: {exc}", file=sys.stderr)
        return 2
    fixed = _parse_fix(args.fix)
    steps = ["compile + fit"]
    if args.impacts in ("refit", "both"):
        steps.append("refit impacts")
    if args.scan:
        steps.append("scans")
    if args.asimov:
        steps.append("Asimov")
    if args.toys and not args.upper_limit:
        steps.append("toys")
    if args.upper_limit:
        steps.append("upper limit")
    if not 0.0 < args.cl < 1.0:
        print(f"nsbi fit: --cl must be in (0, 1), got {args.cl}", file=sys.stderr)
        return 2
    out: dict = {"workspace": str(Path(args.workspace))}
    with tqdm(
        total=len(steps), desc="nsbi fit", unit="step", file=sys.stderr, disable=not main
    ) as bar:
        bar.set_postfix_str("compile + fit")
        try:
            model = _model(ws, args)
        except ValueError as exc:  # e.g. --devices N with fewer devices present
            print(f"nsbi fit: {exc}", file=sys.stderr)
            return 2
        try:
            res = fit(model, fixed=fixed or None, backend=args.backend)
        except KeyError as exc:
            print(f"nsbi fit: {exc}", file=sys.stderr)
            return 2
        bar.update()
        out["fit"] = res.to_dict()
        out["pulls"] = pulls(model, res)
        out["breakdown"] = breakdown(model, res)
        imps = []
        if args.impacts in ("covariance", "both"):
            cov = covariance_impacts(model, res)
            out["impacts_covariance"] = [i.to_dict() for i in cov]
            imps = cov
        if args.impacts in ("refit", "both"):
            subset = args.impact_nps.split(",") if args.impact_nps else None
            names = subset or list(model.nuisance_names)
            ref = []
            for name in tqdm(
                names,
                desc="refit impacts",
                unit="NP",
                leave=False,
                file=sys.stderr,
                disable=not main,
            ):
                ref += refit_impacts(model, res, [name])
            out["impacts_refit"] = [i.to_dict() for i in ref]
            imps = ref
            bar.update()
        out["ranking"] = [i.to_dict() for i in ranking(imps)]
        scans = []
        if args.scan:
            for poi in model.poi_names:
                scans.append(profile_scan(model, res, poi, n_points=args.scan_points))
            out["scans"] = [s.to_dict() for s in scans]
            bar.update()
        if args.asimov:
            out["asimov"] = expected_fit(model).to_dict()
            bar.update()
        if args.toys and not args.upper_limit:
            out["toys"] = toy_study(model, args.toys, args.seed)
            bar.update()
        limit = None
        if args.upper_limit:
            from sbi_engine.fit.limits import upper_limit  # noqa: PLC0415

            limit = upper_limit(model, cl=args.cl, toys=args.toys, seed=args.seed)
            out["upper_limit"] = limit.to_dict()
            bar.update()
    out["compile_s"] = model.clock.seconds
    if dist is not None:
        out["processes"] = dist.process_count
        out["devices"] = args.devices
    if not main:
        return 0 if res.converged else 1
    print(
        format_summary(res, model.poi_names, out["pulls"], ranking(imps), out["breakdown"], scans)
    )
    if limit is not None:
        print("\n" + format_limit(limit))
    if args.toys and not args.upper_limit:
        t = out["toys"]
        print(
            f"\nToys ({t['n_converged']}/{t['n_toys']} converged): pull mean {t['pull_mean']:+.3f}, "
            f"width {t['pull_width']:.3f}, 68% profile coverage {t['coverage_profile_68']:.3f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(to_jsonable(out), indent=2, sort_keys=True) + "\n")
    return 0 if res.converged else 1
