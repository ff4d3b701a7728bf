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
weights) and poi {init, bounds} (one POI, called mu) or pois {name: {init, bounds}} (several
POIs named in the coefficients; the first is the primary POI that mu_true, limits, expected
results and scans refer to), optional norm_factors {name: {init, bounds}} (free normalisation
factors), plus per kind: nps (impacts), poi_values (scan),
toy_seeds / toy_mu_true (toys).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import learned_uncertainty as lu
from .learned_ratios import SHAPE_RESOLUTION, TaskRatios, task_ratios
from .noise_shrinkage import Shrinkage, shape_directions, shrink
from .pipeline import COEFFICIENTS
from .precision import enable_float64
from .sample import Sample
from .sample_specs import load_sample_spec, sample_parts


class FitJobError(ValueError):
    """A fit-stage job spec that cannot be turned into a workspace (names the key)."""


def poi_specs(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{name: {init, bounds}} of the job's parameters of interest, the primary one first:
    ``params.pois`` when given, else the single ``params.poi`` called mu."""
    given = params.get("pois")
    if given:
        if not isinstance(given, Mapping):
            raise FitJobError("params.pois: expected {name: {init, bounds}}")
        return _free_specs(list(given.items()))
    return _free_specs([("mu", params.get("poi") or {})])


def norm_factor_specs(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{name: {init, bounds}} of free normalisation factors (``params.norm_factors``): free
    parameters named in the coefficients that are not parameters of interest."""
    given = params.get("norm_factors") or {}
    if not isinstance(given, Mapping):
        raise FitJobError("params.norm_factors: expected {name: {init, bounds}}")
    return _free_specs(list(given.items()))


def _free_specs(items: Sequence[tuple[Any, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, p in items:
        p = p or {}
        out[str(name)] = {
            "init": float(p.get("init", 1.0)),
            "bounds": tuple(float(b) for b in p.get("bounds", (0.0, 20.0))),
        }
    return out


def _generated_at(params: Mapping[str, Any], mu: float) -> dict[str, float]:
    """Where Asimov data are made: the primary POI at ``mu``, the others at their init."""
    pois = {**poi_specs(params), **norm_factor_specs(params)}
    first = next(iter(pois))
    return {n: (float(mu) if n == first else float(p["init"])) for n, p in pois.items()}


def _coefficients(params: Mapping[str, Any]) -> dict[str, str]:
    given = dict(params.get("coefficients") or {})
    out = {}
    for proc in params["processes"]:
        expr = given.get(proc, COEFFICIENTS.get(proc))
        if expr is None:
            raise FitJobError(
                f"params.coefficients: process {proc!r} has no coefficient function of mu"
            )
        out[proc] = expr
    return out


@dataclass(frozen=True, eq=False)
class SimulatedAsimov:
    """Every process's evaluation events stacked, with their simulation weights and process,
    so that Asimov weights at any mu are one coefficient per block (for closure checks only)."""

    events: Sample
    blocks: dict[str, slice]
    coefficients: dict[str, str]
    pois: dict[str, float] = field(default_factory=lambda: {"mu": 1.0})  # primary first

    def weights(self, mu: float) -> np.ndarray:
        """sum_c m_c(mu) w_i on each process's block: the simulation's own expectation at mu
        (the primary POI; any other POI at its value in ``pois``)."""
        from .fit import parse_expression

        names = list(self.pois)
        values = {**self.pois, names[0]: float(mu)}
        w = np.asarray(self.events.weights, dtype=np.float64).copy()
        for proc, block in self.blocks.items():
            expr = parse_expression(self.coefficients[proc], names, where=f"process {proc!r}")
            w[block] *= float(expr(values, np))
        return w

    def at(self, mu: float) -> Sample:
        return Sample(
            self.events.features,
            self.weights(mu),
            self.events.names,
            f"simulated Asimov at mu={mu:g}",
        )


def simulated_asimov(params: Mapping[str, Any], coefficients: Mapping[str, str]) -> SimulatedAsimov:
    """Asimov events straight from the simulation, for closure checks only.

    Each process's evaluation events weighted by its coefficient at mu: their sum is the true
    expectation whatever the networks learned (weights may be negative; a weighted fit takes
    them). The fit's own Asimov data come from the model (`build_learned_fit`); fitting those
    returns mu_true whatever the ratios are, so only this set can reveal bad ratios.
    """
    parts, blocks, pos = [], {}, 0
    for proc, spec in params["processes"].items():
        s = load_sample_spec(spec, role="eval")
        parts.append(s)
        blocks[proc] = slice(pos, pos + len(s))
        pos += len(s)
    events = Sample(
        np.concatenate([p.features for p in parts]),
        np.concatenate([p.weights for p in parts]),
        parts[0].names,
        "simulated Asimov events (evaluation parts of every process)",
    )
    pois = {n: p["init"] for n, p in {**poi_specs(params), **norm_factor_specs(params)}.items()}
    return SimulatedAsimov(events, blocks, dict(coefficients), pois)


def _is_demo(spec: Mapping[str, Any]) -> bool:
    return isinstance(spec, Mapping) and "demo" in spec


def _demo_norm_effects(params: Mapping[str, Any], name: str) -> dict[str, dict[str, Any]]:
    """Exact yield ratios of a demo nuisance (only for campaigns whose samples are demo specs)."""
    from .demo import DemoProblem

    specs = params["processes"]
    if not all(_is_demo(s) for s in specs.values()):
        raise FitJobError(
            f"params.nuisances: {name!r} has no systematic samples and the samples are not demo ones"
        )
    n_np = max(int(s["demo"].get("n_nuisances", 3)) for s in specs.values())
    problem = DemoProblem(n_nuisances=max(n_np, 5))
    if name not in problem.nuisance_names:
        raise FitJobError(
            f"params.nuisances: unknown nuisance {name!r} (demo nuisances: {list(problem.nuisance_names)})"
        )
    nk = problem.nuisance(name)
    return {
        c: {"norm": (problem.yield_ratio(c, name, 1.0), problem.yield_ratio(c, name, -1.0))}
        for c in nk.norm_processes
        if c in specs
    }


def _combine_norm(old: tuple[float, float] | None, new: tuple[float, float]) -> tuple[float, float]:
    """Yield ratios of two effects of one NP on one process multiply (shape-sample and explicit)."""
    if old is None:
        return new
    return (old[0] * new[0], old[1] * new[1])


def add_norm_only_nuisances(
    params: Mapping[str, Any], processes: Mapping[str, Any], nuisances: dict[str, dict[str, Any]]
) -> None:
    """Add the explicit up/down yield factors (``norm_systematics``) and the named demo
    nuisances (``nuisances``) to ``nuisances`` {name: {process: effect}} in place."""
    for item in params.get("norm_systematics") or []:
        name = item["name"]
        for proc, (up, down) in item["effects"].items():
            if proc not in processes:
                raise FitJobError(
                    f"norm_systematics.{name}.effects: unknown process {proc!r} "
                    f"(processes: {sorted(processes)})"
                )
            eff = nuisances.setdefault(name, {}).setdefault(proc, {})
            eff["norm"] = _combine_norm(eff.get("norm"), (float(up), float(down)))
    for name in params.get("nuisances", []):
        if name not in nuisances:
            nuisances[name] = _demo_norm_effects(params, name)


@dataclass(frozen=True, eq=False)
class ShapeDecision:
    """What the fit does with one learned shape effect, and why (written into the report)."""

    nuisance: str
    process: str
    signal: (
        float  # spread of the learned log shape ratio (up and down, RMS) on the process's events
    )
    noise: float  # estimated log-ratio error of its ensembles (member spread)
    action: str  # "kept" | "dropped shape (yield kept)" | "kept (noise unknown)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "nuisance": self.nuisance,
            "process": self.process,
            "signal": self.signal,
            "noise": self.noise,
            "ratio": self.signal / self.noise if self.noise > 0 else None,
            "action": self.action,
        }


@dataclass(frozen=True, eq=False)
class LearnedFit:
    """A fit workspace from learned ratios plus what its error components and checks need.

    ``ratios`` holds every task's member log ratios on the workspace rows; ``process_task``
    and ``shape_tasks`` say which task feeds which process ratio or shape effect; ``data_rows``
    are the rows carrying data weight (all rows for Asimov data); ``norm_rows`` the rows of the
    normalisation sample (evaluation events of the reference).
    """

    workspace: Any
    ratios: dict[str, TaskRatios]
    process_task: dict[str, str]
    shape_tasks: dict[tuple[str, str], tuple[str, str]]
    shape_decisions: tuple[ShapeDecision, ...]
    data_rows: np.ndarray
    norm_rows: np.ndarray
    provenance: dict[str, Any] = field(default_factory=dict)
    shrinkage: tuple[Shrinkage, ...] = ()
    unshrunk: dict[str, TaskRatios] = field(default_factory=dict)  # tasks before the shrinkage
    # task -> (numerator, denominator) sample specs: where its evaluation events come from
    task_samples: dict[str, tuple[Mapping[str, Any], Mapping[str, Any]]] = field(
        default_factory=dict
    )

    def evaluation_samples(self, task: str) -> tuple[Sample, Sample]:
        """The task's numerator and denominator evaluation events (read again from the specs)."""
        num, den = self.task_samples[task]
        return load_sample_spec(num, role="eval"), load_sample_spec(den, role="eval")


def _find_task(tasks: Mapping[str, Any], name: str, proc: str, direction: str) -> str | None:
    return next(
        (
            t
            for t, d in tasks.items()
            if d["kind"] == "systematic"
            and d["systematic"] == name
            and d["process"] == proc
            and d["direction"] == direction
        ),
        None,
    )


def _require_ensembles(
    ensembles: Mapping[str, Sequence[str]], task: str | None, what: str
) -> tuple[str, Sequence[str]]:
    """The task (known to exist) and its ensemble paths."""
    if task is None or task not in ensembles:
        raise FitJobError(f"{what}: no trained ensemble")
    return task, ensembles[task]


def _shape_decision(
    name: str,
    proc: str,
    up: TaskRatios,
    down: TaskRatios,
    rows: np.ndarray,
    weights: np.ndarray,
    resolve: bool,
) -> ShapeDecision:
    """Keep a shape effect only if its learned spread stands out of the networks' noise floor.

    A systematic whose true shape effect is below the noise floor would otherwise read network
    noise as a shape effect and constrain its own nuisance (see docs/validation.md).
    """
    signal = float(np.sqrt(0.5 * (up.signal(rows, weights) ** 2 + down.signal(rows, weights) ** 2)))
    noises = [r.noise(rows) for r in (up, down)]
    noise = float(np.sqrt(np.mean(np.square(noises)))) if all(np.isfinite(noises)) else float("nan")
    if not np.isfinite(noise):
        action = "kept (noise unknown)"
    elif resolve and signal < SHAPE_RESOLUTION * noise:
        action = "dropped shape (yield kept)"
    else:
        action = "kept"
    return ShapeDecision(name, proc, signal, noise, action)


def _model_asimov_weights(ws, mu: float) -> np.ndarray:
    """Asimov weights v_i s_i(mu) / V on the normalisation sample: the model's expected events,
    whatever the signs of the coefficients. A row with a negative total intensity is an error."""
    from .fit.model import event_intensity, model_for

    model = model_for(ws)
    v = np.asarray(ws.data.norm_weights, dtype=np.float64)
    # v_i s_i / V directly: a model without shape effects has no normalisation term of its own
    w = (
        v
        * event_intensity(
            model, model.theta({model.poi_names[0]: mu}, base=model.reference_theta())
        )
        / float(np.sum(v))
    )
    bad = np.flatnonzero(w < 0)
    if bad.size:
        raise FitJobError(
            f"Asimov data at mu={mu}: {bad.size} row(s) of the normalisation sample have a negative "
            f"expected count (first rows {bad[:5].tolist()}: {np.round(w[bad[:5]], 6).tolist()}); the "
            "model's total intensity must be positive (negative-weight reference simulation cannot "
            "serve as Asimov events: give observed data or a positive-weight reference sample)"
        )
    return w


def build_learned_fit(
    spec: Mapping[str, Any], ensembles: Mapping[str, Sequence[str]], data: Sample | None = None
) -> LearnedFit:
    """The fit workspace of a campaign's fit-stage job, with the member ratios kept.

    Every event the networks see here is an evaluation event (``load_sample_spec(..., role="eval")``):
    the normalisation sample is the reference's evaluation part, ratios are normalised on each
    denominator's evaluation part. Observed data are the data rows (weight 1) followed by the
    normalisation rows (weight 0, ``norm_weights`` their simulation weights). Asimov data are the
    model's expectation at mu_true on the normalisation rows (weights v_i s_i(mu_true) / V), so
    negative coefficients never make negative weights. Yields and systematic yield ratios use the
    whole samples (no network involved). ``data`` overrides the spec's data with other
    (observed-like, possibly weighted) events, e.g. the simulated Asimov set of the closure check.
    """
    from .fit import Workspace

    enable_float64()
    params = spec["params"]
    ref = params["reference"]
    coefficients = _coefficients(params)
    options = dict(params.get("options") or {})
    asimov = data is None and params.get("data", "asimov") == "asimov"
    specs = params["processes"]
    parts = {p: sample_parts(s) for p, s in specs.items()}  # one read: the eval part and the yield
    evals = {p: pt.eval for p, pt in parts.items()}
    totals = {
        p: float(pt.train.weights.sum()) for p, pt in parts.items()
    }  # each part carries the whole yield
    norm = evals[ref]
    if asimov:
        x = np.asarray(norm.features)
        weights = np.zeros(len(norm))
        data_rows = np.arange(len(norm))
    else:
        data = data if data is not None else load_sample_spec(params["data"])
        if tuple(norm.names) != tuple(data.names):
            raise FitJobError(
                f"params.processes.{ref}: the reference sample's features {list(norm.names)} differ "
                f"from the data's {list(data.names)}"
            )
        x = np.concatenate([data.features, norm.features])
        weights = np.concatenate([np.asarray(data.weights, dtype=np.float64), np.zeros(len(norm))])
        data_rows = np.arange(len(data))
    n_data = 0 if asimov else len(data_rows)
    norm_rows = np.arange(n_data, n_data + len(norm))
    norm_weights = np.zeros(len(x))
    norm_weights[norm_rows] = np.asarray(norm.weights, dtype=np.float64)

    tasks = params.get("tasks", {})
    by_process = {t["process"]: name for name, t in tasks.items() if t["kind"] == "process"}
    ratios: dict[str, TaskRatios] = {}
    process_task: dict[str, str] = {}
    task_samples: dict[str, tuple[Mapping[str, Any], Mapping[str, Any]]] = {}
    processes = {}
    yields = params.get("yields") or {}
    for proc in specs:
        if proc == ref:
            ratio = np.ones(len(x))
        else:
            task, paths = _require_ensembles(
                ensembles, by_process.get(proc), f"process {proc!r} (ratio task against {ref!r})"
            )
            ratios[task] = task_ratios(task, paths, x, norm.features, norm.weights)
            process_task[proc] = task
            task_samples[task] = (specs[proc], specs[ref])
            ratio = np.exp(ratios[task].nominal)
        nu = float(yields[proc]) if proc in yields else totals[proc]
        processes[proc] = {"yield": nu, "coefficient": coefficients[proc], "ratio": ratio}

    resolve = bool(options.get("resolve_shapes", True))
    nuisances: dict[str, dict[str, Any]] = {}
    shape_tasks: dict[tuple[str, str], tuple[str, str]] = {}
    decisions = []
    v = norm_weights[norm_rows]
    for syst in params.get("systematics", []):
        name, proc = syst["name"], syst["process"]
        pair: list[str] = []
        for direction in ("up", "down"):
            task, paths = _require_ensembles(
                ensembles,
                _find_task(tasks, name, proc, direction),
                f"systematic {name!r} ({direction}) on {proc!r}",
            )
            ratios[task] = task_ratios(task, paths, x, evals[proc].features, evals[proc].weights)
            task_samples[task] = (syst[direction], specs[proc])
            pair.append(task)
        up, down = ratios[pair[0]], ratios[pair[1]]
        on_proc = (
            v * np.asarray(processes[proc]["ratio"])[norm_rows]
        )  # reference rows reweighted to the process
        decision = _shape_decision(name, proc, up, down, norm_rows, on_proc, resolve)
        decisions.append(decision)
        effect: dict[str, Any] = {
            "norm": tuple(
                float(load_sample_spec(syst[d]).weights.sum() / totals[proc])
                for d in ("up", "down")
            )
        }
        if decision.action != "dropped shape (yield kept)":
            effect["shape"] = (np.exp(up.nominal), np.exp(down.nominal))
            shape_tasks[(name, proc)] = (pair[0], pair[1])
        nuisances.setdefault(name, {})[proc] = effect
    add_norm_only_nuisances(params, processes, nuisances)
    shrinkage: tuple[Shrinkage, ...] = ()
    unshrunk = {task: ratios[task] for task in process_task.values()}
    if bool(options.get("shrink_noise", False)):  # opt-in: see docs/validation.md
        # Asimov data are not known before the workspace: the reference events stand in for them
        data_w = norm_weights[norm_rows] if asimov else weights[data_rows]
        shrinkage = _shrink_process_ratios(
            ratios, process_task, processes, shape_tasks, data_rows, data_w, norm_rows, v, len(x)
        )

    mu_true = float(params.get("mu_true", 1.0))
    generated = _generated_at(params, mu_true)
    ws = Workspace.from_arrays(
        pois=poi_specs(params),
        norm_factors=norm_factor_specs(params) or None,
        processes=processes,
        weights=weights,
        norm_weights=norm_weights,
        nuisances=[{"name": n, "effects": e} for n, e in nuisances.items()],
        data_kind="asimov" if asimov else "observed",
        generated_at=generated if asimov else None,
        metadata={
            "campaign": spec.get("campaign"),
            "job": spec.get("name"),
            "ensembles": {k: list(v) for k, v in ensembles.items()},
        },
    )
    if asimov:
        ws = ws.with_data(_model_asimov_weights(ws, mu_true), kind="asimov", generated_at=generated)
    provenance = {
        "evaluation_events": {p: len(s) for p, s in evals.items()},
        "normalisation_sample": {"process": ref, "events": len(norm)},
        "data": "asimov (model expectation on the normalisation sample)" if asimov else "observed",
    }
    return LearnedFit(
        ws,
        ratios,
        process_task,
        shape_tasks,
        tuple(decisions),
        data_rows,
        norm_rows,
        provenance,
        shrinkage,
        unshrunk if shrinkage else {},
        task_samples,
    )


def _shrink_process_ratios(
    ratios: dict[str, TaskRatios],
    process_task: Mapping[str, str],
    processes: dict[str, dict[str, Any]],
    shape_tasks: Mapping[tuple[str, str], tuple[str, str]],
    data_rows: np.ndarray,
    data_weights: np.ndarray,
    norm_rows: np.ndarray,
    norm_weights: np.ndarray,
    n_rows: int,
) -> tuple[Shrinkage, ...]:
    """Shrink the network noise out of every process ratio (`sbi_engine.noise_shrinkage`), in
    place: ``ratios`` and the processes' ratio arrays become the shrunk ones."""
    directions = shape_directions(
        [ratios[u].nominal - ratios[d].nominal for u, d in shape_tasks.values()], n_rows
    )
    out = []
    for proc, task in sorted(process_task.items()):
        ratios[task], info = shrink(
            ratios[task], directions, data_rows, data_weights, norm_rows, norm_weights
        )
        processes[proc]["ratio"] = np.exp(ratios[task].nominal)
        out.append(info)
    return tuple(out)


def build_workspace(spec: Mapping[str, Any], ensembles: Mapping[str, Sequence[str]]):
    """The fit workspace of a fit-stage job (see `build_learned_fit`)."""
    return build_learned_fit(spec, ensembles).workspace


def _profile_errors(ws, result, poi: str | None = None) -> dict[str, Any]:
    """The asymmetric errors of a POI (default the primary one): its 68 % and 95 %
    profile-likelihood intervals by root finding (`sbi_engine.fit.intervals`). A failure here
    is recorded, not raised: the fit itself stands."""
    from .fit.intervals import profile_intervals

    poi = poi or ws.poi_names[0]
    try:
        ivs = profile_intervals(ws, result, poi)
    except Exception as exc:  # noqa: BLE001 - the Hesse result is still worth reporting
        return {"profile": {"error": f"{type(exc).__name__}: {exc}"}}
    p68 = ivs["68"]
    return {
        "mu_err_lo": p68.err_lo,
        "mu_err_hi": p68.err_hi,
        "profile": {k: v.to_dict() for k, v in ivs.items()},
    }


def several_pois(ws, result, intervals: bool = False, contours: bool = False) -> dict[str, Any]:
    """For a workspace with more than one POI: ``pois`` {name: value, error, and with
    ``intervals`` err_lo / err_hi / profile}, ``correlations`` {a: {b: rho}} (Hesse) and, with
    ``contours``, the 2-D profile-likelihood contours (68 %, 95 %) of the first two POIs
    (`sbi_engine.fit.contours`: points by root finding along rays, other parameters
    profiled). Empty for one POI. Failures are recorded, not raised."""
    from .fit.contours import correlation, profile_contours

    names = list(ws.poi_names)
    if len(names) < 2:
        return {}
    pois: dict[str, Any] = {}
    for n in names:
        pois[n] = {"value": result.values[n], "error": result.errors[n]}
        if intervals:
            pe = _profile_errors(ws, result, n)
            pois[n].update({"err_lo": pe.get("mu_err_lo"), "err_hi": pe.get("mu_err_hi"), **pe})
            pois[n].pop("mu_err_lo", None)
            pois[n].pop("mu_err_hi", None)
    out: dict[str, Any] = {
        "pois": pois,
        "correlations": {a: {b: correlation(result, a, b) for b in names} for a in names},
    }
    if contours:
        try:
            out["contours"] = {
                k: c.to_dict() for k, c in profile_contours(ws, result, names[:2]).items()
            }
        except Exception as exc:  # noqa: BLE001 - the fit itself stands
            out["contours"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def _fit_summary(ws, result, intervals: bool = False) -> dict[str, Any]:
    """The nominal fit's summary; with ``intervals`` also the primary POI's asymmetric
    (profile) errors: ``mu_err_lo`` (<= 0) / ``mu_err_hi`` and ``profile`` {"68", "95"}: lo,
    hi, flags, fits. ``mu_hat`` / ``sigma`` are the primary POI's (called mu unless the job
    names several POIs: ``poi`` says which); with several POIs also `several_pois` (every
    POI's errors, correlations and, with ``intervals``, the 2-D contours)."""
    from .fit import impacts as imp
    from .fit.results import to_jsonable

    poi = ws.poi_names[0]
    return to_jsonable(
        {
            "poi": poi,
            "mu_hat": result.values[poi],
            "sigma": result.errors[poi],
            **(_profile_errors(ws, result) if intervals else {}),
            **several_pois(ws, result, intervals=intervals, contours=intervals),
            "converged": result.converged,
            "fit": result.to_dict(),
            "pulls": imp.pulls(ws, result),
            "impacts_covariance": [
                i.to_dict() for i in imp.ranking(imp.covariance_impacts(ws, result))
            ],
            "breakdown": imp.breakdown(ws, result),
        }
    )


def _failed(exc: Exception) -> dict[str, Any]:
    return {"error": f"{type(exc).__name__}: {exc}"}


def limits_result(ws, settings: Mapping[str, Any]) -> dict[str, Any]:
    """``options.limits`` of a fit job: the CLs upper limit on mu at ``cl`` (q~_mu; observed
    and expected -2..+2 sigma, `sbi_engine.fit.limits.upper_limit`, asymptotic or with
    ``toys`` pseudo-experiments per hypothesis and point) and the discovery test q_0 / Z_0 /
    p_0 (`discovery`), both on the workspace's data. A failure is recorded, not raised."""
    from .fit.limits import discovery, upper_limit

    cl = float(settings.get("cl", 0.95))
    method = str(settings.get("method", "asymptotic"))
    n_toys = int(settings.get("toys") or 0) if method == "toys" else 0
    if method not in ("asymptotic", "toys") or (method == "toys" and n_toys <= 0):
        raise FitJobError(
            f"params.options.limits: method {method!r} with toys={n_toys} "
            "(asymptotic, or toys with toys > 0)"
        )
    try:
        ul = upper_limit(
            ws, cl=cl, poi=ws.poi_names[0], toys=n_toys, seed=int(settings.get("seed") or 0)
        )
        out: dict[str, Any] = ul.to_dict()
        out["band"] = list(ul.band)
    except Exception as exc:  # noqa: BLE001 - the fit itself stands
        out = {"cl": cl, "method": method, **_failed(exc)}
    try:
        out["discovery"] = discovery(ws, poi=ws.poi_names[0]).to_dict()
    except Exception as exc:  # noqa: BLE001
        out["discovery"] = _failed(exc)
    return out


def asymptotic_limit_check(limits: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``asymptotic_limit`` check of an asymptotic CLs limit: it fails where the expected
    event count turns inside the limit range (`sbi_engine.fit.limits.yield_turning_points`), as
    interference makes it do, since the asymptotic formulas then misplace the limit. None for
    toy limits and failed ones (nothing asymptotic to judge)."""
    extra = limits.get("extra") or {}
    if limits.get("method") != "asymptotic" or "yield_turning_points" not in extra:
        return None
    turns = list(extra["yield_turning_points"])
    return lu.check(
        "asymptotic_limit",
        float(len(turns)),
        0.0,
        not turns,
        extra.get("asymptotic_warning")
        or "the expected event count is monotonic in the POI up to the largest limit: the "
        "asymptotic formulas apply",
    )


def expected_workspace(ws, mu: float):
    """The workspace with the model's Asimov data at ``mu`` (nuisances at nominal): the data
    rows get weight 0, the normalisation rows v_i s_i(mu) / V. Nothing of the data is read."""
    gen = dict(ws.data.generated_at or {})
    gen = {p.name: float(gen.get(p.name, p.init)) for p in ws.free_parameters}
    gen[ws.poi_names[0]] = float(mu)
    return ws.with_data(_model_asimov_weights(ws, mu), kind="asimov", generated_at=gen)


def expected_result(ws, settings: Mapping[str, Any]) -> dict[str, Any]:
    """``options.expected`` of a fit job: the expected (blinded) result -- the fit of the
    model's Asimov data at ``mu`` (default 1) with mu-hat, Hesse error, asymmetric profile
    errors (68 % / 95 % by root finding) and the expected discovery significance."""
    from .fit import fit
    from .fit.limits import discovery
    from .fit.results import to_jsonable

    mu = float(settings.get("mu", 1.0))
    ews = expected_workspace(ws, mu)
    result = fit(ews)
    out: dict[str, Any] = {
        "mu": mu,
        "data": f"asimov at mu={mu:g} (model expectation, nuisances at nominal)",
        "mu_hat": result.values[ews.poi_names[0]],
        "sigma": result.errors.get(ews.poi_names[0]),
        **_profile_errors(ews, result),
        "converged": result.converged,
        "at_bound": list(result.at_bound),
        "parameters": result.to_dict(),
    }
    try:
        out["discovery"] = discovery(ews, poi=ews.poi_names[0]).to_dict()
    except Exception as exc:  # noqa: BLE001
        out["discovery"] = _failed(exc)
    return to_jsonable(out)


def bootstrapped(lf: LearnedFit) -> bool | None:
    """Whether every ratio the fit uses comes from bootstrap members (None if unknown)."""
    flags = [r.bootstrapped for r in lf.ratios.values()]
    return None if any(f is None for f in flags) or not flags else all(flags)


def learned_result(
    spec: Mapping[str, Any], ensembles: Mapping[str, Sequence[str]], lf: LearnedFit, result: Any
) -> dict[str, Any]:
    """The learned model's error components, its checks and the shape decisions of a fit job.

    ``params.options.uncertainty``: {include: [nn, sim] (what enters the total; default both),
    nn_variants, sim_variants, closure (default true), calibration_effect (default true: refit
    with each ratio recalibrated, at most 32 tasks; a number N: at most N; false: none;
    `sbi_engine.calibration_effect`)}.
    """
    opts = dict((spec["params"].get("options") or {}).get("uncertainty") or {})
    include = tuple(opts.get("include", ("nn", "sim")))
    unknown = set(include) - {"nn", "sim"}
    if unknown:
        raise FitJobError(
            f"params.options.uncertainty.include: unknown component(s) {sorted(unknown)} (nn, sim)"
        )
    comps = lu.components(
        lf,
        result,
        poi=lf.workspace.poi_names[0],
        n_nn=int(opts.get("nn_variants", lu.DEFAULT_NN_VARIANTS)),
        n_sim=int(opts.get("sim_variants", lu.DEFAULT_SIM_VARIANTS)),
        include=include,
        bootstrap=bootstrapped(lf),
    )
    checks = lu.fit_checks(result, comps) + lu.ratio_checks(lf)
    measure = opts.get("calibration_effect", True)
    if measure is not False and measure != 0:
        from .calibration_effect import MAX_TASKS, calibration_effect_checks

        cap = MAX_TASKS if measure is True else int(measure)
        checks += calibration_effect_checks(lf, result, ensembles, lf.evaluation_samples, cap)
    if bool(opts.get("closure", True)):
        params = spec["params"]
        sim = simulated_asimov(params, _coefficients(params))
        # the check judges the networks, before the noise shrinkage (which pulls a ratio that
        # learned nothing towards a counting experiment, and that closes on Asimov data)
        raw = {**spec, "params": {**params, "options": {**(params.get("options") or {})}}}
        raw["params"]["options"]["shrink_noise"] = False
        checks.append(
            lu.closure_check(
                sim,
                lambda data: build_learned_fit(raw, ensembles, data=data),
                float(params.get("mu_true", 1.0)),
                comps.sim,
                poi=lf.workspace.poi_names[0],
            )
        )
    return {
        "uncertainty": comps.to_dict(),
        "sigma_total": comps.total,
        "checks": checks,
        "shape_decisions": [d.to_dict() for d in lf.shape_decisions],
        "noise_shrinkage": [s.to_dict() for s in lf.shrinkage],
        "provenance": lf.provenance,
    }


def run_fit_job(spec: Mapping[str, Any], ensembles: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Run one fit-stage job ("fit", "impacts", "scan" or "toys"); return JSON-safe results.

    Every kind first fits the nominal model (cheap next to the training, and it makes each
    job self-contained); the compiled functions are reused by the refits, scan points and toys.
    A "fit" job adds mu's asymmetric errors from the profile likelihood (``mu_err_lo``,
    ``mu_err_hi``, ``profile``: 68 % and 95 % intervals by root finding), and where its
    ``options`` ask: ``limits`` (CLs upper limit and discovery significance on the data,
    `limits_result`) and ``expected`` (the fit of the model's Asimov data, `expected_result`).
    """
    from .fit import fit
    from .fit import impacts as imp
    from .fit.results import to_jsonable
    from .fit.scan import profile_scan
    from .fit.toys import toy_study

    enable_float64()
    kind = spec.get("kind", "fit")
    params = spec["params"]
    lf = build_learned_fit(spec, ensembles)
    ws = lf.workspace
    result = fit(ws)
    out: dict[str, Any] = {
        "kind": kind,
        "mu_true": params.get("mu_true", 1.0),
        **_fit_summary(ws, result, intervals=kind == "fit"),
    }
    if kind == "fit":
        out.update(learned_result(spec, ensembles, lf, result))
        options = dict(params.get("options") or {})
        if options.get("limits"):
            out["limits"] = limits_result(ws, options["limits"])
            limit_check = asymptotic_limit_check(out["limits"])
            if limit_check is not None:
                out["checks"].append(limit_check)
        if options.get("expected"):
            out["expected"] = expected_result(ws, options["expected"])
    elif kind == "impacts":
        nps = list(params.get("nps") or ws.nuisance_names)
        out["impacts_refit"] = [i.to_dict() for i in imp.refit_impacts(ws, result, nps)]
    elif kind == "scan":
        values = np.asarray(params.get("poi_values") or [], dtype=float)
        out["scan"] = profile_scan(
            ws, result, ws.poi_names[0], values=values if values.size else None
        ).to_dict()
    elif kind == "toys":
        seeds = list(params.get("toy_seeds") or [0])
        out["toys"] = toy_study(
            ws,
            n_toys=len(seeds),
            seed=int(seeds[0]),
            params={ws.poi_names[0]: float(params.get("toy_mu_true", params.get("mu_true", 1.0)))},
        )
    else:
        raise FitJobError(f"kind: unknown fit-stage job kind {kind!r} (fit, impacts, scan, toys)")
    return to_jsonable(out)
