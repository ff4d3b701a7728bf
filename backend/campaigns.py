"""Campaign configs: validation (TOML/YAML -> `CampaignConfig`) and expansion into job plans.

A campaign trains ratio ensembles for every task -- each process against the reference
process, each systematic variation (up/down) against its nominal process -- times every
point of a hyper-parameter grid, with ensemble members packed several per job; then one fit
job that waits for all trainings, and impacts / scan / toys jobs that wait for the fit and fan
out over nuisance-parameter subsets, POI points or toy seeds.

Per-task overrides (``training.tasks.<task>``: ensemble size, members per job, TrainConfig
settings) change one task's jobs only. The fit-stage keys ``fit.coefficients``,
``fit.norm_systematics``, ``fit.yields`` and ``fit.poi`` (written by analysis files, see
`backend.analysis`) pass through to the fit jobs' params unchanged.

Validation is the declarative model `backend.campaign_model.CampaignModel` (shapes, types,
ranges, defaults) plus the cross-key checks below; every error names the key (dotted path)
and, where there is a closed set, the allowed values; a YAML file's errors also name the line.
Files are read within bounds (`backend.yaml_reader`: size, aliases, duplicate keys), and no
NaN or infinity passes. Nothing here touches a database.

Job specs (what the worker reads from spec.json) look like
``{"kind": "train", "campaign": name, "name": job name, "params": {...}}`` where ``params``
holds for train jobs ``numerator``/``denominator`` sample specs, ``train`` (a
`sbi_engine.ratio.TrainConfig` dict), ``task`` and ``members`` (global member indices); for
fit-like jobs the fit settings plus ``nps`` / ``poi_values`` / ``toy_seeds``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.campaign_model import (
    DEFAULTS,
    LAUNCHERS,
    MAX_JOBS,
    SETTABLE_TRAIN_KEYS,
    TRAIN_KEYS,
    CampaignModel,
    DemoSample,
    coefficient_problem,
    train_config_problem,
)
from backend.costs import PriceError, load_catalogue, region_of_zone
from backend.yaml_reader import LineMap, parse_yaml, read_bytes
from sbi_engine.config_model import PathKey, dotted, non_finite, validate

__all__ = [
    "DEFAULTS",
    "LAUNCHERS",
    "SETTABLE_TRAIN_KEYS",
    "TRAIN_KEYS",
    "CampaignConfig",
    "CampaignConfigError",
    "JobPlan",
    "RatioTask",
    "config_region",
    "demo_config",
    "expand",
    "grid_points",
    "load_config",
    "nuisance_names",
    "ratio_tasks",
    "resources_for",
    "task_names",
    "validate_config",
]

_SETTABLE_TRAIN_KEYS = SETTABLE_TRAIN_KEYS


class CampaignConfigError(ValueError):
    """A campaign config that does not validate; `.errors` lists one message per problem
    ('key.path: message'); `.lines` their lines when the config came from a YAML file."""

    def __init__(
        self,
        errors: Sequence[str],
        source: str = "campaign config",
        lines: Sequence[int] | None = None,
    ) -> None:
        self.errors = list(errors)
        self.source = source
        self.lines = list(lines) if lines is not None else None
        if self.lines is not None:
            text = "\n".join(f"{source}:{n}: {e}" for n, e in zip(self.lines, self.errors))
        else:
            text = f"{source}: " + "; ".join(self.errors)
        super().__init__(text)


# --------------------------------------------------------------------------- checks


def _merge(defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(defaults))
    for k, v in given.items():
        if (
            isinstance(v, Mapping)
            and isinstance(out.get(k), Mapping)
            and k not in ("params", "grid", "options", "tasks")
        ):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _check_sample_spec(spec: Any, where: str) -> list[str]:
    if not isinstance(spec, Mapping):
        return [f"{where}: expected a sample spec table, got {type(spec).__name__}"]
    if "demo" in spec:
        if set(spec) != {"demo"}:
            return [f"{where}: a demo sample spec has only the key 'demo'; got {sorted(spec)}"]
        if not isinstance(spec["demo"], Mapping):
            return [f"{where}.demo: expected a table with process, n, seed (or mu, seed for data)"]
        found = validate(DemoSample, spec["demo"])[1]
        return [f"{where}.{dotted(('demo', *p))}: {m}" for p, m in found]
    if "path" in spec:
        if not isinstance(spec["path"], str):
            return [f"{where}.path: expected a string"]
        return _check_sample_file(spec["path"], f"{where}.path")
    return [f"{where}: a sample spec needs the key 'demo' or 'path'; got keys {sorted(spec)}"]


def _check_sample_file(text: str, where: str) -> list[str]:
    """The sample file a worker will read exists now (a missing one would fail the campaign's
    jobs only after it was stored and launched). Paths are read as the workers' reader reads
    them (`sbi_engine.readers`): local files, `file://` allowed, relative to the working
    directory."""
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif "://" in text:
        return [
            f"{where}: {text!r}: only local files can be read; copy remote objects "
            "(gs://, root://, ...) to a local path first"
        ]
    try:
        p = Path(text).expanduser()
        if p.is_file():
            return []
        what = "is not a file" if p.exists() else "file not found"
    except (OSError, ValueError, RuntimeError) as exc:  # an unreadable or malformed path
        what = f"cannot be read ({exc})"
    return [f"{where}: {text!r}: {what} (working directory {Path.cwd()})"]


def _n_jobs(doc: Mapping[str, Any]) -> int:
    """How many jobs `expand` would plan, by arithmetic (a config must not plan 10^12 jobs)."""
    tr = doc["training"]
    n_tasks = len(
        task_names(
            list(doc["processes"]),
            doc["reference"],
            [(s["name"], s["process"]) for s in doc["systematics"]],
        )
    )
    over = tr.get("tasks") or {}
    per_task = [
        math.ceil(
            over.get(t, {}).get("ensemble_size", tr["ensemble_size"])
            / over.get(t, {}).get("members_per_job", tr["members_per_job"])
        )
        for t in over
    ]
    default = math.ceil(tr["ensemble_size"] / tr["members_per_job"])
    points = math.prod(len(v) for v in tr["grid"].values())
    n = (sum(per_task) + default * max(n_tasks - len(per_task), 0)) * points
    fit = doc["fit"]
    if fit["enabled"]:
        nps = (
            len(doc["systematics"]) + len(fit.get("norm_systematics") or []) + len(fit["nuisances"])
        )
        n += 1
        n += math.ceil(nps / doc["impacts"]["nps_per_job"]) if doc["impacts"]["enabled"] else 0
        sc, ty = doc["scan"], doc["toys"]
        n += math.ceil(len(sc["poi_values"]) / sc["points_per_job"]) if sc["enabled"] else 0
        n += math.ceil(ty["n_toys"] / ty["toys_per_job"]) if ty["enabled"] else 0
    return n


def _cross_checks(doc: Mapping[str, Any]) -> list[str]:
    errs: list[str] = []
    processes = doc["processes"]
    names = sorted(processes)
    for name, spec in processes.items():
        errs += _check_sample_spec(spec, f"processes.{name}")
    if doc["reference"] not in processes:
        errs.append(
            f"reference: {doc['reference']!r} is not a process; allowed values: {', '.join(names)}"
        )
    seen: set[tuple[str, str]] = set()
    for i, syst in enumerate(doc["systematics"]):
        if syst["process"] not in processes:
            errs.append(
                f"systematics[{i}].process: {syst['process']!r} is not a process; allowed values: {', '.join(names)}"
            )
        if (syst["name"], syst["process"]) in seen:
            errs.append(
                f"systematics[{i}]: duplicate systematic {syst['name']!r} for process {syst['process']!r}"
            )
        seen.add((syst["name"], syst["process"]))
        for d in ("up", "down"):
            errs += _check_sample_spec(syst[d], f"systematics[{i}].{d}")
    if isinstance(doc["fit"].get("data"), Mapping):
        errs += _check_sample_spec(doc["fit"]["data"], "fit.data")
    errs += _fit_model_checks(doc["fit"], names)
    known_tasks = task_names(
        names, doc["reference"], [(s["name"], s["process"]) for s in doc["systematics"]]
    )
    for task in doc["training"].get("tasks") or {}:
        if task not in known_tasks:
            errs.append(
                f"training.tasks.{task}: unknown ratio task; the tasks are: {', '.join(known_tasks)}"
            )
    if not errs and (n := _n_jobs(doc)) > MAX_JOBS:
        errs.append(
            f"training: the campaign would have {n} jobs, more than {MAX_JOBS}; use fewer "
            "tasks, grid points or toys, or more members per job"
        )
    if not errs:
        errs += _train_config_checks(doc["training"])
    catalogue = load_catalogue()
    region = _region(doc["backend"], catalogue.default_region)
    for where, res in _stage_resources(doc).items():
        try:
            catalogue.quote(
                res["machine_type"], res["gpu_type"], res["gpu_count"], res["spot"], region
            )
        except PriceError as exc:
            errs.append(f"{where}: {exc}")
    return errs


def _train_config_checks(tr: Mapping[str, Any]) -> list[str]:
    """The settings a train job gets, together (the model checks each block on its own):
    training.params with each task's overrides, and with each grid point (the first bad one)."""
    errs = []
    for task, over in (tr.get("tasks") or {}).items():
        own = {k: v for k, v in over.items() if k in SETTABLE_TRAIN_KEYS}
        if own and (problem := train_config_problem({**tr["params"], **own})):
            errs.append(f"training.tasks.{task}: {problem} (with training.params)")
    grid = tr["grid"]
    keys = sorted(grid)
    for values in itertools.product(*(grid[k] for k in keys)) if grid else ():
        point = dict(zip(keys, values))
        if problem := train_config_problem({**tr["params"], **point}):
            errs.append(f"training.grid: the point {point}: {problem} (with training.params)")
            break
    return errs


