"""The bookkeeping of the checks: problems by key path, and the resolved model.

`Checker` holds the problems the whole-file model (`spec_models.AnalysisFile`) found and
collects those of the rules that link keys (the caller turns key paths into line numbers);
`ok(path)` says whether the model accepted everything at and below a key, so the rules only
read values whose shape and type the model has checked. `Resolved` is what the checks produce
for `spec.Analysis`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from backend.analysis.spec_models import Poi
from backend.analysis.spec_yaml import PathKey


class PoiDefaults(TypedDict):
    """The parameter of interest of an analysis without a `poi` block."""

    init: float
    bounds: list[float]


DEFAULT_POI: PoiDefaults = {"init": Poi().init, "bounds": list(Poi().bounds)}


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
    poi: dict[str, Any] = field(
        default_factory=lambda: {"init": DEFAULT_POI["init"], "bounds": list(DEFAULT_POI["bounds"])}
    )
    pois: dict[str, dict[str, Any]] = field(default_factory=dict)  # several POIs (else poi)
    norm_factors: dict[str, dict[str, Any]] = field(default_factory=dict)
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


class Checker:
    """The model's problems, and those the cross-key rules add while walking the file."""

    def __init__(self, base_dir: Path, model_problems: list[tuple[PathKey, str]]) -> None:
        self.base_dir = base_dir
        self.problems: list[tuple[PathKey, str]] = list(model_problems)
        self._at = [p for p, _ in model_problems]
        # a block that lacks a required key still has sound keys below it
        self._broken = [p for p, m in model_problems if not m.startswith("missing required key")]

    def add(self, path: PathKey, message: str) -> None:
        self.problems.append((tuple(path), message))

    def ok(self, path: PathKey) -> bool:
        """Whether the model accepted the value at `path`: no problem at it or below it, and
        no parent of it has the wrong type."""
        n = len(path)
        if any(p[:n] == path for p in self._at):
            return False
        return not any(len(p) < n and path[: len(p)] == p for p in self._broken)
