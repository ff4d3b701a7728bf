"""The campaign config as declarative models: its shapes, types, ranges and defaults, once.

`CampaignModel` is what `backend.campaigns.validate_config` checks a config against and where
its defaults come from (`DEFAULTS`); `json_schema()` is the config's JSON schema (shipped as
docs/schemas/campaign.schema.json, a test keeps it equal). The blocks that analysis files
share (`Backend`, `Resources`, `Estimate`, `DemoSample`) are used by `backend.analysis` too.
What links keys to each other (the reference is a process, task names, prices of machine
types, sample specs' 'demo' or 'path') is checked in code by `backend.campaigns`.

Ranges keep a config from asking for absurd amounts (10^30 events, 10^9 ensemble members)
before anything is stored; every number is finite (see `sbi_engine.config_model`).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import itertools
import json
import math
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import pydantic
from pydantic import Field, StrictBool, StrictInt, StrictStr, create_model

from backend.launchers.slurm_spec import extra_line_problem, slurm_time_seconds
from sbi_engine.config_model import OMITTED, Maybe, Number, StrictModel, defaults

LAUNCHERS: tuple[str, ...] = ("local", "gce", "slurm")


# --------------------------------------------------------------------------- TrainConfig


def engine_module(relative: str, name: str) -> ModuleType:
    """A standard-library-only file of `sbi_engine` (e.g. "ratio/config.py"), loaded straight
    from its file: `sbi_engine.ratio` and `sbi_engine.fit` import JAX in their `__init__`s
    (seconds, and the dashboard must never import it), these files do not."""
    spec = importlib.util.find_spec("sbi_engine")
    if spec is None or spec.submodule_search_locations is None:
        raise ModuleNotFoundError("sbi_engine is not importable as a package")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    file_spec = importlib.util.spec_from_file_location(name, path)
    if file_spec is None or file_spec.loader is None:  # pragma: no cover - a broken install
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(file_spec)
    sys.modules[name] = module  # dataclasses look the module up while the class is built
    try:
        file_spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


# sbi_engine/ratio/config.py: TrainConfig is the one source of the training settings' names,
# types and allowed values; the models below are derived from its fields and validate every
# value through TrainConfig itself.
TRAIN_CONFIG = engine_module("ratio/config.py", "_nsbi_train_config")
EXPR = engine_module("fit/expr.py", "_nsbi_campaign_expr")  # the coefficient parser, no JAX


def coefficient_problem(
    text: Any,
    poi: str | Mapping[str, tuple[float, float] | None],
    bounds: tuple[float, float] | None = None,
) -> tuple[str | None, str | None]:
    """(normalised text, None) for a coefficient m_c(poi) that parses and is finite across the
    POI's bounds (checked at both ends and the middle), else (None, what is wrong). One check
    for campaign configs and analysis files: `1/mu`, `mu/0` and `mu**9**9**9` are refused here,
    not in a worker after training. ``poi`` may map several free parameters (POIs, free
    normalisation factors) to their bounds: every combination of their ends and middles is
    checked."""
    params = {poi: bounds} if isinstance(poi, str) else dict(poi)
    try:
        expr = EXPR.parse_expression(text, list(params), where="coefficient")
    except EXPR.ExpressionError as exc:
        return None, str(exc).removeprefix("coefficient: ")
    grids = [[None] if b is None else [b[0], 0.5 * (b[0] + b[1]), b[1]] for b in params.values()]
    for combo in itertools.product(*grids):
        point = {n: v for n, v in zip(params, combo) if v is not None}
        if not point:
            continue
        full = {n: point.get(n, 1.0) for n in params}
        problem = _evaluate(expr, full)
        if problem is not None:
            at = ", ".join(f"{n} = {v:g}" for n, v in point.items())
            return None, f"{expr.text!r} {problem} at {at} (inside the POI bounds)"
    return expr.text, None


def _evaluate(expr: Any, values: Mapping[str, float]) -> str | None:
    """None if the coefficient is a finite number at `mu`, else what is wrong. NumPy scalars
    turn 1/0 into inf (not ZeroDivisionError); an overflow of constants (9**9**9) still raises."""
    import numpy as np  # noqa: PLC0415 - only validation needs it

    try:
        with np.errstate(all="ignore"):
            val = float(np.real_if_close(expr({n: np.float64(v) for n, v in values.items()}, np)))
    except OverflowError:
        return "overflows (a number too large for floating point)"
    except ZeroDivisionError:
        return "divides by zero"
    except (ArithmeticError, ValueError, TypeError) as exc:
        return f"cannot be evaluated ({exc})"
    return None if math.isfinite(val) else "is not finite"


_TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TRAIN_CONFIG.TrainConfig)}
TRAIN_KEYS: tuple[str, ...] = tuple(_TRAIN_FIELDS)
# "members" and "seed" are set per job by the expansion, so a config may not set them.
SETTABLE_TRAIN_KEYS = tuple(k for k in TRAIN_KEYS if k not in ("members", "seed"))
_TRAIN_TYPES: dict[str, Any] = {  # TrainConfig's annotations (strings) -> strict file types
    "int": StrictInt,
    "float": float,
    "str": StrictStr,
    "bool": StrictBool,
    "int | None": StrictInt,  # null is allowed: see _setting
    "tuple[str, ...]": list[StrictStr],
}


def train_config_problem(settings: Mapping[str, Any]) -> str | None:
    """None if `TrainConfig(**settings)` accepts the settings, else its message."""
    try:
        TRAIN_CONFIG.TrainConfig(**settings)
    except (ValueError, TypeError) as exc:
        return str(exc).removeprefix("TrainConfig: ")
    return None


def _accepted(key: str, value: Any) -> Any:
    """One setting, as TrainConfig checks it (warmup_steps against an unbounded max_steps)."""
    base = {"max_steps": 10**9} if key == "warmup_steps" else {}
    problem = train_config_problem({**base, key: value})
    if problem is not None:
        raise ValueError(problem)
    return value


def _setting(key: str, *, listed: bool = False) -> tuple[Any, Any]:
    field = _TRAIN_FIELDS[key]
    try:
        tp = _TRAIN_TYPES[str(field.type)]
    except KeyError:  # pragma: no cover - a new kind of TrainConfig field: map its type above
        raise TypeError(f"TrainConfig.{key}: no file type for {field.type!r}") from None
    checked: Any = Annotated[tp, pydantic.AfterValidator(functools.partial(_accepted, key))]
    default = field.default
    text = f"sbi_engine.ratio.TrainConfig.{key} (default {default!r})"
    maybe: Any = Maybe  # built at run time (mypy sees these models as plain dicts)
    if listed:
        values = Annotated[list[checked], Field(min_length=1, max_length=1000)]
        return maybe[values], Field(default=None, description=f"values of {text}")
    if default is None:  # null is a value of the setting (TrainConfig's default)
        return Annotated[checked | None, OMITTED], Field(default=None, description=text)
    return maybe[checked], Field(default=None, description=text)


_MEMBERS_HINT = "'members' is ensemble_size, the seed is training.seed"


class _TrainSettings(StrictModel):
    """TrainConfig settings, each checked by TrainConfig, and then all of them together."""

    key_noun: ClassVar[str] = "training key"
    key_hints: ClassVar[dict[str, str]] = {"members": _MEMBERS_HINT, "seed": _MEMBERS_HINT}

    @pydantic.model_validator(mode="after")
    def _together(self) -> Any:
        given = {k: getattr(self, k) for k in self.model_fields_set if k in SETTABLE_TRAIN_KEYS}
        problem = train_config_problem(given)
        if problem is not None:
            raise ValueError(problem)
        return self


class _TrainGrid(StrictModel):
    key_noun: ClassVar[str] = "training key"
    key_hints: ClassVar[dict[str, str]] = {"members": _MEMBERS_HINT, "seed": _MEMBERS_HINT}


# Upper limits: far above any real campaign, low enough that nothing explodes on the way.
MAX_EVENTS = 10**9  # events of one demo sample
MAX_SEED = 2**63 - 1
MAX_MEMBERS = 1000  # ensemble members of one ratio task
MAX_TOYS = 100_000
MAX_ITEMS = 10_000  # entries of one list (POI values, grid values, zones, ...)
MAX_JOBS = 100_000  # jobs of one campaign (checked on the expansion's arithmetic)
MAX_HOURS = 1e6
MAX_USD = 1e9
MAX_POI = 1e6  # |mu| of a POI value, bound or true value

Name = Annotated[StrictStr, Field(min_length=1, max_length=200)]
NonEmpty = Annotated[StrictStr, Field(min_length=1)]
Count = Annotated[StrictInt, Field(ge=1, le=MAX_ITEMS)]
Seed = Annotated[StrictInt, Field(ge=0, le=MAX_SEED)]
Members = Annotated[StrictInt, Field(ge=1, le=MAX_MEMBERS)]
Hours = Annotated[Number, Field(ge=0, le=MAX_HOURS)]
PoiValue = Annotated[Number, Field(ge=-MAX_POI, le=MAX_POI)]
MuTrue = Annotated[Number, Field(ge=0, le=MAX_POI)]
Factor = Annotated[Number, Field(gt=0, le=1e6)]
Items = Field(max_length=MAX_ITEMS)


# --------------------------------------------------------------------------- shared blocks


class Resources(StrictModel):
    """A stage's machine: overrides of the backend's machine settings."""

    machine_type: Maybe[NonEmpty] = None
    gpu_type: Annotated[StrictStr | None, OMITTED] = Field(default=None, description="null: no GPU")
    gpu_count: Maybe[Annotated[StrictInt, Field(ge=0, le=16)]] = None
    spot: Maybe[StrictBool] = None


def _word(value: str) -> str:
    if not re.fullmatch(r"[!-~]+", value):
        raise ValueError(f"{value!r} must be one word of printable characters (no spaces)")
    return value


Word = Annotated[StrictStr, pydantic.AfterValidator(_word), Field(min_length=1, max_length=200)]


def _slurm_time(value: str) -> str:
    slurm_time_seconds(value)  # raises ValueError with the formats it accepts
    return value


def _sbatch_line(value: str) -> str:
    problem = extra_line_problem(value)
    if problem:
        raise ValueError(problem)
    return value


class Slurm(StrictModel):
    """The slurm launcher's job arrays: where they queue, what each task asks for, when the
    checkpoint signal comes and what an hour costs (docs/hpc.md)."""

    partition: Maybe[Word] = None
    account: Maybe[Word] = None
    qos: Maybe[Word] = None
    time_limit: Maybe[
        Annotated[StrictStr, pydantic.AfterValidator(_slurm_time), Field(max_length=32)]
    ] = Field(default=None, description="sbatch --time: minutes, HH:MM:SS or D-HH:MM:SS")
    constraint: Maybe[Word] = None
    cpus_per_task: Maybe[Annotated[StrictInt, Field(ge=1, le=4096)]] = None
    mem: Maybe[Annotated[StrictStr, Field(pattern=r"^\d+[KMGT]?$", max_length=32)]] = None
    gpu_gres: Word = Field(default="gpu", description="GRES name of GPUs: --gres=NAME[:TYPE]:N")
    gpu_type: Maybe[Word] = Field(default=None, description="GRES type of the GPUs, e.g. a100")
    signal_before_s: Annotated[StrictInt, Field(ge=0, le=7 * 86400)] = Field(
        default=300, description="SIGTERM (checkpoint and exit) this long before the time limit"
    )
    extra_sbatch: Annotated[
        list[Annotated[StrictStr, pydantic.AfterValidator(_sbatch_line)]], Items
    ] = Field(default=[], description="further #SBATCH options, one per item")
    gpu_hour_usd: Annotated[Number, Field(ge=0, le=1e6)] = 0.0
    cpu_hour_usd: Annotated[Number, Field(ge=0, le=1e6)] = 0.0

    @pydantic.model_validator(mode="after")
    def _signal_before_limit(self) -> Slurm:
        if self.time_limit is not None:
            limit = slurm_time_seconds(self.time_limit)
            if self.signal_before_s >= limit:
                raise ValueError(
                    f"signal_before_s ({self.signal_before_s} s) must be shorter than "
                    f"time_limit {self.time_limit!r} ({limit} s)"
                )
        return self


class Backend(StrictModel):
    """Where jobs run and how many at once; the campaign's budget."""

    launcher: Literal["local", "gce", "slurm"] = "local"
    machine_type: NonEmpty = "local"
    gpu_type: StrictStr | None = None
    gpu_count: Annotated[StrictInt, Field(ge=0, le=16)] = 0
    spot: StrictBool = False
    zones: Annotated[list[StrictStr], Items] = []
    region: Maybe[StrictStr] = None
    max_concurrency: Annotated[StrictInt, Field(ge=1, le=MAX_ITEMS)] = 2
    retry_limit: Annotated[StrictInt, Field(ge=0, le=100)] = 2
    budget_usd: Annotated[Number, Field(ge=0, le=MAX_USD)] | None = None
    slurm: Maybe[Slurm] = None


