"""2-D profile-likelihood contours (root finding along rays) against a brute-force grid of
conditional fits on a two-POI problem with a nuisance and visibly non-Gaussian errors."""

from __future__ import annotations

import numpy as np
import pytest

from sbi_engine.fit import Model, Workspace, fit
from sbi_engine.fit.contours import CONTOUR_LEVELS, correlation
from sbi_engine.fit_jobs import several_pois


def two_poi_workspace(n: int = 3000, seed: int = 3) -> Workspace:
    """mu_a scales S_a, mu_b scales S_b, B fixed; small yields (asymmetric errors), overlapping
    shapes (correlated POIs), one normalisation + shape nuisance; Asimov at mu = 1."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, n)
    r_a = 2.0 * x
    r_b = 1.5 - x + 0.5 * np.sin(3 * x)
    r_b /= r_b.mean()
    r_bkg = np.ones(n)
    y = {"Sa": 12.0, "Sb": 9.0, "B": 15.0}
    w = (y["Sa"] * r_a + y["Sb"] * r_b + y["B"] * r_bkg) / n
    up = 1.0 + 0.1 * (x - 0.5)
    return Workspace.from_arrays(
        pois={
            "mu_a": {"init": 1.0, "bounds": (0.0, 10.0)},
            "mu_b": {"init": 1.0, "bounds": (-5.0, 10.0)},
        },
        processes={
            "Sa": {"yield": y["Sa"], "coefficient": "mu_a", "ratio": r_a},
            "Sb": {"yield": y["Sb"], "coefficient": "mu_b", "ratio": r_b},
            "B": {"yield": y["B"], "coefficient": "1", "ratio": r_bkg},
        },
        weights=w,
        nuisances=[
            {"name": "bkg", "effects": {"B": {"norm": (1.1, 0.9), "shape": (up, 2.0 - up)}}}
        ],
    )


def test_contour_area_matches_brute_force_grid():
    ws = two_poi_workspace()
    model = Model(ws)
    res = fit(model)
    # what a fit job reports for several POIs: errors, intervals, correlations, contours
    out = several_pois(ws, res, intervals=True, contours=True)
    assert set(out["pois"]) == {"mu_a", "mu_b"}
    for p in out["pois"].values():
        assert p["err_lo"] < 0 < p["err_hi"] and p["error"] > 0
    rho = out["correlations"]["mu_a"]["mu_b"]
    assert rho == pytest.approx(correlation(res, "mu_a", "mu_b"))
    assert -0.95 < rho < -0.1  # overlapping shapes: anti-correlated
    c68, c95 = out["contours"]["68"], out["contours"]["95"]
    assert all(not f for f in c68["flags"]) and len(c68["x"]) == 24
    # the grid: conditional fits on a 41 x 41 lattice over the 68 % contour's box
    xs, ys = np.asarray(c68["x"]), np.asarray(c68["y"])
    pad_x, pad_y = 0.05 * np.ptp(xs), 0.05 * np.ptp(ys)
    gx = np.linspace(xs.min() - pad_x, xs.max() + pad_x, 41)
    gy = np.linspace(ys.min() - pad_y, ys.max() + pad_y, 41)
    inside = 0
    theta = res.theta
    for a in gx:
        for b in gy:
            r = fit(model, fixed={"mu_a": a, "mu_b": b}, init=theta, fallback=False)
            inside += (r.q_min - res.q_min) <= CONTOUR_LEVELS["68"]
    grid_area = inside * (gx[1] - gx[0]) * (gy[1] - gy[0])
    assert abs(c68["area"] / grid_area - 1.0) < 0.02, (c68["area"], grid_area)
    # for a Gaussian profile the 95 % / 68 % area ratio is 5.99 / 2.30 = 2.60
    assert 2.0 < c95["area"] / c68["area"] < 3.2
