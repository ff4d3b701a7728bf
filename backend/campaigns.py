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

Validation is a JSON schema plus a few cross-key checks; every error names the key (dotted
path) and, where there is a closed set, the allowed values. Nothing here touches a database.

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
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from backend.costs import PriceError, load_catalogue, region_of_zone

LAUNCHERS: tuple[str, ...] = ("local", "gce")

# sbi_engine.ratio.TrainConfig fields (a test keeps this in step). "members" and "seed" are set
# per job by the expansion, so a config may not set them in training.params / training.grid.
TRAIN_KEYS: tuple[str, ...] = (
    "hidden_layers",
    "width",
    "activation",
    "members",
    "optimizer",
    "learning_rate",
    "schedule",
    "warmup_steps",
    "weight_decay",
    "batch_size",
    "max_steps",
    "eval_every",
    "patience",
    "val_fraction",
    "seed",
    "bootstrap",
    "strategy",
    "pack_size",
    "checkpoint_every",
    "dtype",
    "periodic_features",
    "early_stopping_smoothing",
)
_SETTABLE_TRAIN_KEYS = tuple(k for k in TRAIN_KEYS if k not in ("members", "seed"))
SETTABLE_TRAIN_KEYS = _SETTABLE_TRAIN_KEYS
# training.tasks.<task> may also change the ensemble of that one task
_TASK_KEYS = ("ensemble_size", "members_per_job", *_SETTABLE_TRAIN_KEYS)


class CampaignConfigError(ValueError):
    """A campaign config that does not validate; `.errors` lists one message per problem."""

    def __init__(self, errors: Sequence[str], source: str = "campaign config") -> None:
        self.errors = list(errors)
        self.source = source
        super().__init__(f"{source}: " + "; ".join(self.errors))


# --------------------------------------------------------------------------- schema

_RESOURCES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "machine_type": {"type": "string", "minLength": 1},
        "gpu_type": {"type": ["string", "null"]},
        "gpu_count": {"type": "integer", "minimum": 0},
        "spot": {"type": "boolean"},
    },
}
RESOURCES_SCHEMA = _RESOURCES
_STAGE_COMMON = {"enabled": {"type": "boolean"}, "resources": _RESOURCES}
_POSITIVE = {"type": "number", "exclusiveMinimum": 0}

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "processes", "reference"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "description": {"type": "string"},
        "code_version": {"type": "string"},
        "backend": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "launcher": {"enum": list(LAUNCHERS)},
                "machine_type": {"type": "string", "minLength": 1},
                "gpu_type": {"type": ["string", "null"]},
                "gpu_count": {"type": "integer", "minimum": 0},
                "spot": {"type": "boolean"},
                "zones": {"type": "array", "items": {"type": "string"}},
                "region": {"type": "string"},
                "max_concurrency": {"type": "integer", "minimum": 1},
                "retry_limit": {"type": "integer", "minimum": 0},
                "budget_usd": {"type": ["number", "null"], "minimum": 0},
            },
        },
        "processes": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {"type": "object"},
        },
        "reference": {"type": "string"},
        "systematics": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "process", "up", "down"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "process": {"type": "string"},
                    "up": {"type": "object"},
                    "down": {"type": "object"},
                },
            },
        },
        "training": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "ensemble_size": {"type": "integer", "minimum": 1},
                "members_per_job": {"type": "integer", "minimum": 1},
                "seed": {"type": "integer", "minimum": 0},
                "params": {
                    "type": "object",
                    "propertyNames": {"enum": list(_SETTABLE_TRAIN_KEYS)},
                },
                "grid": {
                    "type": "object",
                    "propertyNames": {"enum": list(_SETTABLE_TRAIN_KEYS)},
                    "additionalProperties": {"type": "array", "minItems": 1},
                },
                "tasks": {  # per ratio task: overrides of ensemble_size, members_per_job, params
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "propertyNames": {"enum": list(_TASK_KEYS)},
                        "properties": {
                            "ensemble_size": {"type": "integer", "minimum": 1},
                            "members_per_job": {"type": "integer", "minimum": 1},
                        },
                    },
                },
                "resources": _RESOURCES,
            },
        },
        "fit": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                **_STAGE_COMMON,
                "data": {"anyOf": [{"enum": ["asimov"]}, {"type": "object"}]},
                "mu_true": {"type": "number", "minimum": 0},
                "nuisances": {"type": "array", "items": {"type": "string"}},
                "options": {"type": "object"},
                # the model: coefficient m_c(mu) per process, explicit yields, yield-only
                # systematics and the POI range (see sbi_engine.fit_jobs)
                "coefficients": {
                    "type": "object",
                    "additionalProperties": {"type": ["string", "number"]},
                },
                "yields": {"type": "object", "additionalProperties": _POSITIVE},
                "norm_systematics": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "effects"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "effects": {
                                "type": "object",
                                "minProperties": 1,
                                "additionalProperties": {
                                    "type": "array",
                                    "items": _POSITIVE,
                                    "minItems": 2,
                                    "maxItems": 2,
                                },
                            },
                        },
                    },
                },
                "poi": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "init": {"type": "number"},
                        "bounds": {
                            "type": "array",
                            "items": {"type": "number"},
                            "minItems": 2,
                            "maxItems": 2,
                        },
                    },
                },
            },
        },
        "impacts": {
            "type": "object",
            "additionalProperties": False,
            "properties": {**_STAGE_COMMON, "nps_per_job": {"type": "integer", "minimum": 1}},
        },
        "scan": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                **_STAGE_COMMON,
                "poi_values": {"type": "array", "items": {"type": "number"}, "minItems": 1},
                "points_per_job": {"type": "integer", "minimum": 1},
            },
        },
        "toys": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                **_STAGE_COMMON,
                "n_toys": {"type": "integer", "minimum": 1},
                "toys_per_job": {"type": "integer", "minimum": 1},
                "seed": {"type": "integer", "minimum": 0},
                "mu_true": {"type": "number", "minimum": 0},
            },
        },
        "estimate": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                k: {"type": "number", "minimum": 0}
                for k in (
                    "train_hours_per_member",
                    "fit_hours",
                    "impacts_hours_per_np",
                    "scan_hours_per_point",
                    "toys_hours_per_toy",
                )
            },
        },
    },
}

