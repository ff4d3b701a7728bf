"""The bookkeeping of the static checks: problems by key path, and the resolved model.

`Checker` collects (key path, message) pairs while the checks walk the parsed YAML (the caller
turns key paths into line numbers); `Resolved` is what the walk produces for `spec.Analysis`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import jsonschema

from backend import campaigns
from backend.analysis.spec_yaml import PathKey

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


class PoiDefaults(TypedDict):
    """The parameter of interest of an analysis without a `poi` block."""

    init: float
    bounds: list[float]


DEFAULT_POI: PoiDefaults = {"init": 1.0, "bounds": [0.0, 20.0]}


@dataclass
class Resolved:
    """The analysis after the static checks, in the shape `spec.Analysis` translates."""

    name: str = ""
    description: str = ""
    samples: dict[str, dict[str, Any]] = field(default_factory=dict)  # named samples, resolved
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)  # process -> sample spec
    coefficients: dict[str, str] = field(default_factory=dict)
    yields: dict[str, float] = field(default_factory=dict)
    reference: str = ""
    poi: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_POI))
    shape_systematics: list[dict[str, Any]] = field(
        default_factory=list
    )  # {name, process, up, down}
    norm_systematics: list[dict[str, Any]] = field(
        default_factory=list
    )  # {name, effects: {p: [u, d]}}
    training: dict[str, Any] = field(default_factory=dict)
    data: Any = "asimov"
    mu_true: float = 1.0
    compute: dict[str, dict[str, Any]] = field(default_factory=dict)
    backend: dict[str, Any] = field(default_factory=dict)
    estimate: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    # every sample in use, once, for the content checks: (key path of its definition, resolved spec)
    used_samples: list[tuple[PathKey, dict[str, Any]]] = field(default_factory=list)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def kind(v: Any) -> str:
    if v is None:
        return "nothing (null)"
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }.get(type(v), type(v).__name__) + ("" if isinstance(v, (dict, list)) else f" {v!r}")


class Checker:
    """Collects (key path, message) problems while walking the file."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.problems: list[tuple[PathKey, str]] = []

    def add(self, path: PathKey, message: str) -> None:
        self.problems.append((tuple(path), message))

    def mapping(
        self,
        path: PathKey,
        value: Any,
        allowed: tuple[str, ...] | None,
        what: str,
        required: tuple[str, ...] = (),
    ) -> dict[str, Any] | None:
        """`value` if it is a mapping; unknown keys (when `allowed`) and missing ones reported."""
        if not isinstance(value, Mapping):
            self.add(path, f"expected {what} (a mapping), got {kind(value)}")
            return None
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    self.add(
                        (*path, str(key)),
                        f"unknown key {key!r}; allowed keys: {', '.join(allowed)}",
                    )
        for key in required:
            if key not in value:
                self.add(path, f"missing required key {key!r}")
        return {str(k): v for k, v in value.items()}

    def string(self, path: PathKey, value: Any, what: str = "a string") -> str | None:
        if isinstance(value, str) and value.strip():
            return value
        self.add(path, f"expected {what}, got {kind(value)}")
        return None

    def name(self, path: PathKey, value: Any, what: str) -> bool:
        if not isinstance(value, str) or not NAME_RE.match(value):
            self.add(
                path,
                f"{what} name {value!r} may only use letters, digits and _ . + - (and not start with . + -)",
            )
            return False
        return True

    def integer(self, path: PathKey, value: Any, minimum: int) -> int | None:
        if is_int(value) and value >= minimum:
            return value
        self.add(path, f"expected an integer >= {minimum}, got {kind(value)}")
        return None

    def number(self, path: PathKey, value: Any, *, positive: bool = False) -> float | None:
        if is_number(value) and (not positive or value > 0):
            return float(value)
        self.add(path, f"expected a {'positive ' if positive else ''}number, got {kind(value)}")
        return None

    def boolean(self, path: PathKey, value: Any) -> bool | None:
        if isinstance(value, bool):
            return value
        self.add(path, f"expected true or false, got {kind(value)}")
        return None

    def schema(self, path: PathKey, value: Any, schema: Mapping[str, Any]) -> bool:
        """Check `value` against a fragment of the campaign schema; each error at its own key."""
        ok = True
        for err in jsonschema.Draft202012Validator(schema).iter_errors(value):
            ok = False
            where = (*path, *err.absolute_path)
            if err.validator == "additionalProperties" and err.validator_value is False:
                known = sorted(err.schema.get("properties", {}))
                for extra in sorted(set(err.instance) - set(known)):
                    self.add(
                        (*where, extra), f"unknown key {extra!r}; allowed keys: {', '.join(known)}"
                    )
            else:
                self.add(where, campaigns.schema_error_message(err))
        return ok
