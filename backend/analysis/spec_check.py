"""The checks of an analysis file and its translation into a resolved model.

`check(data, ...)` runs the whole-file model (`spec_models.AnalysisFile`: every key's shape,
type and range, each problem at its key path; the caller turns paths into line numbers), then
the rules that link keys, as code, on the values the model accepted: sample references and
files (`spec_samples`), coefficient expressions, processes named by systematics and the
reference, task names and features (`spec_training`), values inside poi.bounds, stages that
need the fit. It returns every problem and the resolved model: sample specs with absolute
paths and the file defaults merged in, processes with coefficients, shape and normalisation
systematics, training settings per ratio task, data, what to compute, backend and report
settings. Nothing here reads sample contents (see `spec_data`) or imports JAX.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from backend import campaigns
from backend.analysis import spec_models
from backend.analysis.spec_checker import DEFAULT_POI, Checker, Resolved
from backend.analysis.spec_samples import (
    check_reweighted_splits,
    check_sample,
    feature_names,
    sample_ref,
)
from backend.analysis.spec_training import check_training
from backend.analysis.spec_yaml import PathKey
from backend.campaign_model import coefficient_problem
from sbi_engine.config_model import kind, validate

POI = spec_models.POI
TOP_KEYS = spec_models.TOP_KEYS
REPORT_KEYS = spec_models.REPORT_KEYS


# --------------------------------------------------------------------------- blocks


def _coefficient(
    ck: Checker,
    path: PathKey,
    value: Any,
    bounds: tuple[float, float] | None | Mapping[str, tuple[float, float] | None],
) -> str | None:
    params = bounds if isinstance(bounds, Mapping) else {POI: bounds}
    text, problem = coefficient_problem(value, params)
    if problem is not None:
        ck.add(path, problem.replace("(inside the POI bounds)", "(inside poi.bounds)"))
    return text


def _poi(ck: Checker, res: Resolved, raw: Any) -> tuple[float, float] | None:
    if not ck.ok(("poi",)):
        return None
    p = spec_models.Poi.model_validate(raw)
    lo, hi = p.bounds
    if not lo < hi:
        ck.add(("poi", "bounds"), f"expected [low, high] with low < high, got {raw['bounds']!r}")
        return None
    if not lo <= p.init <= hi:
        ck.add(("poi", "init"), f"{p.init:g} is outside poi.bounds {[lo, hi]}")
    res.poi = {"init": p.init, "bounds": [lo, hi]}
    return lo, hi


def _free_block(ck: Checker, key: str, raw: Any) -> dict[str, dict[str, Any]]:
    """``pois`` / ``norm_factors``: {name: {init, bounds}} with ordered bounds holding init."""
    out: dict[str, dict[str, Any]] = {}
    if not ck.ok((key,)) or not isinstance(raw, Mapping):
        return out
    for name, item in raw.items():
        p = spec_models.Poi.model_validate(item or {})
        lo, hi = p.bounds
        if not lo < hi:
            ck.add((key, name, "bounds"), f"expected [low, high] with low < high, got {[lo, hi]}")
            continue
        if not lo <= p.init <= hi:
            ck.add((key, name, "init"), f"{p.init:g} is outside {key}.{name}.bounds {[lo, hi]}")
        out[str(name)] = {"init": p.init, "bounds": [lo, hi]}
    return out


def _systematics(
    ck: Checker,
    res: Resolved,
    raw: Any,
    defaults: dict[str, Any],
    named_bad: set[str],
    declared: list[str],
) -> list[tuple[str, str]]:
    """Resolve the systematics into `res`; return every declared (shape systematic, process)."""
    shapes: list[tuple[str, str]] = []
    if not isinstance(raw, Mapping):
        return shapes
    procs = declared or None

    def known(path: PathKey, proc: str) -> bool:
        if procs is not None and proc not in procs:
            ck.add(path, f"unknown process {proc!r}; processes: {', '.join(procs)}")
            return False
        return True

    for name, s in raw.items():
        where: PathKey = ("systematics", name)
        if not isinstance(s, Mapping):
            continue
        if ck.ok(where) and not s:
            ck.add(
                where,
                "give 'shape' (up/down samples per process) and/or 'norm' (up/down yield factors)",
            )
        shape = s.get("shape")
        for proc, pair in shape.items() if isinstance(shape, Mapping) else ():
            pw = (*where, "shape", proc)
            if not known(pw, proc):
                continue
            shapes.append((name, proc))
            if not isinstance(pair, Mapping):
                continue
            specs = {
                d: sample_ref(ck, res, (*pw, d), pair[d], defaults, named_bad)
                for d in ("up", "down")
                if d in pair
            }
            if all(specs.get(d) is not None for d in ("up", "down")):
                res.shape_systematics.append(
                    {"name": name, "process": proc, "up": specs["up"], "down": specs["down"]}
                )
        norm, nw = s.get("norm"), (*where, "norm")
        effects: dict[str, list[float]] = {}
        if isinstance(norm, list):  # one [up, down] pair for every process
            if ck.ok(nw) and procs:
                effects = {p: [float(x) for x in norm] for p in procs if p in res.processes}
        elif isinstance(norm, Mapping):
            for proc, value in norm.items():
                if known((*nw, proc), proc) and ck.ok((*nw, proc)) and proc in res.processes:
                    effects[proc] = [float(x) for x in value]
        if effects:
            res.norm_systematics.append({"name": name, "effects": effects})
    return shapes


def _data(
    ck: Checker,
    res: Resolved,
    raw: Any,
    defaults: dict[str, Any],
    named_bad: set[str],
    bounds: tuple[float, float] | None,
) -> None:
    if not isinstance(raw, Mapping):
        return
    if "asimov" in raw:
        where = ("data", "asimov", POI)
        mu = raw["asimov"].get(POI) if isinstance(raw["asimov"], Mapping) else None
        if mu is not None and ck.ok(where):
            if bounds is not None and not bounds[0] <= mu <= bounds[1]:
                ck.add(where, f"{mu:g} must be >= 0 and inside poi.bounds")
            res.mu_true = float(mu)
        res.data = "asimov"
    elif "observed" in raw:
        spec = sample_ref(ck, res, ("data", "observed"), raw["observed"], defaults, named_bad)
        if spec is not None:
            res.data = spec


def _compute(ck: Checker, res: Resolved, raw: Any, bounds: tuple[float, float] | None) -> None:
    if not isinstance(raw, Mapping):
        return
    for stage in spec_models.STAGES:
        where = ("compute", stage)
        if stage not in raw or not ck.ok(where):
            continue
        value = raw[stage]
        if isinstance(value, bool):
            res.compute[stage] = {"enabled": value}
            continue
        out: dict[str, Any] = {"enabled": True, **value}
        mu = value.get("mu_true")
        if mu is not None and bounds is not None and not bounds[0] <= mu <= bounds[1]:
            ck.add((*where, "mu_true"), f"{mu:g} must be >= 0 and inside poi.bounds")
        for i, x in enumerate(value.get("poi_values") or []):
            if bounds is not None and not bounds[0] <= x <= bounds[1]:
                ck.add(
                    (*where, "poi_values", i),
                    f"{x:g} is outside poi.bounds [{bounds[0]:g}, {bounds[1]:g}]",
                )
        if "mu_true" in out:
            out["mu_true"] = float(out["mu_true"])
        if "poi_values" in out:
            out["poi_values"] = [float(x) for x in out["poi_values"]]
        res.compute[stage] = out
    if res.compute.get("fit", {}).get("enabled") is False:
        for stage in ("impacts", "scan", "toys", *spec_models.IN_FIT_JOB):
            if res.compute.get(stage, {}).get("enabled"):
                ck.add(
                    ("compute", stage),
                    f"{stage} {'needs' if stage == 'expected' else 'need'} the fit; "
                    f"enable compute.fit or disable {stage}",
                )
    _in_fit_job(ck, res, bounds)


def fit_job_stage_settings(
    stage: str, block: Mapping[str, Any], bounds: tuple[float, float] | None
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The resolved settings (defaults filled in) of ``limits`` or ``expected``, a stage run
    inside the fit job, and the problems found as (key, message). ``block`` must pass the
    stage's model (`spec_models.STAGES`); the dashboard's fit form goes through here too
    (`backend.fit_starts`), so both resolve the settings alike."""
    problems: list[tuple[str, str]] = []
    settings = spec_models.STAGES[stage].model_validate(block).model_dump()
    settings.pop("enabled")
    if stage == "limits":
        if settings["method"] == "asymptotic" and settings["toys"] is not None:
            problems.append(("toys", "is only used with method: toys"))
        if settings["method"] == "toys" and settings["toys"] is None:
            settings["toys"] = spec_models.DEFAULT_LIMIT_TOYS
        settings["toys"] = settings["toys"] or 0
        settings["seed"] = int(settings["seed"] or 0)
        settings["cl"] = float(settings["cl"])
    else:
        mu = float(settings["mu"])
        if bounds is not None and not bounds[0] <= mu <= bounds[1]:
            problems.append(("mu", f"{mu:g} is outside poi.bounds [{bounds[0]:g}, {bounds[1]:g}]"))
        settings["mu"] = mu
    return settings, problems