def _free_parameter_specs(fit: Mapping[str, Any]) -> dict[str, tuple[str, Mapping[str, Any]]]:
    """{name: (key path, {init, bounds})} of the fit's POIs (``pois``, else ``poi`` called mu)
    and free normalisation factors."""
    out: dict[str, tuple[str, Mapping[str, Any]]] = {}
    if fit.get("pois"):
        for name, p in fit["pois"].items():
            out[name] = (f"fit.pois.{name}", p or {})
    else:
        out["mu"] = ("fit.poi", fit.get("poi") or {})
    for name, p in (fit.get("norm_factors") or {}).items():
        out[name] = (f"fit.norm_factors.{name}", p or {})
    return out


def _fit_model_checks(fit: Mapping[str, Any], processes: Sequence[str]) -> list[str]:
    """Process names in fit.coefficients / yields / norm_systematics exist; poi bounds ordered;
    coefficients finite over the bounds of every POI and free normalisation factor."""
    errs = []
    allowed = ", ".join(processes)
    if fit.get("pois") and fit.get("poi"):
        errs.append("fit.poi: give either poi (one POI, mu) or pois (several), not both")
    free = _free_parameter_specs(fit)
    dup = set(fit.get("pois") or {}) & set(fit.get("norm_factors") or {})
    if dup:
        errs.append(f"fit.norm_factors: {sorted(dup)} also named in fit.pois")
    ranges: dict[str, tuple[float, float] | None] = {}
    bound_errs = []
    for name, (where, p) in free.items():
        lo, hi = p.get("bounds", (0.0, 20.0))
        if not lo < hi:
            bound_errs.append(
                f"{where}.bounds: expected [low, high] with low < high, got {[lo, hi]}"
            )
            ranges[name] = None
            continue
        if not lo <= p.get("init", 1.0) <= hi:
            bound_errs.append(
                f"{where}.init: {p.get('init', 1.0)} is outside the bounds {[lo, hi]}"
            )
        ranges[name] = (lo, hi)
    for key in ("coefficients", "yields"):
        for proc in fit.get(key) or {}:
            if proc not in processes:
                errs.append(f"fit.{key}.{proc}: not a process; allowed values: {allowed}")
    for proc, text in (fit.get("coefficients") or {}).items():
        _, problem = coefficient_problem(text, ranges)
        if problem is not None:
            errs.append(f"fit.coefficients.{proc}: {problem}")
    for i, item in enumerate(fit.get("norm_systematics") or []):
        for proc in item["effects"]:
            if proc not in processes:
                errs.append(
                    f"fit.norm_systematics[{i}].effects.{proc}: not a process; allowed values: {allowed}"
                )
    return errs + bound_errs


