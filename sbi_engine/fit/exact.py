"""Workspaces built from the demo problem's exact densities (no networks): the truth that the
fit's tests and benchmarks run against.

Events are drawn (weighted) from SBI, i.e. the mixture at mu = 1 with nominal nuisances, and
p_SBI serves as the common reference density: r_c = p_c / p_SBI, shape ratios
p_c(x | alpha_k = +-1) / p_c(x | 0), yield ratios nu_c(+-1) / nu_c(0), all exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .workspace import Workspace

__all__ = ["exact_demo_workspace"]


def exact_demo_workspace(
    n_events: int,
    n_nuisances: int = 10,
    seed: int = 0,
    observed: bool = False,
    mu_data: float = 1.0,
    luminosity: float = 1.0,
    dtype: Any = np.float64,
    mu_bounds: tuple[float, float] = (0.0, 10.0),
    linear: bool = False,
) -> Workspace:
    """A demo workspace with exact ratios.

    observed=False: ``n_events`` weighted SBI events (weighted Asimov data at mu = 1,
    ``generated_at={"mu": 1}``); observed=True: one Poisson pseudo-dataset at ``mu_data``
    (weights 1; ``n_events`` is ignored).

    linear=True: the same signal and background without interference, mu S + B: a regular
    model (yield rising with mu) to check what the interference model cannot, such as the
    asymptotic limit formulas. Its events are ``n_events`` weighted B events
    (``generated_at={"mu": 0}``); ``observed`` is not supported for it.
    """
    from sbi_engine.demo import PROCESSES, DemoProblem  # noqa: PLC0415

    prob = DemoProblem(n_nuisances=n_nuisances, luminosity=luminosity)
    if linear and observed:
        raise ValueError("exact_demo_workspace: linear=True makes weighted B events only")
    ref_process = "B" if linear else "SBI"  # the events' density: the model at generated_at
    if observed:
        smp = prob.sample_mixture(mu_data, None, seed, poisson=True)
        gen = None
    else:
        smp = prob.sample(ref_process, n_events, seed)
        gen = {"mu": 0.0 if linear else 1.0}
    x = smp.features.astype(np.float64)
    ref = prob.log_density(ref_process, x)
    processes = {}
    if linear:
        coeff = {"S": "mu", "B": "1"}
    else:
        coeff = {"S": "mu - sqrt(mu)", "SBI": "sqrt(mu)", "B": "1 - sqrt(mu)"}
    logp = {}
    for c in (c for c in PROCESSES if c in coeff):
        logp[c] = prob.log_density(c, x)
        processes[c] = {
            "yield": prob.yield_(c),
            "coefficient": coeff[c],
            "ratio": np.exp(logp[c] - ref).astype(dtype),
        }
    nuisances = []
    for nk in prob.nuisances:
        effects: dict[str, dict[str, Any]] = {}
        for c in (c for c in nk.processes if c in coeff):
            e: dict[str, Any] = {}
            if c in nk.norm_processes:
                e["norm"] = (prob.yield_ratio(c, nk.name, 1.0), prob.yield_ratio(c, nk.name, -1.0))
            if c in nk.shape_processes:
                e["shape"] = tuple(
                    np.exp(prob.log_density(c, x, {nk.name: d}) - logp[c]).astype(dtype)
                    for d in (1.0, -1.0)
                )
            effects[c] = e
        nuisances.append({"name": nk.name, "effects": effects})
    return Workspace.from_arrays(
        pois={"mu": {"init": 1.0, "bounds": mu_bounds}},
        processes=processes,
        weights=smp.weights,
        nuisances=nuisances,
        data_kind="observed" if observed else "asimov",
        generated_at=gen,
        metadata={
            "source": f"demo exact ratios: {smp.source}, n_nuisances={n_nuisances}"
            + (", linear mu S + B" if linear else "")
        },
    )
