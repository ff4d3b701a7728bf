"""Exact samplers shared by the demo simulator and the benchmark problems.

Why its own module: `sbi_engine.demo` and `sbi_engine.problems` both draw from closed-form
densities; a neutral home keeps the demo from depending on the problems package (which builds
on the fit, which builds its demo workspace from the demo).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["accept_reject_1d"]


def accept_reject_1d(
    f: Callable[[np.ndarray], np.ndarray],
    bound: float,
    lo: float,
    hi: float,
    n: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """n exact draws from the (unnormalised) density f <= bound on [lo, hi]."""
    out, have = [], 0
    while have < n:
        m = max(2 * (n - have), 256)
        c = lo + (hi - lo) * rng.random(m)
        keep = c[rng.random(m) * bound <= f(c)]
        out.append(keep)
        have += keep.shape[0]
    return np.concatenate(out)[:n] if out else np.empty(0)