class Estimate(StrictModel):
    """Hours per unit of work, for the cost estimate before launch."""

    train_hours_per_member: Hours = 0.05
    fit_hours: Hours = 0.1
    impacts_hours_per_np: Hours = 0.02
    scan_hours_per_point: Hours = 0.01
    toys_hours_per_toy: Hours = 0.005


DEMO_PROCESSES: tuple[str, ...] = ("S", "SBI", "B")  # sbi_engine.demo.PROCESSES (a test checks)


class DemoSample(StrictModel):
    """Settings of a built-in demo sample: a simulated process (process, n, seed) or
    pseudo-data at a signal strength (mu, seed)."""

    process: Maybe[Literal["S", "SBI", "B"]] = None
    n: Maybe[Annotated[StrictInt, Field(ge=1, le=MAX_EVENTS)]] = None
    seed: Seed
    alpha: Maybe[dict[StrictStr, Annotated[Number, Field(ge=-100, le=100)]]] = None
    n_nuisances: Maybe[Annotated[StrictInt, Field(ge=0, le=100)]] = None
    luminosity: Maybe[Annotated[Number, Field(gt=0, le=1e9)]] = None
    weighted: Maybe[StrictBool] = None
    mu: Maybe[MuTrue] = None
    poisson: Maybe[StrictBool] = None

    @pydantic.model_validator(mode="after")
    def _process_or_mu(self) -> DemoSample:
        if self.mu is not None and self.process is not None:
            raise ValueError(
                "give either 'process' (a simulated process) or 'mu' (pseudo-data), not both"
            )
        if self.mu is None:
            missing = [k for k in ("process", "n") if getattr(self, k) is None]
            if missing:
                many = "s" if len(missing) > 1 else ""
                raise ValueError(
                    f"missing required key{many} {', '.join(repr(k) for k in missing)}"
                )
        return self


