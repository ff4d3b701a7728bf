"""Neyman construction with profiled nuisances: toys at the conditional fit on the data, the
interval read from the belt with interpolated edges, and its cost reported."""

from __future__ import annotations

import numpy as np
import pytest

from sbi_engine.fit import Workspace, fit
from sbi_engine.fit.intervals import profile_interval
from sbi_engine.fit.toys import belt_interval, neyman_construction


def test_belt_interval_interpolates_the_edges():
    v = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    d = np.array([1.0, -1.0, -2.0, -0.5, 0.5])
    (lo, hi), flags = belt_interval(v, d)
    assert lo == pytest.approx(0.5) and hi == pytest.approx(3.5) and flags == []
    (lo, hi), flags = belt_interval(v, np.array([-1.0, -1.0, 1.0, -1.0, 1.0]))
    assert lo == 0.0 and "lo_at_grid_end" in flags and "disjoint" in flags
    assert belt_interval(v, np.ones(5)) == (None, ["empty"])


def counting_workspace(n_rows: int = 40) -> Workspace:
    """Counting experiment (flat ratios) S = 400 mu, B = 100 with a 10 % normalisation nuisance
    on B, Asimov at mu = 1 (N = 500): asymptotically sigma_mu = sqrt(500 + 10^2) / 400 = 0.061."""
    ones = np.ones(n_rows)
    return Workspace.from_arrays(
        pois={"mu": {"init": 1.0, "bounds": (0.0, 5.0)}},
        processes={
            "S": {"yield": 400.0, "coefficient": "mu", "ratio": ones},
            "B": {"yield": 100.0, "coefficient": "1", "ratio": ones},
        },
        weights=np.full(n_rows, 500.0 / n_rows),
        nuisances=[{"name": "bkg_norm", "effects": {"B": {"norm": (1.1, 0.9)}}}],
        data_kind="asimov",
        generated_at={"mu": 1.0},
    )


def test_neyman_interval_with_profiled_nuisance_matches_the_asymptotic_one():
    ws = counting_workspace()
    obs = fit(ws)
    sigma = obs.errors["mu"]
    assert sigma == pytest.approx(np.sqrt(600.0) / 400.0, rel=0.03)  # the analytic error
    ref = profile_interval(ws, obs, "mu", level=1.0)
    grid = 1.0 + sigma * np.linspace(-2.0, 2.0, 7)  # edges between grid points: interpolated
    belt = neyman_construction(ws, grid, n_toys=300, seed=5, observed=obs, cl=0.6827, batch=300)
    assert belt["profiled"] and belt["interval_flags"] == []
    # toys generated at the conditional fit on the data: the nuisance follows mu
    gen = [row["generated_at"]["bkg_norm"] for row in belt["grid"]]
    assert gen[0] > 0.05 > -0.05 > gen[-1]
    lo, hi = belt["interval"]
    # N = 500: Wilks holds, so the Neyman interval is the profile-likelihood one (300 toys per
    # point: the critical value's standard error moves an edge by about 0.07 sigma)
    assert abs(lo - ref.lo) < 0.2 * sigma and abs(hi - ref.hi) < 0.2 * sigma, (belt, ref)
    assert abs(lo - (1 - sigma)) < 0.25 * sigma and abs(hi - (1 + sigma)) < 0.25 * sigma
    cost = belt["cost"]
    assert cost["toys"] == 7 * 300 and cost["toy_fits"] == 2 * 7 * 300 and cost["seconds"] > 0
