"""Benchmark problems with exact likelihoods, for validating learned density ratios.

Each problem (none of them the built-in demo, `sbi_engine/demo.py`) has closed-form,
normalised densities p_c(x | alpha) and yields nu_c(alpha) for its processes, exact samplers,
shape and norm systematics, and writes Parquet samples, pseudo-data and an analysis file
(`nsbi problems generate`). `exact_workspace` / `exact_reference_fit` give the fit with the
exact ratios, from the project's fit and from an independent NumPy + iminuit NLL.

>>> from sbi_engine.problems import list_problems, get_problem
>>> list_problems()
['interference', 'interference_reweighted', 'correlated5', 'subnoise_syst', 'negative_weights', 'low_stats', 'high_stats']
>>> get_problem("correlated5").processes
('S', 'B')
"""

from __future__ import annotations

from .base import BenchmarkProblem, coefficient_value, read_parquet, write_parquet
from .correlated5 import Correlated5Problem
from .interference import InterferenceProblem, InterferenceReweightedProblem
from .negative_weights import NegativeWeightsProblem
from .reference import NumpyNLL, exact_reference_fit, exact_workspace, minuit_fit
from .stats import HighStatsProblem, LowStatsProblem
from .subnoise_syst import SubnoiseSystProblem

__all__ = [
    "BenchmarkProblem",
    "list_problems",
    "get_problem",
    "exact_workspace",
    "exact_reference_fit",
    "NumpyNLL",
    "minuit_fit",
    "coefficient_value",
    "read_parquet",
    "write_parquet",
]

_REGISTRY: dict[str, type[BenchmarkProblem]] = {
    cls.name: cls
    for cls in (
        InterferenceProblem,
        InterferenceReweightedProblem,
        Correlated5Problem,
        SubnoiseSystProblem,
        NegativeWeightsProblem,
        LowStatsProblem,
        HighStatsProblem,
    )
}


def list_problems() -> list[str]:
    """Names of the benchmark problems."""
    return list(_REGISTRY)


def get_problem(name: str) -> BenchmarkProblem:
    """A fresh instance of the named problem."""
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise ValueError(
            f"unknown benchmark problem {name!r}; known: {', '.join(_REGISTRY)}"
        ) from None