DEFAULTS: dict[str, Any] = {
    "description": "",
    "code_version": "",
    "backend": {
        "launcher": "local",
        "machine_type": "local",
        "gpu_type": None,
        "gpu_count": 0,
        "spot": False,
        "zones": [],
        "max_concurrency": 2,
        "retry_limit": 2,
        "budget_usd": None,
    },
    "systematics": [],
    "training": {
        "ensemble_size": 4,
        "members_per_job": 2,
        "seed": 0,
        "params": {},
        "grid": {},
        "resources": {},
    },
    "fit": {
        "enabled": True,
        "data": "asimov",
        "mu_true": 1.0,
        "nuisances": [],
        "options": {},
        "resources": {},
    },
    "impacts": {"enabled": False, "nps_per_job": 2, "resources": {}},
    "scan": {
        "enabled": False,
        "poi_values": [0.0, 0.5, 1.0, 1.5, 2.0],
        "points_per_job": 5,
        "resources": {},
    },
    "toys": {
        "enabled": False,
        "n_toys": 20,
        "toys_per_job": 10,
        "seed": 1000,
        "mu_true": 1.0,
        "resources": {},
    },
    "estimate": {
        "train_hours_per_member": 0.05,
        "fit_hours": 0.1,
        "impacts_hours_per_np": 0.02,
        "scan_hours_per_point": 0.01,
        "toys_hours_per_toy": 0.005,
    },
}


def _path(err: jsonschema.ValidationError) -> str:
    out = ""
    for part in err.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _format_error(err: jsonschema.ValidationError) -> str:
    """One schema error as 'key: problem; allowed ...' in words a user can act on."""
    return f"{_path(err)}: {schema_error_message(err)}"


