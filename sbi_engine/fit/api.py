"""``fit()``: the entry point that turns a workspace (or compiled model) into a FitResult."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from ..precision import enable_float64
from .compile import Compiled
from .minimize import STATUS_MESSAGES, newton_minimize, newton_minimize_host
from .model import Model, model_for
from .results import FitResult
from .workspace import Workspace

__all__ = [
    "fit",
    "covariance_from_hessian",
    "fixed_mask",
    "newton_executable",
    "resolution",
    "bound_mask",
    "RESOLUTION",
]

RESOLUTION = 1e-8  # a parameter's numerical resolution: this times max(1, its bound range)


def resolution(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Per parameter: ``RESOLUTION * max(1, upper - lower)`` (range 1 where a bound is infinite).

    A value closer than this to a bound is *at* the bound; an error below it is not a
    measurement but rounding (or the cap on d sqrt(mu)/dmu at mu = 0)."""
    width = np.asarray(upper, dtype=float) - np.asarray(lower, dtype=float)
    width = np.where(np.isfinite(width), width, 1.0)
    return RESOLUTION * np.maximum(1.0, width)


def bound_mask(
    theta: np.ndarray, lower: np.ndarray, upper: np.ndarray, fixed: np.ndarray
) -> np.ndarray:
    """Parameters (not fixed) within their resolution of a bound; works on stacks (..., P)."""
    res = resolution(lower, upper)
    with np.errstate(invalid="ignore"):
        near = (theta - lower <= res) | (upper - theta <= res)
    return near & ~np.asarray(fixed, dtype=bool)


def fixed_mask(
    model: Model, fixed: Mapping[str, float] | Iterable[str] | None
) -> tuple[np.ndarray, dict[str, float]]:
    """Boolean mask over parameters and the values to hold (a mapping) for ``fixed``."""
    mask = np.zeros(model.n_params, dtype=bool)
    values: dict[str, float] = {}
    if fixed is None:
        return mask, values
    items = fixed.items() if isinstance(fixed, Mapping) else ((n, None) for n in fixed)
    for name, v in items:
        if name not in model.index:
            raise KeyError(
                f"cannot fix unknown parameter {name!r}; the model has {list(model.names)}"
            )
        mask[model.index[name]] = True
        if v is not None:
            values[name] = float(v)
    return mask, values


def covariance_from_hessian(
    H: np.ndarray, fixed: np.ndarray, at_bound: np.ndarray | None = None
) -> tuple[np.ndarray, bool]:
    """2 H^-1 restricted to the non-fixed parameters (q = -2 ln L); (cov, positive definite).

    ``at_bound``: parameters held at a bound are left out like fixed ones (zero rows and
    columns): their rows of H describe a one-sided, possibly singular, edge (d sqrt(mu)/dmu at
    mu = 0 is capped at 5e49), and inverting them gives sub-resolution errors such as 1e-36."""
    free = ~fixed if at_bound is None else ~fixed & ~at_bound
    cov = np.zeros_like(H)
    Hf = H[np.ix_(free, free)]
    if Hf.size == 0:
        return cov, True
    try:
        L = np.linalg.cholesky(Hf)
        inv = np.linalg.solve(L.T, np.linalg.solve(L, np.eye(Hf.shape[0])))
        pd = True
    except np.linalg.LinAlgError:
        inv = np.linalg.pinv(Hf)
        pd = False
    cov[np.ix_(free, free)] = 2.0 * inv
    return cov, pd


def newton_executable(model: Model) -> Compiled:
    """The compiled whole-fit function for this model: tolerance and iteration cap are runtime
    arguments, so every fit, refit, scan point and Asimov fit shares one compilation."""
    cache = model.__dict__.setdefault("_fit_cache", {})
    if "newton" not in cache:

        def run(theta0, fixed, lower, upper, data, aux, edm_tol, max_iter):
            vgh = lambda t: model.q_vgh(t, data, aux)  # noqa: E731
            return newton_minimize(
                vgh, theta0, fixed, lower, upper, edm_tol=edm_tol, max_iter=max_iter
            )

        cache["newton"] = Compiled(run, "newton_fit", model.clock)
    return cache["newton"]


def _lbfgs(model: Model, theta0: np.ndarray, mask: np.ndarray, data: Any, aux: Any) -> np.ndarray:
    """L-BFGS-B (SciPy driver, JAX value and gradient) over the free parameters."""
    from scipy.optimize import minimize  # noqa: PLC0415

    free = ~mask

    def f(x):
        t = theta0.copy()
        t[free] = x
        v, g = model.value_and_grad(t, data, aux)
        if not np.isfinite(v):
            return 1e300, np.zeros_like(x)
        return v, g[free]

    bounds = list(zip(model.lower[free], model.upper[free]))
    res = minimize(
        f,
        theta0[free],
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-9},
    )
    t = theta0.copy()
    t[free] = res.x
    return t