# --------------------------------------------------------------------------- the config

if TYPE_CHECKING:
    TrainParams = dict[str, Any]
    TrainBlock = dict[str, Any]
    TrainGrid = dict[str, Any]
else:
    TrainParams = create_model(
        "TrainParams",
        __base__=_TrainSettings,
        __doc__="sbi_engine.ratio.TrainConfig settings (members and seed are set per job).",
        **{k: _setting(k) for k in SETTABLE_TRAIN_KEYS},
    )
    TrainBlock = create_model(
        "TrainBlock",
        __base__=_TrainSettings,
        __doc__="A ratio ensemble's size, members per job and TrainConfig settings.",
        ensemble_size=(Maybe[Members], None),
        members_per_job=(Maybe[Members], None),
        **{k: _setting(k) for k in SETTABLE_TRAIN_KEYS},
    )
    TrainGrid = create_model(
        "TrainGrid",
        __base__=_TrainGrid,
        __doc__="A hyper-parameter grid: TrainConfig setting -> the values to train with.",
        **{k: _setting(k, listed=True) for k in SETTABLE_TRAIN_KEYS},
    )


class Training(StrictModel):
    """The ratio ensembles: size, members per job, TrainConfig settings, grid, per-task changes."""

    ensemble_size: Members = 4
    members_per_job: Members = 2
    seed: Seed = 0
    params: TrainParams = Field(default_factory=TrainParams)
    grid: TrainGrid = Field(default_factory=TrainGrid)
    tasks: Maybe[dict[StrictStr, TrainBlock]] = None
    resources: Resources = Resources()


