"""Static checks of an analysis file and its translation into a resolved model.

`check(data, ...)` walks the parsed YAML once, collects every problem (with its key path;
the caller turns paths into line numbers) and returns the resolved model: sample specs with
absolute paths and the file defaults merged in, processes with coefficients, shape and
normalisation systematics, training settings per ratio task, data, what to compute, backend
and report settings. Samples are checked in `spec_samples`, training in `spec_training`.
Nothing here reads sample contents (see `spec_data`) or imports JAX.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from backend import campaigns
from backend.analysis.spec_checker import DEFAULT_POI, Checker, Resolved, is_number, kind
from backend.analysis.spec_engine import FILE_KEYS, expr_module
from backend.analysis.spec_samples import check_sample, feature_names, sample_ref
from backend.analysis.spec_training import check_training
from backend.analysis.spec_yaml import PathKey

POI = "mu"  # the fit jobs have one parameter of interest, called mu

TOP_KEYS = (
    "name",
    "description",
    "samples",
    "sample_defaults",
    "processes",
    "reference",
    "poi",
    "systematics",
    "training",
    "data",
    "compute",
    "backend",
    "estimate",
    "report",
)
PROCESS_KEYS = ("sample", "coefficient", "yield")
SYSTEMATIC_KEYS = ("shape", "norm")
COMPUTE_KEYS: dict[str, tuple[str, ...]] = {
    "fit": ("enabled", "options", "resources"),
    "impacts": ("enabled", "nps_per_job", "resources"),
    "scan": ("enabled", "poi_values", "points_per_job", "resources"),
    "toys": ("enabled", "n_toys", "toys_per_job", "seed", "mu_true", "resources"),
}
REPORT_KEYS = ("dir", "title")


# --------------------------------------------------------------------------- blocks


def _coefficient(
    ck: Checker, path: PathKey, value: Any, bounds: tuple[float, float] | None
) -> str | None:
    expr_mod = expr_module()
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        ck.add(path, f"expected an expression of {POI} (e.g. 'mu - sqrt(mu)'), got {kind(value)}")
        return None
    try:
        expr = expr_mod.parse_expression(value, [POI], where="coefficient")
    except expr_mod.ExpressionError as exc:
        ck.add(path, str(exc).removeprefix("coefficient: "))
        return None
    if bounds is not None:  # a coefficient must be finite across the POI range
        with np.errstate(all="ignore"):
            for mu in (bounds[0], 0.5 * (bounds[0] + bounds[1]), bounds[1]):
                val = float(expr({POI: float(mu)}, np))
                if not math.isfinite(val):
                    ck.add(
                        path, f"{expr.text!r} is not finite at {POI} = {mu:g} (inside poi.bounds)"
                    )
                    break
    return expr.text


def _poi(ck: Checker, res: Resolved, raw: Any) -> tuple[float, float] | None:
    p = ck.mapping(("poi",), raw, ("init", "bounds"), "the parameter of interest")
    if p is None:
        return None
    bounds = DEFAULT_POI["bounds"]
    if "bounds" in p:
        b = p["bounds"]
        if not (
            isinstance(b, list) and len(b) == 2 and all(is_number(x) for x in b) and b[0] < b[1]
        ):
            ck.add(("poi", "bounds"), f"expected [low, high] with low < high, got {b!r}")
            return None
        bounds = [float(b[0]), float(b[1])]
    init = DEFAULT_POI["init"]
    if "init" in p:
        if ck.number(("poi", "init"), p["init"]) is None:
            return None
        init = float(p["init"])
    if not bounds[0] <= init <= bounds[1]:
        ck.add(("poi", "init"), f"{init:g} is outside poi.bounds {bounds}")
    res.poi = {"init": init, "bounds": bounds}
    return bounds[0], bounds[1]


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
    systs = ck.mapping(("systematics",), raw, None, "systematics {name: {shape: ..., norm: ...}}")
    if systs is None:
        return shapes
    procs = declared or None
    for name, body in systs.items():
        where = ("systematics", name)
        ck.name(where, name, "systematic")
        s = ck.mapping(where, body, SYSTEMATIC_KEYS, "a systematic with 'shape' and/or 'norm'")
        if s is None:
            continue
        if not s:
            ck.add(
                where,
                "give 'shape' (up/down samples per process) and/or 'norm' (up/down yield factors)",
            )
        if "shape" in s:
            shape = (
                ck.mapping(
                    (*where, "shape"), s["shape"], None, "{process: {up: sample, down: sample}}"
                )
                or {}
            )
            for proc, ud in shape.items():
                pw = (*where, "shape", proc)
                if procs is not None and proc not in procs:
                    ck.add(pw, f"unknown process {proc!r}; processes: {', '.join(procs)}")
                    continue
                shapes.append((name, proc))
                pair = ck.mapping(
                    pw, ud, ("up", "down"), "{up: sample, down: sample}", required=("up", "down")
                )
                if pair is None:
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
        if "norm" in s:
            norm, nw = s["norm"], (*where, "norm")
            effects: dict[str, list[float]] = {}
            if isinstance(norm, list):  # one [up, down] pair for every process
                factors = _updown(ck, nw, norm)
                if factors is not None and procs:
                    effects = {p: list(factors) for p in procs if p in res.processes}
            else:
                per = (
                    ck.mapping(
                        nw, norm, None, "[up, down] for every process, or {process: [up, down]}"
                    )
                    or {}
                )
                for proc, value in per.items():
                    if procs is not None and proc not in procs:
                        ck.add(
                            (*nw, proc), f"unknown process {proc!r}; processes: {', '.join(procs)}"
                        )
                        continue
                    factors = _updown(ck, (*nw, proc), value)
                    if factors is not None and proc in res.processes:
                        effects[proc] = list(factors)
            if effects:
                res.norm_systematics.append({"name": name, "effects": effects})
    return shapes


def _updown(ck: Checker, path: PathKey, value: Any) -> tuple[float, float] | None:
    if isinstance(value, list) and len(value) == 2 and all(is_number(v) and v > 0 for v in value):
        return float(value[0]), float(value[1])
    ck.add(
        path,
        f"expected [up, down]: two positive yield factors such as [1.025, 0.975], got {value!r}",
    )
    return None


def _data(
    ck: Checker,
    res: Resolved,
    raw: Any,
    defaults: dict[str, Any],
    named_bad: set[str],
    bounds: tuple[float, float] | None,
) -> None:
    d = ck.mapping(
        ("data",), raw, ("asimov", "observed"), "{asimov: {mu: value}} or {observed: sample}"
    )
    if d is None:
        return
    if len(d) != 1:
        ck.add(("data",), "give exactly one of 'asimov' or 'observed'")
        return
    if "asimov" in d:
        a = ck.mapping(("data", "asimov"), d["asimov"], (POI,), "the parameter values {mu: value}")
        if a is not None and POI in a and ck.number(("data", "asimov", POI), a[POI]) is not None:
            mu = float(a[POI])
            if mu < 0 or (bounds is not None and not bounds[0] <= mu <= bounds[1]):
                ck.add(("data", "asimov", POI), f"{mu:g} must be >= 0 and inside poi.bounds")
            res.mu_true = mu
        res.data = "asimov"
    elif "observed" in d:
        spec = sample_ref(ck, res, ("data", "observed"), d["observed"], defaults, named_bad)
        if spec is not None:
            res.data = spec


def _compute(ck: Checker, res: Resolved, raw: Any, bounds: tuple[float, float] | None) -> None:
    c = ck.mapping(("compute",), raw, tuple(COMPUTE_KEYS), "what to compute")
    if c is None:
        return
    for stage, keys in COMPUTE_KEYS.items():
        if stage not in c:
            continue
        where = ("compute", stage)
        value = c[stage]
        if isinstance(value, bool):
            res.compute[stage] = {"enabled": value}
            continue
        block = ck.mapping(where, value, keys, f"true/false or {stage} settings")
        if block is None:
            continue
        out: dict[str, Any] = {"enabled": True}
        for key, v in block.items():
            kw = (*where, key)
            if key == "enabled":
                if ck.boolean(kw, v) is not None:
                    out[key] = v
            elif key == "resources":
                if ck.schema(kw, v, campaigns.RESOURCES_SCHEMA):
                    out[key] = v
            elif key == "options":
                if ck.mapping(kw, v, None, "fit options") is not None and _fit_options(ck, kw, v):
                    out[key] = v
            elif key in ("nps_per_job", "points_per_job", "n_toys", "toys_per_job"):
                if ck.integer(kw, v, 1) is not None:
                    out[key] = v
            elif key == "seed":
                if ck.integer(kw, v, 0) is not None:
                    out[key] = v
            elif key == "mu_true":
                if ck.number(kw, v) is not None:
                    if v < 0 or (bounds is not None and not bounds[0] <= v <= bounds[1]):
                        ck.add(kw, f"{v:g} must be >= 0 and inside poi.bounds")
                    out[key] = float(v)
            elif key == "poi_values":
                if not isinstance(v, list) or not v or not all(is_number(x) for x in v):
                    ck.add(kw, f"expected a non-empty list of numbers, got {kind(v)}")
                else:
                    for i, x in enumerate(v):
                        if bounds is not None and not bounds[0] <= x <= bounds[1]:
                            ck.add(
                                (*kw, i),
                                f"{x:g} is outside poi.bounds [{bounds[0]:g}, {bounds[1]:g}]",
                            )
                    out[key] = [float(x) for x in v]
        res.compute[stage] = out
    if res.compute.get("fit", {}).get("enabled") is False:
        for stage in ("impacts", "scan", "toys"):
            if res.compute.get(stage, {}).get("enabled"):
                ck.add(
                    ("compute", stage),
                    f"{stage} need the fit; enable compute.fit or disable {stage}",
                )


# --------------------------------------------------------------------------- the file


def _check_default_split(ck: Checker, defaults: dict[str, Any]) -> None:
    """The split keys of sample_defaults, checked once here (a bad one is then dropped, so the
    samples that would inherit it do not report it again)."""
    f = defaults.get("eval_fraction")
    if f is not None and not (is_number(f) and 0.0 < f < 1.0):
        ck.add(
            ("sample_defaults", "eval_fraction"),
            f"expected a number in (0, 1) (the share of events kept for evaluation), got {kind(f)}",
        )
        del defaults["eval_fraction"]
    sb = defaults.get("split_by")
    if sb is not None and not (isinstance(sb, str) and sb.strip()):
        ck.add(
            ("sample_defaults", "split_by"),
            f"expected an expression (e.g. an event-number column), got {kind(sb)}",
        )
        del defaults["split_by"]


def check(data: Any, base_dir: Path) -> tuple[Resolved, list[tuple[PathKey, str]]]:
    """Every static problem of a parsed analysis file, and the resolved model."""
    ck = Checker(base_dir)
    res = Resolved()
    top = ck.mapping((), data, TOP_KEYS, "an analysis", required=("name", "processes", "reference"))
    if top is None:
        return res, ck.problems

    if "name" in top and ck.string(("name",), top["name"]) is not None:
        if ck.name(("name",), top["name"], "analysis"):
            res.name = top["name"]
    if "description" in top and ck.string(("description",), top["description"]) is not None:
        res.description = top["description"]

    bounds = (
        _poi(ck, res, top["poi"])
        if "poi" in top
        else (DEFAULT_POI["bounds"][0], DEFAULT_POI["bounds"][1])
    )

    defaults: dict[str, Any] = {}
    if "sample_defaults" in top:
        sd = ck.mapping(
            ("sample_defaults",),
            top["sample_defaults"],
            tuple(k for k in FILE_KEYS if k not in ("path", "eval_sample")),
            "defaults for file samples",
        )
        defaults = {k: v for k, v in (sd or {}).items() if k in FILE_KEYS and k != "eval_sample"}
        _check_default_split(ck, defaults)

    named_bad: set[str] = set()
    if "samples" in top:
        samples = (
            ck.mapping(("samples",), top["samples"], None, "named samples {name: sample}") or {}
        )
        for name, value in samples.items():
            ck.name(("samples", name), name, "sample")
            spec = check_sample(ck, ("samples", name), value, defaults)
            if spec is None:
                named_bad.add(name)
            else:
                res.samples[name] = spec

    procs_raw = (
        ck.mapping(
            ("processes",),
            top.get("processes", {}),
            None,
            "processes {name: {sample, coefficient}}",
        )
        or {}
    )
    if "processes" in top and not procs_raw and isinstance(top["processes"], Mapping):
        ck.add(("processes",), "at least one process is needed")
    for name, body in procs_raw.items():
        where = ("processes", name)
        ck.name(where, name, "process")
        p = ck.mapping(where, body, PROCESS_KEYS, "a process {sample, coefficient}")
        if p is None:
            continue
        if "sample" not in p:
            ck.add(where, "missing required key 'sample' (a sample name or an inline sample)")
        else:
            spec = sample_ref(ck, res, (*where, "sample"), p["sample"], defaults, named_bad)
            if spec is not None:
                res.processes[name] = spec
        if "coefficient" not in p:
            ck.add(
                where,
                f"missing required key 'coefficient': its factor as a function of {POI}, "
                "e.g. 'mu - sqrt(mu)' (S), 'sqrt(mu)' (SBI), '1 - sqrt(mu)' (B)",
            )
        else:
            text = _coefficient(ck, (*where, "coefficient"), p["coefficient"], bounds)
            if text is not None:
                res.coefficients[name] = text
        if "yield" in p and ck.number((*where, "yield"), p["yield"], positive=True) is not None:
            res.yields[name] = float(p["yield"])

    if "reference" in top and ck.string(("reference",), top["reference"]) is not None:
        res.reference = top["reference"]
        if procs_raw and res.reference not in procs_raw:
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
    if "training" in top:
        check_training(ck, res, top["training"], known_tasks, features)
    else:
        res.training = {"defaults": {}, "seed": 0, "grid": {}, "tasks": {}, "resources": {}}

    if "data" in top:
        _data(ck, res, top["data"], defaults, named_bad, bounds)
    if "compute" in top:
        _compute(ck, res, top["compute"], bounds)
    if "backend" in top and ck.schema(
        ("backend",), top["backend"], campaigns.SCHEMA["properties"]["backend"]
    ):
        res.backend = dict(top["backend"])
    if "estimate" in top and ck.schema(
        ("estimate",), top["estimate"], campaigns.SCHEMA["properties"]["estimate"]
    ):
        res.estimate = dict(top["estimate"])
    if "report" in top:
        r = ck.mapping(("report",), top["report"], REPORT_KEYS, "report settings") or {}
        for key, value in r.items():
            if key in REPORT_KEYS and ck.string(("report", key), value) is not None:
                res.report[key] = value
    return res, ck.problems


UNCERTAINTY_KEYS = ("include", "nn_variants", "sim_variants", "closure")
UNCERTAINTY_COMPONENTS = ("nn", "sim")


def _fit_options(ck: Any, where: tuple, options: dict) -> bool:
    """The fit options the engine reads: ``uncertainty`` (which learned-model error components
    enter the total, how many refits measure them, the simulated-Asimov closure check) and
    ``resolve_shapes`` (drop shape effects below the networks' noise floor). Others pass through."""
    ok = True
    if (
        "resolve_shapes" in options
        and ck.boolean((*where, "resolve_shapes"), options["resolve_shapes"]) is None
    ):
        ok = False
    if "uncertainty" not in options:
        return ok
    kw = (*where, "uncertainty")
    u = ck.mapping(kw, options["uncertainty"], UNCERTAINTY_KEYS, "uncertainty options")
    if u is None:
        return False
    inc = u.get("include", list(UNCERTAINTY_COMPONENTS))
    if not isinstance(inc, list) or any(c not in UNCERTAINTY_COMPONENTS for c in inc):
        ck.add((*kw, "include"), f"expected a list of {list(UNCERTAINTY_COMPONENTS)}, got {inc!r}")
        ok = False
    for key in ("nn_variants", "sim_variants"):
        if key in u and ck.integer((*kw, key), u[key], 0) is None:
            ok = False
    if "closure" in u and ck.boolean((*kw, "closure"), u["closure"]) is None:
        ok = False
    return ok