def fit(
    target: Workspace | Model,
    *,
    fixed: Mapping[str, float] | Iterable[str] | None = None,
    init: Mapping[str, float] | np.ndarray | None = None,
    weights: Any = None,
    data: Any = None,
    aux: Mapping[str, float] | np.ndarray | None = None,
    backend: str = "newton",
    edm_tol: float = 1e-9,
    max_iter: int = 60,
    fallback: bool = True,
) -> FitResult:
    """Minimise q = -2 ln L; return best fit, covariance (2 H^-1) and a convergence report.

    Args:
        target: a Workspace (its compiled model is cached) or a Model.
        fixed: names to hold at their initial values, or {name: value} to hold at a value.
        init: starting values ({name: value} overrides, or a full parameter vector).
        weights / data: other event weights (Asimov, toys) or a full data pytree.
        aux: auxiliary values a_k ({name: value} or a vector); default from the workspace.
        backend: "newton" (JAX, exact Hessian; L-BFGS-B fallback) or "minuit" (iminuit
            MIGRAD + HESSE with numerical derivatives on the same NLL).

    >>> import numpy as np
    >>> from sbi_engine.fit import Workspace, fit
    >>> rng = np.random.default_rng(1); n = 2000
    >>> r_s = rng.uniform(0.5, 2.0, n); r_s /= r_s.mean(); r_b = np.ones(n)  # E_ref[r] = 1
    >>> ws = Workspace.from_arrays(pois={"mu": {"init": 1.0, "bounds": (0.0, 10.0)}},
    ...     processes={"S": {"yield": 50.0, "coefficient": "mu", "ratio": r_s},
    ...                "B": {"yield": 100.0, "coefficient": "1", "ratio": r_b}},
    ...     weights=(50 * r_s + 100 * r_b) / n * 1.0)
    >>> res = fit(ws)
    >>> res.converged, round(res.values["mu"], 6)
    (True, 1.0)
    """
    enable_float64()
    model = target if isinstance(target, Model) else model_for(target)
    mask, fixed_values = fixed_mask(model, fixed)
    if isinstance(init, Mapping) or init is None:
        theta0 = model.theta(init)
    else:
        theta0 = np.array(init, dtype=np.float64)
    for name, v in fixed_values.items():
        theta0[model.index[name]] = v
    if data is None:
        data = model.data if weights is None else model.with_weights(weights)
    if isinstance(aux, Mapping):
        a = model.aux.copy()
        for k, v in aux.items():
            a[model.nuisance_names.index(k)] = float(v)
        aux = a
    aux_arr = np.asarray(model.aux if aux is None else aux, dtype=np.float64)
    fixed_names = tuple(n for n, m in zip(model.names, mask) if m)
    if backend == "minuit":
        from .minuit import fit_minuit  # noqa: PLC0415

        return _flag_bounds(model, fit_minuit(model, theta0, mask, data, aux_arr), mask)
    if backend != "newton":
        raise ValueError(f"unknown backend {backend!r}; use 'newton' or 'minuit'")
    t0 = time.perf_counter()
    if getattr(model, "streaming", False):
        res = _fit_streamed(model, theta0, mask, aux_arr, edm_tol, max_iter, fixed_names, t0)
        return _escape_bounds(
            model,
            res,
            None,
            aux_arr,
            lambda start: _fit_streamed(
                model, start, mask, aux_arr, edm_tol, max_iter, fixed_names, t0
            ),
        )
    exe = newton_executable(model)
    args = (
        jnp.asarray(theta0),
        jnp.asarray(mask),
        jnp.asarray(model.lower),
        jnp.asarray(model.upper),
        data,
        jnp.asarray(aux_arr),
        jnp.asarray(edm_tol, jnp.float64),
        jnp.asarray(max_iter, jnp.int32),
    )
    state, status = exe(*args)
    status = int(status)
    method = "newton"
    n_iter = int(state.it)
    if status != 0 and fallback and status != 3:
        start = _lbfgs(model, np.asarray(state.theta), mask, data, aux_arr)
        state, status = exe(jnp.asarray(start), *args[1:])
        status = int(status)
        n_iter += int(state.it)
        method = "newton+lbfgs+newton"
    res = _result(model, state, status, mask, n_iter, method, fixed_names, t0)

    def rerun(start: np.ndarray) -> FitResult:
        st, code = exe(jnp.asarray(start), *args[1:])
        return _result(
            model, st, int(code), mask, n_iter + int(st.it), method + "+escape", fixed_names, t0
        )

    return _escape_bounds(model, res, data, aux_arr, rerun)