class Systematic(StrictModel):
    """A shape systematic: up and down samples of one process."""

    name: NonEmpty
    process: StrictStr
    up: dict[str, Any]
    down: dict[str, Any]


class NormSystematic(StrictModel):
    """A yield-only systematic: [up, down] factors per process."""

    name: NonEmpty
    effects: Annotated[
        dict[StrictStr, Annotated[list[Factor], Field(min_length=2, max_length=2)]],
        Field(min_length=1),
    ]


class Poi(StrictModel):
    init: Maybe[PoiValue] = None
    bounds: Maybe[Annotated[list[PoiValue], Field(min_length=2, max_length=2)]] = None


def _asimov_or_table(value: Any) -> Any:
    if value == "asimov" or isinstance(value, dict):
        return value
    raise ValueError(f"{value!r} is not allowed; expected 'asimov' or a sample spec table")


FitData = Annotated[
    Any,
    pydantic.PlainValidator(_asimov_or_table),
    pydantic.WithJsonSchema({"anyOf": [{"const": "asimov"}, {"type": "object"}]}),
]


class Fit(StrictModel):
    """The fit stage and the model it fits (the last four keys come from analysis files)."""

    enabled: StrictBool = True
    data: FitData = "asimov"
    mu_true: MuTrue = 1.0
    nuisances: Annotated[list[StrictStr], Items] = []
    options: dict[str, Any] = Field(default_factory=dict)
    resources: Resources = Resources()
    coefficients: Maybe[dict[StrictStr, StrictStr | Number]] = None
    yields: Maybe[dict[StrictStr, Annotated[Number, Field(gt=0)]]] = None
    norm_systematics: Maybe[Annotated[list[NormSystematic], Items]] = None
    poi: Maybe[Poi] = None
    pois: Maybe[dict[StrictStr, Poi]] = None  # several POIs (the first is the primary one)
    norm_factors: Maybe[dict[StrictStr, Poi]] = None  # free normalisation factors


