"""The fit with exact ratios: the project's workspace, and an independent NumPy + iminuit NLL.

Both implement the project's model (see the docstring of ``sbi_engine/fit/model.py``):

    q(theta) = 2 sum_c A_c n_c(alpha) - 2 sum_i w_i ln( sum_c A_c k_c r_c(x_i) delta_c(x_i; alpha) )
               + sum_k alpha_k^2,

A_c = m_c(mu) nu_c prod_k g(alpha_k; yield ratios), delta_c = prod_k g(alpha_k; per-event shape
ratios), g the HistFactory code-4 interpolation, and, given a normalisation sample (weights
v_j of simulated reference events) and any shape effect: n_c(alpha) = sum_j v_j r_c delta_c /
sum_j v_j r_c for processes with shape effects (1 otherwise) and k_c = sum_j v_j / sum_j v_j r_c.
`NumpyNLL` writes this in plain NumPy from the definitions (code 4 from its six matching
conditions), sharing no code with ``sbi_engine.fit``; `minuit_fit` minimises it with iminuit
(MIGRAD, then HESSE; iminuit is a runtime dependency of the project).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from sbi_engine.sample import Sample

from .base import BenchmarkProblem, coefficient_value

__all__ = ["exact_workspace", "exact_reference_fit", "NumpyNLL", "minuit_fit", "code4"]

NP_BOUNDS = (-5.0, 5.0)


def _effects(problem: BenchmarkProblem, x: np.ndarray) -> dict[str, dict[str, dict[str, Any]]]:
    """{nuisance: {process: {"norm": (up, down), "shape": (up (n,), down (n,))}}} with exact values."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for k in problem.nuisances:
        eff: dict[str, dict[str, Any]] = {}
        for c in problem.processes:
            nu0 = problem.yield_(c)
            norm = (problem.yield_(c, {k: 1.0}) / nu0, problem.yield_(c, {k: -1.0}) / nu0)
            d: dict[str, Any] = {}
            if problem.affects_shape(k, c):
                d["shape"] = (
                    np.exp(problem.shape_log_ratio(c, k, x, 1.0)),
                    np.exp(problem.shape_log_ratio(c, k, x, -1.0)),
                )
            if abs(norm[0] - 1.0) > 1e-15 or abs(norm[1] - 1.0) > 1e-15 or d:
                d["norm"] = norm
            if d:
                eff[c] = d
        out[k] = eff
    for k, effects in problem.norm_only.items():
        eff = out.setdefault(k, {})
        for c, (up, down) in effects.items():
            old = eff.setdefault(c, {}).get("norm")
            eff[c]["norm"] = (
                (float(up), float(down)) if old is None else (old[0] * up, old[1] * down)
            )
    return out


