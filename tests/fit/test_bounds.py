"""Parameters at a bound: flagged, no Hessian error, never a sub-resolution number (issue 14).

The measured failure: a background-only Asimov fit with mu at its bound 0 reported mu = 3e-53
with sigma = 1.8e-36 and 'converged', because the covariance inverted a Hessian row of the
bound parameter (d sqrt(mu)/dmu capped at 5e49 there)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sbi_engine.fit import Model, Workspace, fit
from sbi_engine.fit.api import covariance_from_hessian, resolution
from sbi_engine.fit.toys import expected_fit


def test_background_only_asimov_flags_mu_at_its_bound(demo_model):
    res = expected_fit(demo_model, {"mu": 0.0})
    assert res.converged, res.message
    mu_resolution = resolution(demo_model.lower, demo_model.upper)[0]
    assert 0.0 <= res.values["mu"] <= mu_resolution  # on the bound within mu's resolution
    assert res.at_bound == ("mu",)
    assert res.below_resolution == ()
    assert math.isnan(res.errors["mu"])
    assert np.all(res.covariance[0] == 0.0) and np.all(res.covariance[:, 0] == 0.0)
    res_np = resolution(demo_model.lower, demo_model.upper)[demo_model.n_free :]
    sig = np.sqrt(np.diag(res.covariance))[demo_model.n_free :]
    assert np.all(sig > 1e3 * res_np)  # nuisance errors are measurements (~1 here)
    d = res.to_dict()
    assert d["at_bound"] == ["mu"] and d["errors"]["mu"] is None and d["below_resolution"] == []


def test_fit_away_from_the_bound_flags_nothing(demo_model, demo_fit):
    assert demo_fit.at_bound == () and demo_fit.below_resolution == ()
    assert 0.1 < demo_fit.errors["mu"] < 1.0


def test_fixed_parameters_are_not_at_bound(demo_model):
    res = fit(demo_model, fixed={"mu": 0.0})
    assert res.converged and res.at_bound == () and res.errors["mu"] == 0.0


def test_covariance_leaves_out_parameters_at_bound():
    H = np.array([[1e100, 1e49], [1e49, 4.0]])
    cov, pd = covariance_from_hessian(H, np.zeros(2, bool), np.array([True, False]))
    assert pd and cov[0, 0] == 0.0 and cov[1, 1] == 0.5
    cov_all, _ = covariance_from_hessian(H, np.zeros(2, bool))
    assert cov_all[0, 0] < 1e-90  # what used to be reported: sub-resolution


def test_newton_started_on_the_bound_leaves_it_when_q_falls_inward():
    """lambda = sqrt(mu) s + b with n = 20, s = b = 5: mu-hat = ((n - b) / s)^2 = 9. Started on
    the bound mu = 0, where the gradient is the capped 5e49 x dq/dsqrt(mu) < 0 and the Newton
    step ~1e-50, the fit used to stop there 'converged'; the boundary escape (q along mu
    below the bound's q) restarts it inside."""
    ws = Workspace.from_arrays(
        pois={"mu": {"init": 1.0, "bounds": (0.0, 20.0)}},
        processes={
            "S": {"yield": 5.0, "coefficient": "sqrt(mu)", "ratio": np.ones(1)},
            "B": {"yield": 5.0, "coefficient": "1", "ratio": np.ones(1)},
        },
        weights=np.array([20.0]),
    )
    m = Model(ws, storage_dtype=np.float64)
    res = fit(m, init={"mu": 0.0})
    assert res.converged, res.message
    assert res.at_bound == () and res.values["mu"] == pytest.approx(9.0, rel=1e-5)
    # sigma(mu) = 2 sqrt(mu) sigma(sqrt mu), sigma(sqrt mu) = sqrt(n) / s
    assert res.errors["mu"] == pytest.approx(2.0 * 3.0 * math.sqrt(20.0) / 5.0, rel=1e-4)


def test_a_local_minimum_on_the_bound_is_left_for_the_deeper_one(demo_model):
    """The demo's q (Asimov at mu = 1) has a local minimum on the bound mu = 0 with the
    nuisances profiled (one-sided derivative outward there; q = -3652.25 against -3658.02 at
    mu = 1). Started there, Newton stops on the bound; q along mu (nuisances as fitted) falls
    below it, so the fit restarts inside and reports the global minimum, not the bound."""
    best = fit(demo_model)
    res = fit(demo_model, init={"mu": 0.0})
    assert res.converged and res.at_bound == () and res.method.endswith("+escape")
    assert res.values["mu"] == pytest.approx(best.values["mu"], abs=1e-6)
    assert res.q_min == pytest.approx(best.q_min, abs=1e-6)
    stuck = fit(demo_model, init={"mu": 0.0}, fixed={"mu": 0.0})
    assert stuck.q_min > best.q_min + 5.0  # the bound really is 5.8 above the best fit


def test_a_minimum_on_the_bound_is_kept_when_nothing_inside_is_lower():
    """n = 2 events with s = 5, b = 5 under sqrt(mu) s + b: q(mu) = 2 (sqrt(mu) s + b) -
    2 n ln(sqrt(mu) s + b) rises from mu = 0 (d q / d sqrt(mu) = 2 s (1 - n / b) > 0), so the
    bound is the best fit: no escape, mu flagged at the bound with no error."""
    ws = Workspace.from_arrays(
        pois={"mu": {"init": 1.0, "bounds": (0.0, 20.0)}},
        processes={
            "S": {"yield": 5.0, "coefficient": "sqrt(mu)", "ratio": np.ones(1)},
            "B": {"yield": 5.0, "coefficient": "1", "ratio": np.ones(1)},
        },
        weights=np.array([2.0]),
    )
    res = fit(Model(ws, storage_dtype=np.float64))
    assert res.converged and res.at_bound == ("mu",) and math.isnan(res.errors["mu"])
    assert not res.method.endswith("+escape")
