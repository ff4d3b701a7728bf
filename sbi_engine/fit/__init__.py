"""The unbinned profile-likelihood fit: workspace, chunked NLL, exact Hessian, minimisers,
impacts, scans and toys.

>>> import numpy as np
>>> from sbi_engine.fit import Workspace, fit
>>> n = 1000; rng = np.random.default_rng(0)
>>> r_S, r_SBI, r_B = (r / r.mean() for r in (rng.uniform(0.5, 2, n), rng.uniform(0.8, 1.2, n), np.ones(n)))
>>> ws = Workspace.from_arrays(
...     pois={"mu": {"init": 1.0, "bounds": (0.0, 10.0)}},
...     processes={"S": {"yield": 20.0, "coefficient": "mu - sqrt(mu)", "ratio": r_S},
...                "SBI": {"yield": 110.0, "coefficient": "sqrt(mu)", "ratio": r_SBI},
...                "B": {"yield": 100.0, "coefficient": "1 - sqrt(mu)", "ratio": r_B}},
...     weights=110.0 * r_SBI / n,
...     nuisances=[{"name": "lumi", "effects": {c: {"norm": (1.02, 0.98)} for c in ("S", "SBI", "B")}}])
>>> res = fit(ws)
>>> res.converged, abs(res.values["mu"] - 1.0) < 1e-6
(True, True)
"""

from .api import covariance_from_hessian, fit
from .expr import Expression, ExpressionError, parse_expression
from .limits import Discovery, UpperLimit, discovery, test_statistic, toy_cls, upper_limit
from .model import Model, model_for
from .results import FitResult, dumps, to_jsonable
from .variations import Variant, VariantFits, bootstrap_norm_variants, refit_variants
from .workspace import Workspace, WorkspaceError, validate_document

__all__ = [
    "Workspace",
    "WorkspaceError",
    "validate_document",
    "Expression",
    "ExpressionError",
    "parse_expression",
    "Model",
    "model_for",
    "fit",
    "FitResult",
    "covariance_from_hessian",
    "dumps",
    "to_jsonable",
    "Variant",
    "VariantFits",
    "refit_variants",
    "bootstrap_norm_variants",
    "UpperLimit",
    "Discovery",
    "upper_limit",
    "discovery",
    "test_statistic",
    "toy_cls",
]
