"""The analysis file as declarative models: its keys, types, ranges and defaults, once.

`AnalysisFile` is the whole file and what validates it: `spec_check` runs it over the parsed
YAML (every error at its key path, so its line) and then applies, as code, only the rules that
link keys: sample references, coefficient expressions, file existence, task names, features,
values inside poi.bounds. `json_schema()` is the file's JSON schema
(docs/schemas/analysis.schema.json; a test keeps it equal). Blocks shared with campaign
configs (backend, estimate, resources, demo samples, and the training settings derived from
`sbi_engine.ratio.TrainConfig`) come from `backend.campaign_model`. Unions are discriminated
(`choose`), so a value is checked against the one form it has. Standard library and pydantic
only: no JAX.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import AfterValidator, Field, StrictBool, StrictInt, StrictStr, Tag, create_model

from backend.campaign_model import (
    MAX_ITEMS,
    MAX_SEED,
    MAX_TOYS,
    Backend,
    Count,
    DemoSample,
    Estimate,
    MuTrue,
    PoiValue,
    Resources,
    TrainBlock,
    TrainGrid,
)
from sbi_engine.config_model import OMITTED, Maybe, Number, StrictModel, choose

T = TypeVar("T")
POI = "mu"  # the fit jobs have one parameter of interest, called mu
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$"
_NAME_RE = re.compile(NAME_PATTERN)


def _parameter_name(value: str) -> str:
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value):
        raise ValueError(
            f"parameter name {value!r}: letters, digits and _ only, not starting with a digit "
            "(it is a variable of the coefficient expressions)"
        )
    return value


def _named(what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(
                f"{what} name {value!r} may only use letters, digits and _ . + - "
                "(and not start with . + -)"
            )
        return value

    return check


_PATTERN = Field(json_schema_extra={"pattern": NAME_PATTERN})
AnalysisName = Annotated[StrictStr, AfterValidator(_named("analysis")), _PATTERN]
SampleName = Annotated[StrictStr, AfterValidator(_named("sample")), _PATTERN]
ProcessName = Annotated[StrictStr, AfterValidator(_named("process")), _PATTERN]
SystematicName = Annotated[StrictStr, AfterValidator(_named("systematic")), _PATTERN]
ParameterName = Annotated[
    StrictStr,
    Field(json_schema_extra={"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"}),
    AfterValidator(lambda v: _parameter_name(v)),
]
NonEmpty = Annotated[StrictStr, Field(min_length=1)]
Seed = Annotated[StrictInt, Field(ge=0, le=MAX_SEED)]


class Poi(StrictModel):
    """The parameter of interest mu: start value and range."""

    init: PoiValue = 1.0
    bounds: Annotated[list[PoiValue], Field(min_length=2, max_length=2)] = [0.0, 20.0]


class Uncertainty(StrictModel):
    """Which learned-model error components enter the total, and how they are measured."""

    include: list[Literal["nn", "sim"]] = ["nn", "sim"]
    nn_variants: Maybe[Annotated[StrictInt, Field(ge=0, le=1000)]] = None
    sim_variants: Maybe[Annotated[StrictInt, Field(ge=0, le=1000)]] = None
    closure: Maybe[StrictBool] = None
    # true (at most 32 ratio tasks), false, or the number of tasks to measure
    calibration_effect: Maybe[StrictBool | Annotated[StrictInt, Field(ge=0, le=10000)]] = None


class FitOptions(StrictModel, extra="allow"):
    """Options of the fit the engine reads (others pass through to it)."""

    uncertainty: Maybe[Uncertainty] = None
    resolve_shapes: Maybe[StrictBool] = None
    shrink_noise: Maybe[StrictBool] = None


class FitStage(StrictModel):
    enabled: StrictBool = True
    options: Maybe[FitOptions] = None
    resources: Maybe[Resources] = None


class ImpactsStage(StrictModel):
    enabled: StrictBool = True
    nps_per_job: Maybe[Count] = None
    resources: Maybe[Resources] = None


class ScanStage(StrictModel):
    enabled: StrictBool = True
    poi_values: Maybe[Annotated[list[PoiValue], Field(min_length=1, max_length=MAX_ITEMS)]] = None
    points_per_job: Maybe[Count] = None
    resources: Maybe[Resources] = None


class ToysStage(StrictModel):
    enabled: StrictBool = True
    n_toys: Maybe[Annotated[StrictInt, Field(ge=1, le=MAX_TOYS)]] = None
    toys_per_job: Maybe[Annotated[StrictInt, Field(ge=1, le=MAX_TOYS)]] = None
    seed: Maybe[Seed] = None
    mu_true: Maybe[MuTrue] = None
    resources: Maybe[Resources] = None


def _open_unit(value: float) -> float:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{value:g} must lie strictly between 0 and 1 (e.g. 0.95)")
    return value


CL = Annotated[Number, AfterValidator(_open_unit)]
MIN_LIMIT_TOYS = 10
LIMIT_METHODS = ("asymptotic", "toys")
DEFAULT_LIMIT_TOYS = 1000


class LimitsStage(StrictModel):
    """A CLs upper limit on mu (observed, expected with the +-1 / +-2 sigma band) and the
    discovery significance q_0 / Z, computed in the fit job (`sbi_engine.fit.limits`)."""

    key_hints: ClassVar[dict[str, str]] = {
        "n_toys": "the limit's toy count is `toys` (with method: toys)",
        "resources": "limits run in the fit job: set compute.fit.resources",
    }

    enabled: StrictBool = True
    cl: CL = Field(default=0.95, description="confidence level, strictly between 0 and 1")
    method: Literal[LIMIT_METHODS] = Field(  # type: ignore[valid-type]
        default="asymptotic",
        description="asymptotic formulae (CCGV) or toy pseudo-experiments",
    )
    toys: Maybe[Annotated[StrictInt, Field(ge=MIN_LIMIT_TOYS, le=MAX_TOYS)]] = Field(
        default=None,
        description=f"toys per hypothesis and tested mu (method: toys; default {DEFAULT_LIMIT_TOYS})",
    )
    seed: Maybe[Seed] = None


class ExpectedStage(StrictModel):
    """The expected (blinded) result: the fit of the model's Asimov data at `mu` with the
    nuisances at nominal, never reading the data, computed in the fit job."""

    key_hints: ClassVar[dict[str, str]] = {
        "mu_true": "the Asimov signal strength of the expected result is `mu`",
        "resources": "the expected result runs in the fit job: set compute.fit.resources",
    }

    enabled: StrictBool = True
    mu: MuTrue = Field(default=1.0, description="the Asimov data's mu (inside poi.bounds)")


STAGES: dict[str, type[StrictModel]] = {
    "fit": FitStage,
    "impacts": ImpactsStage,
    "scan": ScanStage,
    "toys": ToysStage,
    "limits": LimitsStage,
    "expected": ExpectedStage,
}
# stages computed inside the fit job (their settings travel in its options), not jobs of their own
IN_FIT_JOB = ("limits", "expected")


def _stage(model: type[StrictModel]) -> Any:
    return Annotated[
        Annotated[StrictBool, Tag("bool")] | Annotated[model, Tag("settings")],
        choose(
            "expected true/false or the stage's settings (a mapping)",
            lambda v: (
                "bool" if isinstance(v, bool) else "settings" if isinstance(v, Mapping) else None
            ),
        ),
    ]


class Compute(StrictModel):
    """What to compute: each stage true / false or its settings."""

    fit: Maybe[_stage(FitStage)] = None  # type: ignore[valid-type]
    impacts: Maybe[_stage(ImpactsStage)] = None  # type: ignore[valid-type]
    scan: Maybe[_stage(ScanStage)] = None  # type: ignore[valid-type]
    toys: Maybe[_stage(ToysStage)] = None  # type: ignore[valid-type]
    limits: Maybe[_stage(LimitsStage)] = None  # type: ignore[valid-type]
    expected: Maybe[_stage(ExpectedStage)] = None  # type: ignore[valid-type]


class Report(StrictModel):
    dir: Maybe[NonEmpty] = None
    title: Maybe[NonEmpty] = None


class DemoRef(StrictModel):
    """A built-in demo sample."""

    allowed_note: ClassVar[str] = " (a demo sample has only the key 'demo')"

    demo: DemoSample


def _is(*types: type) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, types) and not isinstance(v, bool)


FORMATS = ("root", "parquet", "pq", "hdf5", "h5", "hdf", "numpy", "npz", "npy")
Features = Annotated[
    Annotated[dict[StrictStr, NonEmpty], Field(min_length=1), Tag("map")]
    | Annotated[list[NonEmpty], Field(min_length=1), Tag("list")],
    choose(
        "expected {name: expression} or a list of column names",
        lambda v: "map" if isinstance(v, Mapping) else "list" if isinstance(v, list) else None,
    ),
]
# A file sample's key that sample_defaults may give: null removes the default (`weight: null`).
Clearable = Annotated[T | None, OMITTED]
_SPLIT_HINT = "an eval_sample is used whole: it is the evaluation part"


class _FileKeys(StrictModel):
    """The keys every file sample has (a sample's own and its eval_sample's)."""

    path: Maybe[NonEmpty] = None
    format: Clearable[Literal[FORMATS]] = None  # type: ignore[valid-type]
    tree: Clearable[NonEmpty] = None
    features: Clearable[Features] = None
    weight: Clearable[NonEmpty] = None
    selection: Clearable[NonEmpty] = None
    allow_negative_weights: Clearable[StrictBool] = None
    columns: Clearable[list[StrictStr]] = None
    entry_stop: Clearable[Annotated[StrictInt, Field(ge=1)]] = None


class EvalSample(_FileKeys):
    """A file of evaluation events for a file sample (used whole: no split keys)."""

    key_hints: ClassVar[dict[str, str]] = {
        "eval_fraction": _SPLIT_HINT,
        "split_by": _SPLIT_HINT,
        "eval_sample": _SPLIT_HINT,
        "demo": "an eval_sample is a file sample; demo samples get their evaluation events "
        "from a new seed automatically",
    }

    path: NonEmpty


class FileSample(_FileKeys):
    """A sample read from a file (keys missing here come from `sample_defaults`)."""

    allowed_note: ClassVar[str] = " (or 'demo' alone)"

    eval_fraction: Clearable[
        Annotated[Number, Field(gt=0, lt=1, description="the share of events kept for evaluation")]
    ] = None
    eval_sample: Maybe[EvalSample] = Field(
        default=None, description="a file sample of evaluation events (used whole)"
    )
    split_by: Clearable[NonEmpty] = Field(
        default=None, description="an expression (e.g. an event-number column) that splits"
    )


FILE_KEYS: tuple[str, ...] = tuple(FileSample.model_fields)
SPLIT_KEYS: tuple[str, ...] = ("eval_fraction", "eval_sample", "split_by")
_DEFAULT_KEYS = tuple(k for k in FILE_KEYS if k not in ("path", "eval_sample"))

if TYPE_CHECKING:
    SampleDefaults = dict[str, Any]
else:
    SampleDefaults = create_model(
        "SampleDefaults",
        __base__=StrictModel,
        __doc__="Keys every file sample gets unless it gives them itself.",
        **{
            k: (FileSample.model_fields[k].annotation, FileSample.model_fields[k])
            for k in _DEFAULT_KEYS
        },
    )


def _sample_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "name"
    if isinstance(value, Mapping):
        return "demo" if "demo" in value else "file"
    return None


_SAMPLE = "({demo: {...}} or {path: ..., features: ...})"
Sample = Annotated[
    Annotated[DemoRef, Tag("demo")] | Annotated[FileSample, Tag("file")],
    choose(
        f"expected a sample {_SAMPLE}", lambda v: None if isinstance(v, str) else _sample_kind(v)
    ),
]
SampleOrName = Annotated[
    Annotated[StrictStr, Tag("name"), Field(description="a key of `samples`")]
    | Annotated[DemoRef, Tag("demo")]
    | Annotated[FileSample, Tag("file")],
    choose(f"expected a sample name (a key of samples) or a sample {_SAMPLE}", _sample_kind),
]
Coefficient = Annotated[
    Annotated[StrictStr, Tag("expression")] | Annotated[Number, Tag("number")],
    choose(
        f"expected an expression of {POI} (e.g. 'mu - sqrt(mu)')",
        lambda v: "expression" if isinstance(v, str) else "number" if _is(int, float)(v) else None,
    ),
    Field(description="its factor as a function of mu, e.g. 'mu - sqrt(mu)'"),
]


class Process(StrictModel):
    missing_hints: ClassVar[dict[str, str]] = {
        "sample": "a sample name or an inline sample",
        "coefficient": f"its factor as a function of {POI}, e.g. 'mu - sqrt(mu)' (S), "
        "'sqrt(mu)' (SBI), '1 - sqrt(mu)' (B)",
    }

    sample: SampleOrName
    coefficient: Coefficient
    yield_: Maybe[Annotated[Number, Field(gt=0)]] = Field(default=None, alias="yield")


UpDown = Annotated[
    list[Annotated[Number, Field(gt=0, le=1e6)]],
    Field(min_length=2, max_length=2, description="[up, down] yield factors, e.g. [1.025, 0.975]"),
]


class ShapePair(StrictModel):
    up: SampleOrName
    down: SampleOrName


class Systematic(StrictModel):
    shape: Maybe[dict[StrictStr, ShapePair]] = None
    norm: Maybe[
        Annotated[
            Annotated[UpDown, Tag("all")] | Annotated[dict[StrictStr, UpDown], Tag("each")],
            choose(
                "expected [up, down] for every process, or {process: [up, down]}",
                lambda v: (
                    "all" if isinstance(v, list) else "each" if isinstance(v, Mapping) else None
                ),
            ),
        ]
    ] = None


class Training(StrictModel):
    """The ratio ensembles: defaults for every task, a grid, per-task settings, seed, machine."""

    defaults: TrainBlock = Field(
        default_factory=TrainBlock,
        description="ensemble_size, members_per_job and sbi_engine.ratio.TrainConfig settings",
    )
    seed: Seed = 0
    grid: TrainGrid = Field(default_factory=TrainGrid)
    tasks: dict[StrictStr, TrainBlock] = Field(default_factory=dict)
    resources: Maybe[Resources] = None


class Asimov(StrictModel):
    mu: MuTrue = 1.0


class AsimovData(StrictModel):
    asimov: Asimov


class ObservedData(StrictModel):
    observed: SampleOrName


def _data_kind(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return "asimov" if "asimov" in value else "observed" if "observed" in value else None
    return None


Data = Annotated[
    Annotated[AsimovData, Tag("asimov")] | Annotated[ObservedData, Tag("observed")],
    choose("expected {asimov: {mu: value}} or {observed: sample}", _data_kind),
]


class AnalysisFile(StrictModel):
    """An NSBI analysis in one YAML file (docs/analysis.md)."""

    name: AnalysisName
    description: Maybe[NonEmpty] = None
    samples: Maybe[dict[SampleName, Sample]] = None
    sample_defaults: Maybe[SampleDefaults] = None
    processes: Annotated[dict[ProcessName, Process], Field(min_length=1)]
    reference: NonEmpty
    poi: Poi = Field(default_factory=Poi)
    pois: Maybe[Annotated[dict[ParameterName, Poi], Field(min_length=1, max_length=8)]] = Field(
        default=None,
        description="several parameters of interest named in the coefficients, instead of "
        "poi (mu); the first is the primary one (data.asimov.mu, limits, expected, scans)",
    )
    norm_factors: Maybe[Annotated[dict[ParameterName, Poi], Field(max_length=32)]] = Field(
        default=None,
        description="free normalisation factors named in the coefficients (fitted, "
        "not parameters of interest)",
    )
    systematics: Maybe[dict[SystematicName, Systematic]] = None
    training: Maybe[Training] = None
    data: Data = Field(default_factory=lambda: AsimovData(asimov=Asimov()))
    compute: Maybe[Compute] = None
    backend: Maybe[Backend] = None
    estimate: Maybe[Estimate] = None
    report: Maybe[Report] = None


TOP_KEYS: tuple[str, ...] = tuple(AnalysisFile.model_fields)
REPORT_KEYS: tuple[str, ...] = tuple(Report.model_fields)
UNCERTAINTY_KEYS: tuple[str, ...] = tuple(Uncertainty.model_fields)


def json_schema() -> dict[str, Any]:
    """The JSON schema of an analysis file (docs/schemas/analysis.schema.json)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **AnalysisFile.model_json_schema(by_alias=True),
    }


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
