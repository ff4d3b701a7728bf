"""Helpers for the analysis tests: the exact-ratio fit of a demo fit job, and control-plane env.

`exact_fit(spec)` rebuilds the fit job's workspace exactly as `sbi_engine.fit_jobs.build_workspace`
does -- the same Asimov events (`asimov_data`), yields, yield factors and coefficients -- but
with every learned ratio replaced by the analytic one of the demo simulator: r_c = p_c / p_ref
for processes, p_c(x | alpha_up/down) / p_c(x) for shape systematics. The difference between
the two fits is therefore only what the networks got wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def _problem(spec: Mapping[str, Any]):
    from sbi_engine.demo import DemoProblem

    d = spec["demo"]
    return DemoProblem(n_nuisances=int(d.get("n_nuisances", 3)), luminosity=float(d.get("luminosity", 1.0)))


def exact_workspace(spec: Mapping[str, Any]):
    from sbi_engine.data import load_sample_spec
    from sbi_engine.fit import Workspace
    from sbi_engine.fit_jobs import _coefficients, add_norm_only_nuisances, asimov_data

    params = spec["params"]
    ref = params["reference"]
    coefficients = _coefficients(params)
    data = asimov_data(params, coefficients)
    x = np.asarray(data.features, dtype=np.float64)
    specs = params["processes"]
    nominal = {p: load_sample_spec(s) for p, s in specs.items()}
    logp = {p: _problem(s).log_density(s["demo"]["process"], x) for p, s in specs.items()}
    yields = params.get("yields") or {}
    processes = {
        p: {"yield": float(yields[p]) if p in yields else float(nominal[p].weights.sum()),
            "coefficient": coefficients[p], "ratio": np.exp(logp[p] - logp[ref])}
        for p in specs
    }
    nuisances: dict[str, dict[str, Any]] = {}
    for syst in params.get("systematics", []):
        name, proc = syst["name"], syst["process"]
        shapes, norms = [], []
        for direction in ("up", "down"):
            s = syst[direction]
            alpha = dict(s["demo"].get("alpha") or {})
            shapes.append(np.exp(_problem(s).log_density(s["demo"]["process"], x, alpha) - logp[proc]))
            norms.append(float(load_sample_spec(s).weights.sum() / nominal[proc].weights.sum()))
        nuisances.setdefault(name, {})[proc] = {"shape": tuple(shapes), "norm": tuple(norms)}
    add_norm_only_nuisances(params, processes, nuisances)
    poi = params.get("poi") or {}
    return Workspace.from_arrays(
        pois={"mu": {"init": float(poi.get("init", 1.0)), "bounds": tuple(poi.get("bounds", (0.0, 20.0)))}},
        processes=processes, weights=np.asarray(data.weights, dtype=np.float64),
        nuisances=[{"name": n, "effects": e} for n, e in nuisances.items()], data_kind="asimov",
        generated_at={"mu": float(params.get("mu_true", 1.0))},
    )


def exact_fit(spec: Mapping[str, Any]) -> tuple[float, float]:
    """(mu-hat, sigma) of the fit job's data with the exact analytic ratios."""
    from sbi_engine.fit import fit

    result = fit(exact_workspace(spec))
    assert result.converged
    return float(result.values["mu"]), float(result.errors["mu"])
