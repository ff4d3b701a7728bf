"""Helpers for the analysis tests: learned against exact ratios on the same events, and control-plane env.

`exact_workspace(spec)` builds the closure check's data -- the simulation's own Asimov expectation
at mu_true (`simulated_asimov`: evaluation events weighted by their coefficients, independent of any
ratio) followed by the reference's evaluation events as normalisation sample -- with every ratio
replaced by the analytic one of the demo simulator: r_c = p_c / p_ref for processes,
p_c(x | alpha_up/down) / p_c(x) for shape systematics. `learned_workspace(spec)` is the same data
with the fit job's learned ratios (`build_learned_fit(..., data=...)`). The difference between the
two fits is therefore only what the networks got wrong; the fit job's own Asimov data (the model's
expectation) would return mu_true whatever the ratios are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def _problem(spec: Mapping[str, Any]):
    from sbi_engine.demo import DemoProblem

    d = spec["demo"]
    return DemoProblem(
        n_nuisances=int(d.get("n_nuisances", 3)), luminosity=float(d.get("luminosity", 1.0))
    )


def exact_workspace(spec: Mapping[str, Any]):
    from sbi_engine.fit import Workspace
    from sbi_engine.fit_jobs import _coefficients, add_norm_only_nuisances, simulated_asimov
    from sbi_engine.sample_specs import load_sample_spec

    params = spec["params"]
    ref = params["reference"]
    coefficients = _coefficients(params)
    data = simulated_asimov(params, coefficients).at(float(params.get("mu_true", 1.0)))
    specs = params["processes"]
    norm = load_sample_spec(specs[ref], role="eval")
    x = np.concatenate([data.features, norm.features]).astype(np.float64)
    weights = np.concatenate([data.weights, np.zeros(len(norm))])
    norm_weights = np.concatenate([np.zeros(len(data)), norm.weights])
    nominal = {p: load_sample_spec(s) for p, s in specs.items()}
    logp = {p: _problem(s).log_density(s["demo"]["process"], x) for p, s in specs.items()}
    yields = params.get("yields") or {}
    processes = {
        p: {
            "yield": float(yields[p]) if p in yields else float(nominal[p].weights.sum()),
            "coefficient": coefficients[p],
            "ratio": np.exp(logp[p] - logp[ref]),
        }
        for p in specs
    }
    nuisances: dict[str, dict[str, Any]] = {}
    for syst in params.get("systematics", []):
        name, proc = syst["name"], syst["process"]
        shapes, norms = [], []
        for direction in ("up", "down"):
            s = syst[direction]
            alpha = dict(s["demo"].get("alpha") or {})
            shapes.append(
                np.exp(_problem(s).log_density(s["demo"]["process"], x, alpha) - logp[proc])
            )
            norms.append(float(load_sample_spec(s).weights.sum() / nominal[proc].weights.sum()))
        nuisances.setdefault(name, {})[proc] = {"shape": tuple(shapes), "norm": tuple(norms)}
    add_norm_only_nuisances(params, processes, nuisances)
    poi = params.get("poi") or {}
    return Workspace.from_arrays(
        pois={
            "mu": {
                "init": float(poi.get("init", 1.0)),
                "bounds": tuple(poi.get("bounds", (0.0, 20.0))),
            }
        },
        processes=processes,
        weights=weights,
        norm_weights=norm_weights,
        nuisances=[{"name": n, "effects": e} for n, e in nuisances.items()],
        data_kind="observed",
    )


def learned_workspace(spec: Mapping[str, Any]):
    """The closure data of `exact_workspace` with the fit job's trained ensembles."""
    from backend.jobkinds import collect_ensembles
    from backend.stores.local import path_from_uri
    from sbi_engine.fit_jobs import _coefficients, build_learned_fit, simulated_asimov

    params = spec["params"]
    uris = collect_ensembles(spec.get("inputs") or {})
    paths = {t: [str(path_from_uri(u)) for u in us] for t, us in uris.items()}
    data = simulated_asimov(params, _coefficients(params)).at(float(params.get("mu_true", 1.0)))
    return build_learned_fit(spec, paths, data=data).workspace


def exact_fit(spec: Mapping[str, Any], learned: bool = False) -> tuple[float, float]:
    """(mu-hat, sigma) on the simulated Asimov data with the exact (or the learned) ratios."""
    from sbi_engine.fit import fit

    result = fit(learned_workspace(spec) if learned else exact_workspace(spec))
    assert result.converged
    return float(result.values["mu"]), float(result.errors["mu"])