def _stack(data: Sample, norm: Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if tuple(data.names) != tuple(norm.names):
        raise ValueError(
            f"data features {list(data.names)} differ from the normalisation sample's {list(norm.names)}"
        )
    x = np.concatenate([data.features, norm.features]).astype(np.float64)
    w = np.concatenate([data.weights, np.zeros(len(norm))])
    v = np.concatenate([np.zeros(len(data)), norm.weights])
    return x, w, v


def exact_workspace(problem: BenchmarkProblem, data: Sample, norm: Sample):
    """The project's fit workspace with exact ratios r_c = p_c / p_ref, exact shape ratios
    p_c(x | alpha_k = +-1) / p_c(x | 0) and exact yield ratios, norm-only systematics included.

    `norm` (a simulation of the reference process) is appended as normalisation-only rows
    (weight 0, ``norm_weights`` its weights), as the campaign's fit job does for observed data.
    """
    from sbi_engine.fit import Workspace  # noqa: PLC0415

    x, w, v = _stack(data, norm)
    processes = {
        c: {
            "yield": problem.yield_(c),
            "coefficient": problem.coefficients[c],
            "ratio": np.exp(problem.log_ratio(c, x)),
        }
        for c in problem.processes
    }
    effects = _effects(problem, x)
    nuisances = [
        {"name": k, "bounds": NP_BOUNDS, "effects": effects.get(k, {})}
        for k in problem.parameter_names
    ]
    return Workspace.from_arrays(
        pois={"mu": {"init": 1.0, "bounds": tuple(problem.mu_bounds)}},
        processes=processes,
        weights=w,
        nuisances=nuisances,
        norm_weights=v,
        data_kind="observed" if np.all(data.weights == 1.0) else "asimov",
        metadata={
            "benchmark": problem.name,
            "exact": True,
            "data": data.source,
            "norm": norm.source,
        },
    )


# --------------------------------------------------------------------------- independent NumPy NLL


def _code4_matrix() -> np.ndarray:
    """Rows: the six conditions on p(a) = 1 + sum_{i=1..6} c_i a^i at a = +-1 (value - 1, slope, curvature)."""
    i = np.arange(1, 7, dtype=float)
    return np.array(
        [
            np.ones(6),  # p(1) - 1
            (-1.0) ** i,  # p(-1) - 1
            i,  # p'(1)
            i * (-1.0) ** (i - 1),  # p'(-1)
            i * (i - 1),  # p''(1)
            i * (i - 1) * (-1.0) ** (i - 2),  # p''(-1)
        ]
    )


_C4 = np.linalg.inv(_code4_matrix())


def code4(alpha: float, up, down):
    """HistFactory code 4: up**alpha (alpha > 1), down**(-alpha) (alpha < -1), else the degree-6
    polynomial through 1 at 0 that matches value, slope and curvature of those exponentials at +-1.
    Element-wise in up / down; the polynomial is floored at 1e-12 (as the project's fit does)."""
    up = np.asarray(up, dtype=np.float64)
    down = np.asarray(down, dtype=np.float64)
    if alpha > 1.0:
        return up**alpha
    if alpha < -1.0:
        return down ** (-alpha)
    lu, ld = np.log(up), np.log(down)
    targets = (up - 1.0, down - 1.0, up * lu, -down * ld, up * lu * lu, down * ld * ld)
    coef = np.array([alpha**p for p in range(1, 7)]) @ _C4
    poly = 1.0 + sum(coef[j] * targets[j] for j in range(6))
    return np.maximum(poly, 1e-12)


class NumpyNLL:
    """q(theta) = -2 ln L of the exact-ratio model in plain NumPy (float64); theta = (mu, alphas)
    in the order ``names``."""

    def __init__(self, problem: BenchmarkProblem, data: Sample, norm: Sample):
        self.problem = problem
        self.names = ("mu",) + problem.parameter_names
        xd = data.features.astype(np.float64)
        xn = norm.features.astype(np.float64)
        self.w = np.asarray(data.weights, dtype=np.float64)
        self.v = np.asarray(norm.weights, dtype=np.float64)
        self.procs = problem.processes
        self.nu = np.array([problem.yield_(c) for c in self.procs])
        self.r_d = [np.exp(problem.log_ratio(c, xd)) for c in self.procs]
        self.r_n = [np.exp(problem.log_ratio(c, xn)) for c in self.procs]
        eff_d, eff_n = _effects(problem, xd), _effects(problem, xn)
        self.norm_eff: list[
            list[tuple[int, float, float]]
        ] = []  # per process: (alpha index, up, down)
        self.shape_eff: list[list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = []
        for c in self.procs:
            ne, se = [], []
            for k, name in enumerate(problem.parameter_names):
                e_d, e_n = eff_d.get(name, {}).get(c), eff_n.get(name, {}).get(c)
                if e_d is None:
                    continue
                if "norm" in e_d:
                    ne.append((k, *e_d["norm"]))
                if "shape" in e_d:
                    assert (
                        e_n is not None
                    )  # shape effects depend on (nuisance, process) only, not on x
                    se.append((k, *e_d["shape"], *e_n["shape"]))
            self.norm_eff.append(ne)
            self.shape_eff.append(se)
        self.has_norm = any(self.shape_eff) and len(self.v) > 0
        if self.has_norm:
            self.D = np.array([float(self.v @ r) for r in self.r_n])
            self.k = float(np.sum(self.v)) / self.D
        else:
            self.D = np.ones(len(self.procs))
            self.k = np.ones(len(self.procs))

    def amplitudes(self, theta: np.ndarray) -> np.ndarray:
        mu, alpha = float(theta[0]), theta[1:]
        A = (
            np.array([coefficient_value(self.problem.coefficients[c], mu) for c in self.procs])
            * self.nu
        )
        for ci, ne in enumerate(self.norm_eff):
            for k, up, down in ne:
                A[ci] *= float(code4(float(alpha[k]), up, down))
        return A

    def _deltas(self, ci: int, alpha: np.ndarray) -> tuple[np.ndarray | float, np.ndarray | float]:
        dd: np.ndarray | float = 1.0
        dn: np.ndarray | float = 1.0
        for k, up_d, down_d, up_n, down_n in self.shape_eff[ci]:
            dd = dd * code4(float(alpha[k]), up_d, down_d)
            dn = dn * code4(float(alpha[k]), up_n, down_n)
        return dd, dn

    def event_intensity(self, theta: np.ndarray) -> np.ndarray:
        """s_i = sum_c A_c k_c r_c delta_c on the data rows (the model's nu p(x | theta) / p_ref(x))."""
        theta = np.asarray(theta, dtype=np.float64)
        A = self.amplitudes(theta)
        s = np.zeros_like(self.w)
        for ci in range(len(self.procs)):
            dd, _ = self._deltas(ci, theta[1:])
            s += A[ci] * self.k[ci] * self.r_d[ci] * dd
        return s

    def normalisation(self, theta: np.ndarray) -> np.ndarray:
        """n_c(alpha)."""
        out = np.ones(len(self.procs))
        if not self.has_norm:
            return out
        for ci in range(len(self.procs)):
            if self.shape_eff[ci]:
                _, dn = self._deltas(ci, np.asarray(theta, dtype=np.float64)[1:])
                out[ci] = float(self.v @ (self.r_n[ci] * dn)) / self.D[ci]
        return out

    def __call__(self, theta) -> float:
        theta = np.asarray(theta, dtype=np.float64)
        s = self.event_intensity(theta)
        live = self.w != 0
        if np.any(s[live] <= 0) or not np.all(np.isfinite(s[live])):
            return 1e300
        A = self.amplitudes(theta)
        return float(
            2.0 * np.dot(A, self.normalisation(theta))
            - 2.0 * np.dot(self.w[live], np.log(s[live]))
            + np.sum(theta[1:] ** 2)
        )


def minuit_fit(nll: NumpyNLL, tol: float = 1e-6) -> dict[str, Any]:
    """MIGRAD + HESSE on the NumPy NLL (q = -2 ln L, errordef 1)."""
    from iminuit import Minuit  # noqa: PLC0415

    t0 = time.perf_counter()
    start = np.zeros(len(nll.names))
    start[0] = 1.0
    m = Minuit(nll, start, name=nll.names)
    m.errordef = Minuit.LEAST_SQUARES
    m.strategy = 2
    m.tol = tol
    m.limits["mu"] = tuple(nll.problem.mu_bounds)
    for name in nll.names[1:]:
        m.limits[name] = NP_BOUNDS
    m.migrad()
    m.hesse()
    values = {n: float(m.values[n]) for n in nll.names}
    errors = {n: float(m.errors[n]) for n in nll.names}
    return {
        "mu_hat": values["mu"],
        "sigma": errors["mu"],
        "values": values,
        "errors": errors,
        "converged": bool(m.valid),
        "q_min": float(m.fval),
        "edm": float(m.fmin.edm),
        "n_calls": int(m.nfcn),
        "time_s": time.perf_counter() - t0,
    }


def exact_reference_fit(problem: BenchmarkProblem, data: Sample, norm: Sample) -> dict[str, Any]:
    """The exact-ratio fit of `data` from the project's `fit` (float64 storage) and from the
    independent NumPy NLL minimised by iminuit, with their agreement."""
    import jax.numpy as jnp  # noqa: PLC0415

    from sbi_engine.fit import Model, fit  # noqa: PLC0415
    from sbi_engine.precision import enable_float64  # noqa: PLC0415

    enable_float64()
    t0 = time.perf_counter()
    ws = exact_workspace(problem, data, norm)
    res = fit(Model(ws, storage_dtype=jnp.float64))
    project: dict[str, Any] = {
        "mu_hat": res.values["mu"],
        "sigma": res.errors["mu"],
        "values": res.values,
        "errors": res.errors,
        "converged": bool(res.converged),
        "q_min": float(res.q_min),
        "time_s": time.perf_counter() - t0,
    }
    ref = minuit_fit(NumpyNLL(problem, data, norm))
    sigma = project["sigma"]
    agreement = {
        "mu_hat_diff_over_sigma": (ref["mu_hat"] - project["mu_hat"]) / sigma
        if sigma > 0
        else math.nan,
        "sigma_rel_diff": ref["sigma"] / sigma - 1.0 if sigma > 0 else math.nan,
        "max_value_diff_over_error": max(
            abs(ref["values"][n] - project["values"][n]) / project["errors"][n]
            for n in project["values"]
            if project["errors"][n] > 0
        ),
        "max_error_rel_diff": max(
            abs(ref["errors"][n] / project["errors"][n] - 1.0)
            for n in project["errors"]
            if project["errors"][n] > 0
        ),
    }
    return {
        "problem": problem.name,
        "mu_hat": project["mu_hat"],
        "sigma": project["sigma"],
        "values": project["values"],
        "errors": project["errors"],
        "project": project,
        "numpy_minuit": ref,
        "agreement": agreement,
        "n_events": len(data),
        "sum_weights": float(np.sum(data.weights)),
        "n_norm_events": len(norm),
    }