def _region(backend: Mapping[str, Any], default: str) -> str:
    return backend.get("region") or region_of_zone((backend.get("zones") or [None])[0]) or default


def config_region(data: Mapping[str, Any]) -> str:
    """The pricing region of a stored (already validated) config, without re-validating it."""
    return _region(data.get("backend", {}), load_catalogue().default_region)


def _stage_resources(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per stage: the backend's machine settings with the stage's overrides applied."""
    base = {k: doc["backend"][k] for k in ("machine_type", "gpu_type", "gpu_count", "spot")}
    out = {"backend": dict(base)}
    for stage in ("training", "fit", "impacts", "scan", "toys"):
        if doc[stage].get("resources"):
            out[f"{stage}.resources"] = {**base, **doc[stage]["resources"]}
    return out


def resources_for(doc: Mapping[str, Any], stage: str) -> dict[str, Any]:
    base = {k: doc["backend"][k] for k in ("machine_type", "gpu_type", "gpu_count", "spot")}
    return {**base, **(doc[stage].get("resources") or {})}


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class CampaignConfig:
    """A validated campaign config with every default filled in (`data` is JSON-safe)."""

    data: dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def backend(self) -> dict[str, Any]:
        return self.data["backend"]

    @property
    def launcher(self) -> str:
        return self.data["backend"]["launcher"]

    @property
    def region(self) -> str:
        return _region(self.backend, load_catalogue().default_region)

    @property
    def config_hash(self) -> str:
        """sha256 of the canonical JSON of the normalised config."""
        canon = json.dumps(self.data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "campaign config") -> CampaignConfig:
        return validate_config(raw, source=source)


def _model_errors(raw: Any) -> list[str]:
    """The problems `CampaignModel` finds, and every NaN or infinity (wherever it is)."""
    found = validate(CampaignModel, raw)[1]
    seen = {p for p, _ in found}
    found += [
        (p, f"expected a finite number, got {v!r}") for p, v in non_finite(raw) if p not in seen
    ]
    return [f"{dotted(p)}: {m}" for p, m in found]


def validate_config(
    raw: Any, source: str = "campaign config", lines: LineMap | None = None
) -> CampaignConfig:
    """Validate a parsed config and fill defaults; raises `CampaignConfigError` listing every
    problem (with its line when `lines`, the YAML file's line map, is given)."""
    if isinstance(raw, CampaignConfig):
        return raw

    def fail(errors: list[str]) -> CampaignConfigError:
        at = [lines.line(_undotted(e.partition(": ")[0])) for e in errors] if lines else None
        return CampaignConfigError(errors, source, at)

    if not isinstance(raw, Mapping):
        raise fail([f"(top level): expected a table/mapping, got {type(raw).__name__}"])
    try:  # plain JSON types (TOML dates -> str)
        raw = json.loads(json.dumps(raw, default=str))
    except (ValueError, RecursionError) as exc:  # a circular or too deeply nested structure
        raise fail([f"(top level): not plain data: {exc}"]) from None
    errors = _model_errors(raw)
    if errors:
        raise fail(errors)
    doc = _merge(DEFAULTS, raw)
    errors = _cross_checks(doc)
    if errors:
        raise fail(errors)
    return CampaignConfig(doc)


_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def _undotted(text: str) -> PathKey:
    """'systematics[0].up' -> ('systematics', 0, 'up'); the inverse of `dotted` (keys with dots
    split too: the line lookup then falls back to their parent)."""
    return tuple(int(i) if i else k for i, k in _PART.findall(text) if (i or k) != "(top level)")


def load_config(path: str | Path) -> CampaignConfig:
    """Read and validate a TOML (.toml) or YAML (.yaml/.yml) campaign config file (at most
    1 MiB; YAML through the bounded reader, so its errors name their lines)."""
    p = Path(path)
    if not p.is_file():
        raise CampaignConfigError([f"file not found: {p}"], str(p))
    suffix = p.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise CampaignConfigError(
            [f"unknown file type {p.suffix!r}; allowed: .toml, .yaml, .yml"], str(p)
        )
    raw_bytes, problem = read_bytes(p)
    if raw_bytes is None:
        raise CampaignConfigError([f"(file): {problem.message if problem else '?'}"], str(p), [1])
    if suffix == ".toml":
        try:
            raw = tomllib.loads(raw_bytes.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise CampaignConfigError([f"not valid TOML: {exc}"], str(p)) from None
        return validate_config(raw, source=str(p))
    parsed = parse_yaml(raw_bytes)
    if parsed.problems or parsed.duplicates:
        errors = [f"(file): {q.message}" for q in parsed.problems]
        errors += [
            f"{dotted(k)}: duplicate key (first given on line {first}); each key may appear once"
            for k, _, first in parsed.duplicates
        ]
        at = [q.line for q in parsed.problems] + [line for _, line, _ in parsed.duplicates]
        raise CampaignConfigError(errors, str(p), at)
    return validate_config(parsed.data, source=str(p), lines=parsed.lines)


# --------------------------------------------------------------------------- expansion


@dataclass(frozen=True)
class JobPlan:
    """One job as the expansion produces it; `depends_on` holds names of other plans."""

    name: str
    kind: str
    spec: dict[str, Any]
    est_hours: float
    machine_type: str
    gpu_type: str | None
    gpu_count: int
    spot: bool
    task: str | None = None
    members: tuple[int, ...] = ()
    np_subset: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    depends_on: tuple[str, ...] = ()
    priority: int = 0


@dataclass(frozen=True)
class RatioTask:
    name: str
    numerator: dict[str, Any]
    denominator: dict[str, Any]
    kind: str  # "process" or "systematic"
    process: str
    systematic: str | None = None
    direction: str | None = None


def task_names(
    processes: Sequence[str], reference: str, systematics: Sequence[tuple[str, str]]
) -> list[str]:
    """Names of the ratio tasks: '<process>_vs_<reference>', then '<syst>_<up|down>_<process>'."""
    names = [f"{p}_vs_{reference}" for p in processes if p != reference]
    for syst, proc in systematics:
        names += [f"{syst}_{direction}_{proc}" for direction in ("up", "down")]
    return names


def ratio_tasks(cfg: CampaignConfig) -> list[RatioTask]:
    """Each process against the reference; each systematic up/down against its nominal process."""
    d = cfg.data
    ref = d["reference"]
    tasks = [
        RatioTask(f"{p}_vs_{ref}", spec, d["processes"][ref], "process", p)
        for p, spec in d["processes"].items()
        if p != ref
    ]
    for s in d["systematics"]:
        for direction in ("up", "down"):
            tasks.append(
                RatioTask(
                    f"{s['name']}_{direction}_{s['process']}",
                    s[direction],
                    d["processes"][s["process"]],
                    "systematic",
                    s["process"],
                    s["name"],
                    direction,
                )
            )
    return tasks


def grid_points(cfg: CampaignConfig) -> list[dict[str, Any]]:
    """The cartesian product of training.grid (one empty point if there is no grid)."""
    grid = cfg.data["training"]["grid"]
    keys = sorted(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def nuisance_names(cfg: CampaignConfig) -> list[str]:
    """Nuisance parameters of the fit: shape systematics, then fit.norm_systematics, then
    fit.nuisances (each in order), unique."""
    fit = cfg.data["fit"]
    names = [s["name"] for s in cfg.data["systematics"]]
    names += [s["name"] for s in fit.get("norm_systematics") or []] + list(fit["nuisances"])
    return list(dict.fromkeys(names))


def _chunks(seq: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(seq[i : i + size]) for i in range(0, len(seq), size)]


def expand(cfg: CampaignConfig) -> list[JobPlan]:
    """All jobs of a campaign, trainings first; the DAG is given by `depends_on` names."""
    d = cfg.data
    est = d["estimate"]
    tr = d["training"]
    res = resources_for(d, "training")
    plans: list[JobPlan] = []
    tasks = ratio_tasks(cfg)
    points = grid_points(cfg)
    overrides = tr.get("tasks") or {}
    for task in tasks:
        over = overrides.get(task.name, {})
        member_packs = _chunks(
            range(over.get("ensemble_size", tr["ensemble_size"])),
            over.get("members_per_job", tr["members_per_job"]),
        )
        params = {**tr["params"], **{k: v for k, v in over.items() if k in _SETTABLE_TRAIN_KEYS}}
        for gi, point in enumerate(points):
            for members in member_packs:
                train = {
                    **params,
                    **point,
                    "members": len(members),
                    "seed": tr["seed"] + 7919 * gi + members[0],
                }
                name = f"train-{task.name}-g{gi}-m{members[0]}-{members[-1]}"
                spec = {
                    "kind": "train",
                    "campaign": d["name"],
                    "name": name,
                    "params": {
                        "task": task.name,
                        "task_info": {
                            "kind": task.kind,
                            "process": task.process,
                            "systematic": task.systematic,
                            "direction": task.direction,
                        },
                        "numerator": task.numerator,
                        "denominator": task.denominator,
                        "grid_index": gi,
                        "grid_point": point,
                        "members": members,
                        "train": train,
                    },
                }
                plans.append(
                    JobPlan(
                        name=name,
                        kind="train",
                        spec=spec,
                        task=task.name,
                        members=tuple(members),
                        est_hours=est["train_hours_per_member"] * len(members),
                        priority=10,
                        **res,
                    )
                )
    train_names = tuple(p.name for p in plans)
    fit = d["fit"]
    if not fit["enabled"]:
        return plans
    fit_params = {
        "processes": d["processes"],
        "reference": d["reference"],
        "tasks": {
            t.name: {
                "kind": t.kind,
                "process": t.process,
                "systematic": t.systematic,
                "direction": t.direction,
            }
            for t in tasks
        },
        "systematics": d["systematics"],
        "nuisances": nuisance_names(cfg),
        "data": fit["data"],
        "mu_true": fit["mu_true"],
        "options": fit["options"],
        "grid_points": points,
    }
    for key in (
        "coefficients",
        "norm_systematics",
        "yields",
        "poi",
    ):  # only when given: old specs unchanged
        if key in fit:
            fit_params[key] = fit[key]

    def fit_like(
        name: str, kind: str, stage: str, hours: float, extra: dict[str, Any], **kw: Any
    ) -> JobPlan:
        spec = {
            "kind": kind,
            "campaign": d["name"],
            "name": name,
            "fit_job": "fit",
            "params": {**copy.deepcopy(fit_params), **extra},
        }
        return JobPlan(
            name=name, kind=kind, spec=spec, est_hours=hours, **resources_for(d, stage), **kw
        )

    plans.append(
        fit_like("fit", "fit", "fit", est["fit_hours"], {}, depends_on=train_names, priority=5)
    )
    if d["impacts"]["enabled"]:
        for i, nps in enumerate(_chunks(nuisance_names(cfg), d["impacts"]["nps_per_job"])):
            plans.append(
                fit_like(
                    f"impacts-{i:03d}",
                    "impacts",
                    "impacts",
                    est["impacts_hours_per_np"] * len(nps),
                    {"nps": nps},
                    np_subset=tuple(nps),
                    depends_on=("fit",),
                )
            )
    if d["scan"]["enabled"]:
        for i, pts in enumerate(_chunks(d["scan"]["poi_values"], d["scan"]["points_per_job"])):
            plans.append(
                fit_like(
                    f"scan-{i:03d}",
                    "scan",
                    "scan",
                    est["scan_hours_per_point"] * len(pts),
                    {"poi_values": pts},
                    depends_on=("fit",),
                )
            )
    if d["toys"]["enabled"]:
        t = d["toys"]
        seeds = list(range(t["seed"], t["seed"] + t["n_toys"]))
        for i, chunk in enumerate(_chunks(seeds, t["toys_per_job"])):
            plans.append(
                fit_like(
                    f"toys-{i:03d}",
                    "toys",
                    "toys",
                    est["toys_hours_per_toy"] * len(chunk),
                    {"toy_seeds": chunk, "toy_mu_true": t["mu_true"]},
                    seeds=tuple(chunk),
                    depends_on=("fit",),
                )
            )
    return plans


# --------------------------------------------------------------------------- the demo


def _demo(
    process: str, n: int, seed: int, alpha: Mapping[str, float] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"process": process, "n": n, "seed": seed}
    if alpha:
        spec["alpha"] = dict(alpha)
    return {"demo": spec}


DEMO_CONFIG: dict[str, Any] = {
    "name": "demo",
    "description": "The built-in off-shell-like demo: S and SBI against B, one shape systematic, a small ensemble.",
    "backend": {
        "launcher": "local",
        "machine_type": "local",
        "max_concurrency": 2,
        "retry_limit": 2,
    },
    "processes": {
        "S": _demo("S", 20000, 1),
        "SBI": _demo("SBI", 20000, 2),
        "B": _demo("B", 20000, 3),
    },
    "reference": "B",
    "systematics": [
        {
            "name": "m4l_scale",
            "process": "B",
            "up": _demo("B", 20000, 4, {"m4l_scale": 1.0}),
            "down": _demo("B", 20000, 5, {"m4l_scale": -1.0}),
        }
    ],
    "training": {
        "ensemble_size": 4,
        "members_per_job": 2,
        "seed": 0,
        "params": {
            "hidden_layers": 2,
            "width": 32,
            "max_steps": 400,
            "eval_every": 50,
            "batch_size": 512,
            "checkpoint_every": 100,
            "periodic_features": ["phi"],
        },
    },
    "fit": {
        "enabled": True,
        "data": "asimov",
        "mu_true": 1.0,
        "nuisances": ["bkg_norm", "gg_scale"],
    },
    "impacts": {"enabled": True, "nps_per_job": 2},
    "scan": {"enabled": True, "poi_values": [0.0, 0.5, 1.0, 1.5, 2.0, 2.5], "points_per_job": 3},
    "toys": {"enabled": False, "n_toys": 20, "toys_per_job": 10},
    "estimate": {
        "train_hours_per_member": 0.01,
        "fit_hours": 0.02,
        "impacts_hours_per_np": 0.01,
        "scan_hours_per_point": 0.005,
        "toys_hours_per_toy": 0.002,
    },
}


def demo_config() -> CampaignConfig:
    """The built-in demo campaign (a fresh copy, validated)."""
    return validate_config(copy.deepcopy(DEMO_CONFIG), source="demo campaign")