def schema_error_message(err: jsonschema.ValidationError) -> str:
    """The problem of one schema error without its key path (the analysis file adds its own)."""
    v, val = err.validator, err.validator_value
    if v == "enum" and "propertyNames" in err.absolute_schema_path:
        allowed = ", ".join(str(x) for x in val)
        return f"unknown key {err.instance!r}; allowed keys: {allowed}"
    if v == "enum":
        allowed = ", ".join(repr(x) for x in val)
        return f"{err.instance!r} is not allowed; allowed values: {allowed}"
    if v == "additionalProperties" and val is False:
        known = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(known))
        return (
            f"unknown key(s) {', '.join(repr(x) for x in extra)}; allowed keys: {', '.join(known)}"
        )
    if v == "required":
        missing = [k for k in val if k not in err.instance]
        return f"missing required key(s) {', '.join(repr(k) for k in missing)}"
    if v == "type":
        types = " or ".join(val) if isinstance(val, list) else val
        return f"expected {types}, got {type(err.instance).__name__} {err.instance!r}"
    if v == "anyOf":
        return f"{err.instance!r} is not allowed; expected 'asimov' or a sample spec table"
    return err.message


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
        demo = spec["demo"]
        if set(spec) != {"demo"}:
            return [f"{where}: a demo sample spec has only the key 'demo'; got {sorted(spec)}"]
        if not isinstance(demo, Mapping):
            return [f"{where}.demo: expected a table with process, n, seed (or mu, seed for data)"]
        required = ("mu", "seed") if "mu" in demo else ("process", "n", "seed")
        errs = [f"{where}.demo: missing required key {k!r}" for k in required if k not in demo]
        if "n" in demo and not (isinstance(demo["n"], int) and demo["n"] > 0):
            errs.append(f"{where}.demo.n: expected a positive integer, got {demo['n']!r}")
        return errs
    if "path" in spec:
        return [] if isinstance(spec["path"], str) else [f"{where}.path: expected a string"]
    return [f"{where}: a sample spec needs the key 'demo' or 'path'; got keys {sorted(spec)}"]


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


def _fit_model_checks(fit: Mapping[str, Any], processes: Sequence[str]) -> list[str]:
    """Process names in fit.coefficients / yields / norm_systematics exist; poi bounds ordered."""
    errs = []
    allowed = ", ".join(processes)
    for key in ("coefficients", "yields"):
        for proc in fit.get(key) or {}:
            if proc not in processes:
                errs.append(f"fit.{key}.{proc}: not a process; allowed values: {allowed}")
    for i, item in enumerate(fit.get("norm_systematics") or []):
        for proc in item["effects"]:
            if proc not in processes:
                errs.append(
                    f"fit.norm_systematics[{i}].effects.{proc}: not a process; allowed values: {allowed}"
                )
    poi = fit.get("poi") or {}
    lo, hi = poi.get("bounds", (0.0, 20.0))
    if not lo < hi:
        errs.append(f"fit.poi.bounds: expected [low, high] with low < high, got {[lo, hi]}")
    elif not lo <= poi.get("init", 1.0) <= hi:
        errs.append(f"fit.poi.init: {poi.get('init', 1.0)} is outside the bounds {[lo, hi]}")
    return errs


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


def validate_config(raw: Any, source: str = "campaign config") -> CampaignConfig:
    """Validate a parsed config and fill defaults; raises `CampaignConfigError` listing every problem."""
    if isinstance(raw, CampaignConfig):
        return raw
    if not isinstance(raw, Mapping):
        raise CampaignConfigError(
            [f"expected a table/mapping at the top level, got {type(raw).__name__}"], source
        )
    raw = json.loads(json.dumps(raw, default=str))  # plain JSON types (TOML dates -> str)
    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors: list[str] = []
    for err in sorted(validator.iter_errors(raw), key=lambda e: list(map(str, e.absolute_path))):
        errors.append(_format_error(err))
    if errors:
        raise CampaignConfigError(errors, source)
    doc = _merge(DEFAULTS, raw)
    errors = _cross_checks(doc)
    if errors:
        raise CampaignConfigError(errors, source)
    return CampaignConfig(doc)


def load_config(path: str | Path) -> CampaignConfig:
    """Read and validate a TOML (.toml) or YAML (.yaml/.yml) campaign config file."""
    p = Path(path)
    if not p.is_file():
        raise CampaignConfigError([f"file not found: {p}"], str(p))
    text = p.read_text()
    try:
        if p.suffix.lower() == ".toml":
            raw = tomllib.loads(text)
        elif p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text)
        else:
            raise CampaignConfigError(
                [f"unknown file type {p.suffix!r}; allowed: .toml, .yaml, .yml"], str(p)
            )
    except tomllib.TOMLDecodeError as exc:
        raise CampaignConfigError([f"not valid TOML: {exc}"], str(p)) from exc
    except Exception as exc:  # yaml.YAMLError without importing yaml at module level
        if isinstance(exc, CampaignConfigError):
            raise
        raise CampaignConfigError([f"not valid YAML: {exc}"], str(p)) from exc
    return validate_config(raw, source=str(p))


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
