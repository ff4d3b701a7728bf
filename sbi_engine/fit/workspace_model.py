"""The workspace JSON document as a declarative model: its one definition.

`WorkspaceDocument` validates a workspace file (`sbi_engine.fit.workspace.validate_document`)
and emits ``sbi_engine/schemas/workspace.schema.json`` (`json_schema()`; a test keeps the
shipped file equal to it, for tools that validate workspaces without this package). The
per-event arrays are references to ``.npy`` / ``.npz`` files; what the arrays hold (row
counts, finite positive ratios) is checked when they are loaded. Standard library and pydantic
only: importing this module does not import JAX.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt, StrictStr

from sbi_engine.config_model import Number, PathKey, StrictModel, validate

__all__ = ["WorkspaceDocument", "json_schema", "problems"]

Name = Annotated[StrictStr, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")]
Bounds = Annotated[list[Number], Field(min_length=2, max_length=2)]
PositiveNumber = Annotated[Number, Field(gt=0)]
Coefficient = Annotated[
    StrictStr | Number,
    Field(
        description="expression in POI / norm-factor names: numbers, + - * / **, sqrt(), exp(), log()"
    ),
]


class ArrayRef(StrictModel):
    """A per-event array: a .npy file, or a member of a .npz file (relative to the JSON file)."""

    file: Annotated[StrictStr, Field(pattern=r"\.(npy|npz)$")]
    key: StrictStr | None = None


class FreeParameter(StrictModel):
    """A POI or a free normalisation factor."""

    name: Name
    init: Number | None = None
    bounds: Bounds | None = None


class Parameters(StrictModel):
    pois: Annotated[list[FreeParameter], Field(min_length=1)]
    norm_factors: list[FreeParameter] | None = None


class Process(StrictModel):
    name: Name
    yield_: Number = Field(alias="yield")
    coefficient: Coefficient
    ratio: ArrayRef


class Constraint(StrictModel):
    type: Literal["gaussian"] | None = None
    aux: Number | None = None


class UpDownNumber(StrictModel):
    up: PositiveNumber
    down: PositiveNumber


class UpDownArrays(StrictModel):
    up: ArrayRef
    down: ArrayRef


class Effect(StrictModel):
    process: Name
    norm: UpDownNumber | None = None
    shape: UpDownArrays | None = None


class Nuisance(StrictModel):
    name: Name
    constraint: Constraint | None = None
    init: Number | None = None
    bounds: Bounds | None = None
    effects: list[Effect] | None = None


class ControlNorm(StrictModel):
    nuisance: Name
    up: list[PositiveNumber]
    down: list[PositiveNumber]


class ControlSample(StrictModel):
    name: Name
    yields: Annotated[list[Number], Field(min_length=1)]
    coefficient: Coefficient
    norm: list[ControlNorm] | None = None


class ControlRegion(StrictModel):
    name: Name
    observed: Annotated[list[Annotated[Number, Field(ge=0)]], Field(min_length=1)]
    samples: Annotated[list[ControlSample], Field(min_length=1)]


class Data(StrictModel):
    kind: Literal["observed", "asimov"]
    weights: ArrayRef
    n_events: Annotated[StrictInt, Field(ge=0)] | None = None
    norm_weights: ArrayRef | None = Field(
        default=None,
        description=(
            "optional weights v_i of the same rows as a sample of the reference density p_ref "
            "(sum_i v_i f(x_i) ~ integral p_ref f; only relative values matter), from which the "
            "model normalises the per-event shape factors, n_c(alpha) = sum_i v_i r_c delta_c / "
            "sum_i v_i r_c, and the ratios (r_c / mean_v r_c). Rows with weight 0 and v_i != 0 "
            "are normalisation-only events. Absent: derived as w_i / s_i(generated_at) for kind "
            "'asimov'; for kind 'observed' the shape factors are treated as normalised (n_c = 1)"
        ),
    )
    generated_at: dict[str, Number] | None = Field(
        default=None,
        description=(
            "parameter values at which the (weighted) events represent the expected "
            "distribution; used for Asimov data and toys"
        ),
    )


class WorkspaceDocument(StrictModel):
    """nsbi-workbench unbinned fit workspace, version 1.

    Parameters, processes with per-event ratio arrays, nuisance parameters with normalisation
    and per-event shape effects, optional binned control regions, and data (observed events or
    weighted Asimov events). Per-event arrays live in .npy/.npz files referenced relative to
    the JSON file.
    """

    format: Literal["nsbi-workspace"]
    version: Literal[1]
    metadata: dict[str, Any] | None = None
    parameters: Parameters
    processes: Annotated[list[Process], Field(min_length=1)]
    nuisances: list[Nuisance] | None = None
    control_regions: list[ControlRegion] | None = None
    data: Data


def problems(doc: Any) -> list[tuple[PathKey, str]]:
    """Every problem of a workspace document as (key path, message); empty when it is valid."""
    return validate(WorkspaceDocument, doc)[1]


def json_schema() -> dict[str, Any]:
    """The JSON schema of the workspace file (what ``sbi_engine/schemas`` ships)."""
    schema = WorkspaceDocument.model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "nsbi-workspace-1.json",
        **schema,
    }


def schema_text() -> str:
    """The schema as the shipped file holds it (sorted keys, two-space indent)."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
