"""Fit-stage jobs of a campaign (fit, impacts, scan, toys) from trained ratio ensembles.

Why here: the control plane's worker hands over a job spec (plain JSON) and local paths of
the ensembles its training jobs produced; everything that turns those into a workspace and
a result is science, so it lives in the engine and runs the same in a notebook.

Spec shape (what `backend.campaigns.expand` writes under "params"):
processes {name: sample spec}, reference, tasks {task: {kind, process, systematic,
direction}}, systematics [{name, process, up, down}], nuisances [names], coefficients
{process: expression} (default: the off-shell mixture for S, SBI, B), data ("asimov" or an
observed sample spec), mu_true, options, optional norm_systematics [{name, effects: {process:
[up, down]}}] (explicit yield factors), yields {process: nu} (default: the sample's sum of
weights) and poi {init, bounds}, plus per kind: nps (impacts), poi_values (scan),
toy_seeds / toy_mu_true (toys).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .data import Sample, load_sample_spec
from .pipeline import COEFFICIENTS

ASIMOV_SEED_OFFSET = 100_003  # fresh simulation for Asimov events, away from training seeds
NORM_SEED_OFFSET = 200_003  # fresh reference simulation: the normalisation sample of observed-data fits


class FitJobError(ValueError):
    """A fit-stage job spec that cannot be turned into a workspace (names the key)."""


def _is_demo(spec: Mapping[str, Any]) -> bool:
    return isinstance(spec, Mapping) and "demo" in spec


def fresh_sample_spec(spec: Mapping[str, Any], offset: int = ASIMOV_SEED_OFFSET) -> dict[str, Any]:
    """The same sample definition with new random draws (demo specs only)."""
    if not _is_demo(spec):
        return dict(spec)
    demo = dict(spec["demo"])
    demo["seed"] = int(demo.get("seed", 0)) + offset
    return {"demo": demo}


def ensemble_log_ratio(paths: Sequence[str], x: np.ndarray) -> np.ndarray:
    """log of the member-weighted mean ratio over several ensemble files (packs of one task)."""
    from .ratio import Ensemble

    if not paths:
        raise FitJobError("no ensemble files for a ratio task")
    total, members = None, 0
    for path in paths:
        ens = Ensemble.load(path)
        log_r, _ = ens.log_ratio(x)
        m = int(ens.metadata.get("members", 1)) if hasattr(ens, "metadata") else 1
        term = m * np.exp(log_r)
        total = term if total is None else total + term
        members += m
    return np.log(total / members)


def normalised_ratio(paths: Sequence[str], x: np.ndarray, denominator: Sample) -> np.ndarray:
    """r-hat(x) divided by its weighted mean over the denominator sample, so E_den[r-hat] = 1.

    A density ratio integrates to one against its denominator; a finite ensemble only does so
    approximately, and the extended likelihood turns that miss into a bias of the POI (the
    per-event term and the expected yield would disagree). The correction is one number per
    ratio, measured on the simulation the ratio was trained against.
    """
    w = denominator.weights
    norm = float(np.sum(w * np.exp(ensemble_log_ratio(paths, denominator.features))) / np.sum(w))
    return np.exp(ensemble_log_ratio(paths, x)) / norm


def _coefficients(params: Mapping[str, Any]) -> dict[str, str]:
    given = dict(params.get("coefficients") or {})
    out = {}
    for proc in params["processes"]:
        expr = given.get(proc, COEFFICIENTS.get(proc))
        if expr is None:
            raise FitJobError(f"params.coefficients: process {proc!r} has no coefficient function of mu")
        out[proc] = expr
    return out


def asimov_data(params: Mapping[str, Any], coefficients: Mapping[str, str]) -> Sample:
    """Weighted Asimov events at mu_true from each process's (fresh) simulation."""
    from .fit import parse_expression

    mu = float(params.get("mu_true", 1.0))
    parts = []
    for proc, spec in params["processes"].items():
        c = float(parse_expression(coefficients[proc], ["mu"], where=f"process {proc!r}")({"mu": mu}, np))
        if abs(c) < 1e-12:
            continue
        s = load_sample_spec(fresh_sample_spec(spec))
        parts.append(Sample(s.features, s.weights * c, s.names, f"asimov[{proc}]"))
    return Sample(np.concatenate([p.features for p in parts]), np.concatenate([p.weights for p in parts]),
                  parts[0].names, f"Asimov at mu={mu}")