def _in_fit_job(ck: Checker, res: Resolved, bounds: tuple[float, float] | None) -> None:
    """compute.limits and compute.expected run inside the fit job: their resolved settings
    (defaults filled in) go into the fit's options, so they reach the job and its cache key."""
    for stage in spec_models.IN_FIT_JOB:
        block = res.compute.pop(stage, None)
        if not block or not block.get("enabled"):
            continue
        settings, problems = fit_job_stage_settings(stage, block, bounds)
        for key, message in problems:
            ck.add(("compute", stage, key), message)
        fit = res.compute.setdefault("fit", {"enabled": True})
        fit["options"] = {**dict(fit.get("options") or {}), stage: settings}


# --------------------------------------------------------------------------- the file


def check(data: Any, base_dir: Path) -> tuple[Resolved, list[tuple[PathKey, str]]]:
    """Every problem of a parsed analysis file (the model's, then the cross-key rules'), and
    the resolved model."""
    res = Resolved()
    if not isinstance(data, Mapping):
        return res, [((), f"expected an analysis (a mapping), got {kind(data)}")]
    ck = Checker(base_dir, validate(spec_models.AnalysisFile, data)[1])
    top: Mapping[str, Any] = data

    for key in ("name", "description", "reference"):
        if key in top and ck.ok((key,)):
            setattr(res, key, top[key])

    bounds = (
        _poi(ck, res, top["poi"])
        if "poi" in top
        else (DEFAULT_POI["bounds"][0], DEFAULT_POI["bounds"][1])
    )
    # several POIs / free normalisation factors: the coefficients may name every one of them;
    # mu-valued keys (data.asimov.mu, scans, limits, expected) refer to the first POI
    free_ranges: dict[str, tuple[float, float] | None] | None = None
    if "pois" in top and top["pois"] is not None:
        if "poi" in top:
            ck.add(("pois",), "give either poi (one POI, mu) or pois (several), not both")
        res.pois = _free_block(ck, "pois", top["pois"])
        if res.pois:
            first = next(iter(res.pois.values()))
            bounds = (first["bounds"][0], first["bounds"][1])
    if top.get("norm_factors"):
        res.norm_factors = _free_block(ck, "norm_factors", top["norm_factors"])
        for name in set(res.norm_factors) & set(res.pois) if res.pois else {POI}:
            ck.add(("norm_factors", name), "is also a parameter of interest")
    if res.pois or res.norm_factors:
        free_ranges = {
            n: (p["bounds"][0], p["bounds"][1])
            for n, p in {
                **(res.pois or {POI: {"bounds": list(bounds or (0, 1))}}),
                **res.norm_factors,
            }.items()
        }
        if bounds is None and not res.pois:
            free_ranges[POI] = None

    # the sound keys of sample_defaults (a bad one is reported once, there, and not inherited)
    sd = top.get("sample_defaults")
    defaults: dict[str, Any] = (
        {k: v for k, v in sd.items() if ck.ok(("sample_defaults", k))}
        if isinstance(sd, Mapping)
        else {}
    )

    named_bad: set[str] = set()
    samples = top.get("samples")
    for name, value in samples.items() if isinstance(samples, Mapping) else ():
        spec = check_sample(ck, ("samples", name), value, defaults)
        if spec is None:
            named_bad.add(name)
        else:
            res.samples[name] = spec
    check_reweighted_splits(ck, res.samples)

    procs = top.get("processes")
    procs_raw: dict[str, Any] = dict(procs) if isinstance(procs, Mapping) else {}
    for name, p in procs_raw.items():
        where: PathKey = ("processes", name)
        if not isinstance(p, Mapping):
            continue
        if "sample" in p:
            spec = sample_ref(ck, res, (*where, "sample"), p["sample"], defaults, named_bad)
            if spec is not None:
                res.processes[name] = spec
        if "coefficient" in p and ck.ok((*where, "coefficient")):
            text = _coefficient(
                ck, (*where, "coefficient"), p["coefficient"], free_ranges or bounds
            )
            if text is not None:
                res.coefficients[name] = text
        if "yield" in p and ck.ok((*where, "yield")):
            res.yields[name] = float(p["yield"])

    if res.reference and procs_raw and res.reference not in procs_raw:
        ck.add(
            ("reference",),
            f"{res.reference!r} is not a process; processes: {', '.join(procs_raw)}",
        )
    if len(procs_raw) == 1 and res.reference in procs_raw:
        ck.add(("processes",), "one process only: there is nothing to train against the reference")

    shapes: list[tuple[str, str]] = []
    if "systematics" in top:
        shapes = _systematics(ck, res, top["systematics"], defaults, named_bad, list(procs_raw))

    features = None
    if res.used_samples:
        first = res.processes.get(res.reference) or res.used_samples[0][1]
        whose = (
            f"the reference process {res.reference!r}"
            if res.reference in res.processes
            else "the first sample"
        )
        features = feature_names(first)
        for path, spec in res.used_samples:
            names = feature_names(spec)
            if names != features:
                ck.add(
                    path,
                    f"features {list(names)} differ from those of {whose} {list(features)}; "
                    "every sample needs the same features in the same order",
                )

    known_tasks = None  # from what the file declares, so a bad sample does not hide a task name
    if res.reference in procs_raw:
        known_tasks = campaigns.task_names(list(procs_raw), res.reference, shapes)
    check_training(ck, res, top.get("training", {}), known_tasks, features)

    if "data" in top:
        _data(ck, res, top["data"], defaults, named_bad, bounds)
    if isinstance(top.get("compute"), Mapping):
        _compute(ck, res, top["compute"], bounds)
    for key in ("backend", "estimate", "report"):
        if key in top and ck.ok((key,)):
            setattr(res, key, dict(top[key]))
    return res, ck.problems
