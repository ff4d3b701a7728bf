"""The demo simulator's nuisances as workspace entries, for tests that build workspaces by hand."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def demo_nuisances(prob, shape: Callable[[str, str], tuple[np.ndarray, np.ndarray]]) -> list[dict]:
    """[{name, effects}] with the demo's exact yield ratios and shape arrays from ``shape(nuisance, process)``."""
    nps = []
    for nk in prob.nuisances:
        effects = {}
        for c in nk.processes:
            e = {}
            if c in nk.norm_processes:
                e["norm"] = (prob.yield_ratio(c, nk.name, 1.0), prob.yield_ratio(c, nk.name, -1.0))
            if c in nk.shape_processes:
                e["shape"] = shape(nk.name, c)
            effects[c] = e
        nps.append({"name": nk.name, "effects": effects})
    return nps