def _demo_norm_effects(params: Mapping[str, Any], name: str) -> dict[str, dict[str, Any]]:
    """Exact yield ratios of a demo nuisance (only for campaigns whose samples are demo specs)."""
    from .demo import DemoProblem

    specs = params["processes"]
    if not all(_is_demo(s) for s in specs.values()):
        raise FitJobError(f"params.nuisances: {name!r} has no systematic samples and the samples are not demo ones")
    n_np = max(int(s["demo"].get("n_nuisances", 3)) for s in specs.values())
    problem = DemoProblem(n_nuisances=max(n_np, 5))
    if name not in problem.nuisance_names:
        raise FitJobError(f"params.nuisances: unknown nuisance {name!r} (demo nuisances: {list(problem.nuisance_names)})")
    nk = problem.nuisance(name)
    return {c: {"norm": (problem.yield_ratio(c, name, 1.0), problem.yield_ratio(c, name, -1.0))}
            for c in nk.norm_processes if c in specs}


def _combine_norm(old: tuple[float, float] | None, new: tuple[float, float]) -> tuple[float, float]:
    """Yield ratios of two effects of one NP on one process multiply (shape-sample and explicit)."""
    if old is None:
        return new
    return (old[0] * new[0], old[1] * new[1])


def add_norm_only_nuisances(params: Mapping[str, Any], processes: Mapping[str, Any],
                            nuisances: dict[str, dict[str, Any]]) -> None:
    """Add the explicit up/down yield factors (``norm_systematics``) and the named demo
    nuisances (``nuisances``) to ``nuisances`` {name: {process: effect}} in place."""
    for item in params.get("norm_systematics") or []:
        name = item["name"]
        for proc, (up, down) in item["effects"].items():
            if proc not in processes:
                raise FitJobError(f"norm_systematics.{name}.effects: unknown process {proc!r} "
                                  f"(processes: {sorted(processes)})")
            eff = nuisances.setdefault(name, {}).setdefault(proc, {})
            eff["norm"] = _combine_norm(eff.get("norm"), (float(up), float(down)))
    for name in params.get("nuisances", []):
        if name not in nuisances:
            nuisances[name] = _demo_norm_effects(params, name)


