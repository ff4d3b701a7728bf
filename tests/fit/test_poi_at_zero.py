"""The POI at its bound mu = 0, where d sqrt(mu)/dmu is infinite: scan points, background-only
Asimov fits and Neyman toys at mu = 0 must converge to the right numbers, not return NaN."""

from __future__ import annotations

import numpy as np

from sbi_engine.fit import fit
from sbi_engine.fit.scan import profile_scan
from sbi_engine.fit.toys import expected_fit


def test_nuisance_derivatives_stay_finite_with_the_poi_at_zero(demo_model):
    theta = demo_model.init.copy()
    theta[0] = 0.0
    theta[demo_model.n_free :] = 0.2
    q, g, H = demo_model.value_grad_hessian(theta)
    nps = slice(demo_model.n_free, None)
    assert np.isfinite(q) and np.all(np.isfinite(g)) and np.all(np.isfinite(H))
    # the NP gradient at mu = 0 against central differences of q (float64, h = 1e-5: error ~1e-9)
    h = 1e-5
    for k in range(demo_model.n_free, demo_model.n_params, 3):
        up, dn = theta.copy(), theta.copy()
        up[k] += h
        dn[k] -= h
        fd = (demo_model.nll(up) - demo_model.nll(dn)) / (2 * h)
        assert abs(g[k] - fd) < 1e-5 * max(1.0, abs(fd)), (k, g[k], fd)
    assert np.all(np.abs(H[nps, nps]) < 1e8)


def test_fit_with_mu_fixed_at_zero_matches_iminuit(demo_model, demo_fit):
    ours = fit(demo_model, fixed={"mu": 0.0})
    ref = fit(demo_model, fixed={"mu": 0.0}, backend="minuit")
    assert ours.converged, ours.message
    assert ref.converged, ref.message
    # iminuit's EDM target (0.002 x errordef) bounds its q_min excess to about 1e-3
    assert abs(ours.q_min - ref.q_min) < 2e-3
    assert ours.q_min <= ref.q_min + 1e-6
    sig = np.sqrt(np.diag(ref.covariance))[demo_model.n_free :]
    assert np.max(np.abs(ours.theta - ref.theta)[demo_model.n_free :] / sig) < 0.02


def test_scan_through_zero_converges_and_is_continuous(demo_model, demo_fit):
    s = profile_scan(demo_model, demo_fit, "mu", values=np.array([0.0, 1e-10, 0.5]))
    assert s.converged.all()
    assert np.all(np.isfinite(s.dq))
    # dq(mu) ~ dq(0) + A sqrt(mu) near 0: sqrt(1e-10) = 1e-5, so the two agree to ~1e-4
    assert abs(s.dq[0] - s.dq[1]) < 1e-3
    assert s.dq[0] > s.dq[2] > 0  # Asimov data at mu = 1: mu = 0 is disfavoured most


def test_background_only_asimov_fit_lands_on_zero(demo_model):
    res = expected_fit(demo_model, {"mu": 0.0})
    assert res.converged, res.message
    assert abs(res.values["mu"]) < 1e-9
    assert np.max(np.abs(res.theta[demo_model.n_free :])) < 1e-6
