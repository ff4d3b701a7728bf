"""Fit results as frozen, JSON-serialisable dataclasses."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["FitResult", "to_jsonable", "dumps"]


def to_jsonable(obj: Any) -> Any:
    """NumPy/JAX scalars and arrays to plain lists/floats; inf/nan to None (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "to_dict") and not isinstance(obj, type):
        return to_jsonable(obj.to_dict())
    if (
        isinstance(obj, (np.ndarray,))
        or hasattr(obj, "__array__")
        and not isinstance(obj, (str, bytes))
    ):
        arr = np.asarray(obj)
        if arr.ndim == 0:
            return to_jsonable(arr.item())
        return [to_jsonable(v) for v in arr.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def dumps(obj: Any) -> str:
    return json.dumps(to_jsonable(obj), indent=2, sort_keys=True)


@dataclass(frozen=True, eq=False)
class FitResult:
    """A minimisation result.

    values / errors: best fit and symmetric (Hessian) errors by parameter name (0 for fixed);
    covariance: (P, P) in ``names`` order (zero rows/columns for fixed parameters);
    q_min: -2 ln L at the minimum; edm: estimated distance to minimum (g^T H^-1 g / 2);
    converged / status / message: the convergence report (message says why on failure);
    hessian: exact Hessian of q at the minimum; fixed: names held fixed in this fit;
    at_bound: free parameters that ended within their numerical resolution of a bound (held
    there: no Hessian error, ``errors`` is NaN and the covariance rows are zero, like fixed);
    below_resolution: parameters whose Hessian error is below their numerical resolution
    (1e-8 x max(1, bound range)): not a measurement, do not use it as one.
    """

    names: tuple[str, ...]
    theta: np.ndarray
    covariance: np.ndarray
    hessian: np.ndarray
    q_min: float
    edm: float
    converged: bool
    status: int
    message: str
    n_iter: int
    fixed: tuple[str, ...] = ()
    method: str = "newton"
    time_s: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)
    at_bound: tuple[str, ...] = ()
    below_resolution: tuple[str, ...] = ()

    @property
    def values(self) -> dict[str, float]:
        return {n: float(v) for n, v in zip(self.names, self.theta)}

    @property
    def errors(self) -> dict[str, float]:
        """Hessian errors; NaN for parameters at a bound (``at_bound``), 0 for fixed ones."""
        d = np.sqrt(np.clip(np.diag(self.covariance), 0.0, None))
        return {n: float("nan") if n in self.at_bound else float(v) for n, v in zip(self.names, d)}

    @property
    def correlation(self) -> np.ndarray:
        d = np.sqrt(np.clip(np.diag(self.covariance), 0.0, None))
        with np.errstate(divide="ignore", invalid="ignore"):
            c = self.covariance / np.outer(d, d)
        c = np.where(np.outer(d, d) > 0, c, 0.0)
        np.fill_diagonal(c, np.where(d > 0, 1.0, 0.0))
        return c

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(
            {
                "names": list(self.names),
                "values": self.values,
                "errors": self.errors,
                "covariance": self.covariance,
                "correlation": self.correlation,
                "q_min": self.q_min,
                "edm": self.edm,
                "converged": self.converged,
                "status": self.status,
                "message": self.message,
                "n_iter": self.n_iter,
                "fixed": list(self.fixed),
                "at_bound": list(self.at_bound),
                "below_resolution": list(self.below_resolution),
                "method": self.method,
                "time_s": self.time_s,
                **({"extra": dict(self.extra)} if self.extra else {}),
            }
        )