def _escape_bounds(
    model: Model, res: FitResult, data: Any, aux: np.ndarray, rerun: Any
) -> FitResult:
    """Restart from a point with lower q while the fit leaves a POI on a bound that is not
    the best fit (see `boundary_escape_start`); twice at most (an escape may end on the
    other bound)."""
    for _ in range(2):
        start = boundary_escape_start(model, res, data, aux)
        if start is None:
            break
        moved = rerun(start)
        if not (moved.converged and moved.q_min < res.q_min - ESCAPE_MIN_GAIN):
            break
        res = moved
    return res


ESCAPE_MIN_GAIN = 1e-6  # q must fall by more than this for a move off a bound to count
_ESCAPE_FRACTIONS = np.concatenate(
    [[1e-7, 1e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03], np.arange(1, 21) / 20]
)


def boundary_escape_start(
    model: Model, res: FitResult, data: Any, aux: np.ndarray
) -> np.ndarray | None:
    """A start with lower q than the fit's, for a POI the fit left at a bound; else None.

    Why: with coefficients such as sqrt(mu) the derivative at mu = 0 is infinite (capped),
    so Newton started at or sent to the bound takes vanishing steps there, and q(mu) can have
    a local minimum on the bound beside a deeper one inside. q is evaluated along the POI's
    range with the other parameters at their fitted values (an upper bound on the profiled
    q there): any point below the fit's q proves the bound is not the best fit.
    """
    best_q, best = res.q_min, None
    for name in res.at_bound:
        if name not in model.poi_names:
            continue
        i = model.index[name]
        lo, hi = float(model.lower[i]), float(model.upper[i])
        width = hi - lo if np.isfinite(hi - lo) else max(10.0, 10.0 * abs(float(model.init[i])))
        at_lo = abs(res.theta[i] - lo) <= abs(res.theta[i] - hi)
        for v in (lo + width * _ESCAPE_FRACTIONS) if at_lo else (hi - width * _ESCAPE_FRACTIONS):
            if not lo <= v <= hi:
                continue
            theta = res.theta.copy()
            theta[i] = v
            q = model.nll(theta, data, aux)
            if np.isfinite(q) and q < best_q - ESCAPE_MIN_GAIN:
                best_q, best = q, theta
    return best


def _fit_streamed(
    model: Model,
    theta0: np.ndarray,
    mask: np.ndarray,
    aux: np.ndarray,
    edm_tol: float,
    max_iter: int,
    fixed_names: tuple[str, ...],
    t0: float,
) -> FitResult:
    """Newton with the loop on the host: each iteration is one streamed Hessian pass."""
    state, status = newton_minimize_host(
        lambda t: model.value_grad_hessian(t, None, aux),
        theta0,
        mask,
        model.lower,
        model.upper,
        edm_tol=edm_tol,
        max_iter=max_iter,
        clock=model.clock,
    )
    return _result(model, state, status, mask, int(state.it), "newton (streamed)", fixed_names, t0)


def _result(
    model: Model,
    state: Any,
    status: int,
    mask: np.ndarray,
    n_iter: int,
    method: str,
    fixed_names: tuple[str, ...],
    t0: float,
) -> FitResult:
    H = np.asarray(state.H)
    theta = np.asarray(state.theta)
    at_bound = bound_mask(theta, model.lower, model.upper, mask)
    cov, pd = covariance_from_hessian(H, mask, at_bound)
    message = STATUS_MESSAGES[status]
    if status == 0 and not pd:
        status, message = 4, STATUS_MESSAGES[4]
    if status != 0:
        message += f" (EDM={float(state.edm):.3g}, {n_iter} iterations, method {method})"
    return _flag_bounds(
        model,
        FitResult(
            names=model.names,
            theta=np.asarray(state.theta),
            covariance=cov,
            hessian=H,
            q_min=float(state.q),
            edm=float(state.edm),
            converged=status == 0,
            status=status,
            message=message,
            n_iter=n_iter,
            fixed=fixed_names,
            method=method,
            time_s=time.perf_counter() - t0,
        ),
        mask,
    )


def _flag_bounds(model: Model, res: FitResult, mask: np.ndarray) -> FitResult:
    """``res`` with parameters at a bound (errors NaN, covariance rows zero) and errors below
    their parameter's resolution flagged by name."""
    at = bound_mask(res.theta, model.lower, model.upper, mask)
    cov = res.covariance.copy()
    cov[at, :] = 0.0
    cov[:, at] = 0.0
    sig = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    small = ~mask & ~at & (sig < resolution(model.lower, model.upper))
    names = res.names
    message = res.message
    if small.any():
        message += "; errors below the numerical resolution: " + ", ".join(
            n for n, s in zip(names, small) if s
        )
    return dataclasses.replace(
        res,
        covariance=cov,
        message=message,
        at_bound=tuple(n for n, a in zip(names, at) if a),
        below_resolution=tuple(n for n, s in zip(names, small) if s),
    )