class Impacts(StrictModel):
    enabled: StrictBool = False
    nps_per_job: Count = 2
    resources: Resources = Resources()


class Scan(StrictModel):
    enabled: StrictBool = False
    poi_values: Annotated[list[PoiValue], Field(min_length=1, max_length=MAX_ITEMS)] = [
        0.0,
        0.5,
        1.0,
        1.5,
        2.0,
    ]
    points_per_job: Count = 5
    resources: Resources = Resources()


class Toys(StrictModel):
    enabled: StrictBool = False
    n_toys: Annotated[StrictInt, Field(ge=1, le=MAX_TOYS)] = 20
    toys_per_job: Annotated[StrictInt, Field(ge=1, le=MAX_TOYS)] = 10
    seed: Seed = 1000
    mu_true: MuTrue = 1.0
    resources: Resources = Resources()


class CampaignModel(StrictModel):
    """A campaign config (TOML or YAML): processes and their ratio tasks, training, the fit
    stages, where jobs run, and the cost estimate."""

    name: Name
    description: StrictStr = ""
    code_version: StrictStr = ""
    backend: Backend = Field(default_factory=Backend)
    processes: Annotated[dict[StrictStr, dict[str, Any]], Field(min_length=1, max_length=100)]
    reference: StrictStr
    systematics: Annotated[list[Systematic], Field(max_length=1000)] = []
    training: Training = Field(default_factory=Training)
    fit: Fit = Field(default_factory=Fit)
    impacts: Impacts = Field(default_factory=Impacts)
    scan: Scan = Field(default_factory=Scan)
    toys: Toys = Field(default_factory=Toys)
    estimate: Estimate = Field(default_factory=Estimate)


DEFAULTS: dict[str, Any] = defaults(CampaignModel)


def json_schema() -> dict[str, Any]:
    """The JSON schema of a campaign config (docs/schemas/campaign.schema.json)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **CampaignModel.model_json_schema(by_alias=True),
    }


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
