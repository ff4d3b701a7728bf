"""The fit on the demo problem with exact analytic ratios and 10 NPs, cross-checked with
iminuit MIGRAD + HESSE (numerical derivatives) on the same NLL."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sbi_engine.fit import fit
from sbi_engine.fit.impacts import breakdown, covariance_impacts, pulls, ranking, refit_impacts
from sbi_engine.fit.results import dumps
from sbi_engine.fit.scan import profile_scan


def test_fit_agrees_with_minuit(demo_model, demo_fit):
    r = demo_fit
    assert r.converged and r.edm < 1e-8, r.message
    m = fit(demo_model, backend="minuit")
    assert m.converged, m.message
    sig = np.sqrt(np.diag(r.covariance))
    assert np.all(np.abs(r.theta - m.theta) / sig < 1e-3)
    assert np.all(np.abs(np.sqrt(np.diag(m.covariance)) / sig - 1.0) < 0.01)
    assert r.q_min <= m.q_min + 1e-6


def test_result_serialises_and_correlations_are_consistent(demo_model, demo_fit):
    d = json.loads(dumps(demo_fit))
    assert d["converged"] is True and set(d["values"]) == set(demo_model.names)
    c = demo_fit.correlation
    assert np.allclose(np.diag(c), 1.0) and np.all(np.abs(c) <= 1 + 1e-12)
    p = pulls(demo_model, demo_fit)
    assert all(
        0 < v["constraint"] <= 1.0 + 1e-6 for v in p.values()
    )  # data can only add information


def test_fixing_is_a_mask_not_a_recompile(demo_model, demo_fit):
    n_compiled = demo_model.clock.count
    lumi = demo_model.nuisance_names[3]
    r = fit(demo_model, fixed={lumi: 0.5})
    assert r.converged and r.values[lumi] == 0.5 and r.errors[lumi] == 0.0
    assert r.q_min > demo_fit.q_min
    assert demo_model.clock.count == n_compiled


def test_covariance_impacts_agree_with_refit_impacts(demo_model, demo_fit):
    cov = {i.nuisance: i for i in covariance_impacts(demo_model, demo_fit)}
    ref = {i.nuisance: i for i in refit_impacts(demo_model, demo_fit, prefit=False)}
    largest = max(i.size for i in cov.values())
    checked = 0
    for name, c in cov.items():
        if c.size < 0.05 * largest:
            continue
        sym = 0.5 * (ref[name].postfit_up - ref[name].postfit_down)  # symmetrised refit impact
        assert sym == pytest.approx(c.postfit_up, rel=0.10), name
        checked += 1
    assert checked >= 3
    top = ranking(cov.values())
    assert top[0].size == largest


def test_covariance_impact_is_the_refit_slope(demo_model, demo_fit):
    """Implicit-function impact dpoi/dalpha_k = C[poi,k]/C[k,k], against refits at +-0.05."""
    r = demo_fit
    for name in (demo_model.nuisance_names[i] for i in (0, 2, 7)):
        k = demo_model.index[name]
        up = fit(demo_model, fixed={name: r.theta[k] + 0.05}, init=r.theta)
        dn = fit(demo_model, fixed={name: r.theta[k] - 0.05}, init=r.theta)
        slope = (up.values["mu"] - dn.values["mu"]) / 0.1
        assert slope == pytest.approx(r.covariance[0, k] / r.covariance[k, k], rel=0.01), name


def test_breakdown_and_scan_are_consistent(demo_model, demo_fit):
    b = breakdown(demo_model, demo_fit)["mu"]
    assert b["stat"] < b["total"] and b["total"] ** 2 == pytest.approx(
        b["stat"] ** 2 + b["syst"] ** 2
    )
    stat_fit = fit(demo_model, fixed={n: demo_fit.values[n] for n in demo_model.nuisance_names})
    assert stat_fit.errors["mu"] == pytest.approx(b["stat"], rel=1e-6)
    s = profile_scan(demo_model, demo_fit, "mu", n_points=15, n_sigma=2.5)
    lo, hi = s.intervals["68"]
    mu, err = demo_fit.values["mu"], demo_fit.errors["mu"]
    assert s.converged.all() and lo < mu < hi
    assert (hi - lo) / 2 == pytest.approx(err, rel=0.15)  # near-parabolic likelihood
    assert np.all(s.dq >= -1e-7)