def build_workspace(spec: Mapping[str, Any], ensembles: Mapping[str, Sequence[str]]):
    """The fit workspace of a campaign's fit-stage job.

    `ensembles` maps ratio-task names to local ensemble files. Processes get r_c = p_c/p_ref
    from their task (r_ref = 1); each systematic gets per-event shape ratios from its up/down
    tasks and yield ratios from the up/down sample weights against the nominal sample.

    Shape normalisation (n_c(alpha), see docs/workspace.md): Asimov data serve as their own
    normalisation sample (``generated_at`` = mu_true); for observed data a fresh simulation of
    the reference process is appended as normalisation-only rows (weight 0, ``norm_weights``
    its simulation weights), so the ratios and shape ratios are evaluated on it too.
    """
    from .fit import Workspace

    params = spec["params"]
    ref = params["reference"]
    coefficients = _coefficients(params)
    asimov = params.get("data", "asimov") == "asimov"
    data = asimov_data(params, coefficients) if asimov else load_sample_spec(params["data"])
    weights = np.asarray(data.weights, dtype=np.float64)
    norm_weights = None
    if not asimov:
        norm = load_sample_spec(fresh_sample_spec(params["processes"][ref], NORM_SEED_OFFSET))
        if tuple(norm.names) != tuple(data.names):
            raise FitJobError(f"params.processes.{ref}: the reference sample's features {list(norm.names)} differ "
                              f"from the data's {list(data.names)}")
        data = Sample(np.concatenate([data.features, norm.features]), np.concatenate([weights, np.zeros(len(norm))]),
                      data.names, f"{data.source} + normalisation sample of {ref}")
        norm_weights = np.concatenate([np.zeros(len(weights)), np.asarray(norm.weights, dtype=np.float64)])
        weights = np.asarray(data.weights, dtype=np.float64)
    x = data.features
    tasks = params.get("tasks", {})
    by_process = {t["process"]: name for name, t in tasks.items() if t["kind"] == "process"}
    nominal = {p: load_sample_spec(s) for p, s in params["processes"].items()}

    processes = {}
    for proc in params["processes"]:
        if proc == ref:
            ratio = np.ones(len(x))
        else:
            task = by_process.get(proc)
            if task is None or task not in ensembles:
                raise FitJobError(f"process {proc!r}: no trained ensemble for its ratio task against {ref!r}")
            ratio = normalised_ratio(ensembles[task], x, nominal[ref])
        yields = params.get("yields") or {}
        nu = float(yields[proc]) if proc in yields else float(nominal[proc].weights.sum())
        processes[proc] = {"yield": nu, "coefficient": coefficients[proc], "ratio": ratio}

    nuisances: dict[str, dict[str, Any]] = {}
    for syst in params.get("systematics", []):
        name, proc = syst["name"], syst["process"]
        effect: dict[str, Any] = {}
        arrays, norms = [], []
        for direction in ("up", "down"):
            task = next((t for t, d in tasks.items() if d["kind"] == "systematic" and d["systematic"] == name
                         and d["process"] == proc and d["direction"] == direction), None)
            if task is None or task not in ensembles:
                raise FitJobError(f"systematic {name!r} ({direction}) on {proc!r}: no trained ensemble")
            arrays.append(normalised_ratio(ensembles[task], x, nominal[proc]))
            norms.append(float(load_sample_spec(syst[direction]).weights.sum() / nominal[proc].weights.sum()))
        effect["shape"] = tuple(arrays)
        effect["norm"] = tuple(norms)
        nuisances.setdefault(name, {})[proc] = effect
    add_norm_only_nuisances(params, processes, nuisances)

    poi = params.get("poi") or {}
    return Workspace.from_arrays(
        pois={"mu": {"init": float(poi.get("init", 1.0)), "bounds": tuple(poi.get("bounds", (0.0, 20.0)))}},
        processes=processes,
        weights=weights,
        norm_weights=norm_weights,
        nuisances=[{"name": n, "effects": e} for n, e in nuisances.items()],
        data_kind="asimov" if asimov else "observed",
        generated_at={"mu": float(params.get("mu_true", 1.0))} if asimov else None,
        metadata={"campaign": spec.get("campaign"), "job": spec.get("name"), "ensembles": {k: list(v) for k, v in ensembles.items()}},
    )


def _fit_summary(ws, result) -> dict[str, Any]:
    from .fit import impacts as imp
    from .fit.results import to_jsonable

    return to_jsonable({
        "mu_hat": result.values["mu"],
        "sigma": result.errors["mu"],
        "converged": result.converged,
        "fit": result.to_dict(),
        "pulls": imp.pulls(ws, result),
        "impacts_covariance": [i.to_dict() for i in imp.ranking(imp.covariance_impacts(ws, result))],
        "breakdown": imp.breakdown(ws, result),
    })


def run_fit_job(spec: Mapping[str, Any], ensembles: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Run one fit-stage job ("fit", "impacts", "scan" or "toys"); return JSON-safe results.

    Every kind first fits the nominal model (cheap next to the training, and it makes each
    job self-contained); the compiled functions are reused by the refits, scan points and toys.
    """
    from .fit import fit
    from .fit import impacts as imp
    from .fit.results import to_jsonable
    from .fit.scan import profile_scan
    from .fit.toys import toy_study

    kind = spec.get("kind", "fit")
    params = spec["params"]
    ws = build_workspace(spec, ensembles)
    result = fit(ws)
    out: dict[str, Any] = {"kind": kind, "mu_true": params.get("mu_true", 1.0), **_fit_summary(ws, result)}
    if kind == "impacts":
        nps = list(params.get("nps") or ws.nuisance_names)
        out["impacts_refit"] = [i.to_dict() for i in imp.refit_impacts(ws, result, nps)]
    elif kind == "scan":
        values = np.asarray(params.get("poi_values") or [], dtype=float)
        out["scan"] = profile_scan(ws, result, "mu", values=values if values.size else None).to_dict()
    elif kind == "toys":
        seeds = list(params.get("toy_seeds") or [0])
        out["toys"] = toy_study(ws, n_toys=len(seeds), seed=int(seeds[0]),
                                params={"mu": float(params.get("toy_mu_true", params.get("mu_true", 1.0)))})
    elif kind != "fit":
        raise FitJobError(f"kind: unknown fit-stage job kind {kind!r} (fit, impacts, scan, toys)")
    return to_jsonable(out)
