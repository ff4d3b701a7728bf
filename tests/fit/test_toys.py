"""Toys: vectorised fits of resampled weighted simulation; pulls and coverage of mu at mu = 1."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from sbi_engine.fit import Model, fit
from sbi_engine.fit.exact import exact_demo_workspace
from sbi_engine.fit.toys import asimov_weights, expected_fit, fit_toys, generate_toys, toy_study


def test_asimov_weights_are_the_models_expectation(demo_model):
    # The demo workspace is weighted Asimov data at mu = 1, its own normalisation sample: Asimov
    # weights at mu = 2 made from it are exactly the model's expectation there, so the fit returns
    # mu = 2 and the nuisances at their auxiliary values (to the fit's tolerance), and the total
    # weight is the model's nu(2), within the simulation's precision of the exact yield.
    from sbi_engine.demo import DemoProblem

    prob = DemoProblem(n_nuisances=10)
    assert demo_model.has_norm and demo_model.norm_source == "asimov"
    w1 = asimov_weights(demo_model)
    w2 = asimov_weights(demo_model, {"mu": 2.0})
    assert w2.sum() / w1.sum() == pytest.approx(
        prob.total_yield(2.0) / prob.total_yield(1.0), rel=0.01
    )
    r = expected_fit(demo_model, {"mu": 2.0})
    assert r.converged
    sig = np.sqrt(np.diag(r.covariance))
    target = demo_model.theta({"mu": 2.0}, base=np.r_[demo_model.init[:1], demo_model.aux])
    assert np.max(np.abs(r.theta - target) / sig) < 1e-3
    # the raw event weights (before the ratio normalisation) sit 1/sqrt(N)-close to that expectation
    np.testing.assert_allclose(w1.sum(), np.asarray(demo_model.data["w"]).sum(), rtol=0.01)


def test_toys_are_poisson_resamples(demo_model):
    toys = generate_toys(demo_model, 200, seed=5)
    n = toys.counts.sum(axis=1)
    lam = float(
        np.sum(asimov_weights(demo_model))
    )  # the model's expected count nu at the reference point
    assert abs(n.mean() - lam) < 4 * np.sqrt(lam / 200)
    assert n.var(ddof=1) == pytest.approx(lam, rel=0.25)
    assert toys.aux.std() == pytest.approx(1.0, rel=0.1) and abs(toys.aux.mean()) < 0.05


def test_toy_fits_with_a_progress_bar_are_the_same_fits(demo_model, capsys):
    toys = generate_toys(demo_model, 7, seed=2)
    plain = fit_toys(demo_model, toys, batch=3)
    shown = fit_toys(demo_model, toys, batch=3, progress="coverage mu=1")
    np.testing.assert_array_equal(plain.theta, shown.theta)
    err = capsys.readouterr().err
    assert "coverage mu=1" in err and "7/7" in err and "toy" in err


@pytest.fixture(scope="module")
def big_model():
    # 10x the demo luminosity (about 3,700 events per toy). The weighted sample of 10,000 events is
    # the normalisation sample and the population the toys are drawn from; the model is exactly a
    # Poisson process on it, so its size sets the toys' cost, not their validity. At the demo's
    # own ~370 events mu-hat reaches its bound 0 in some toys and Hessian pulls are too wide.
    ws = exact_demo_workspace(10000, n_nuisances=10, seed=11, luminosity=10.0)
    return Model(ws, chunk_size=16384, storage_dtype=jnp.float64)


TOY_BATCH, TOY_PAD = (
    100,
    4096,
)  # one (batch, events) shape for the study and the Neyman belt: one compilation


@pytest.fixture(scope="module")
def study(big_model):
    return toy_study(big_model, 500, seed=123, batch=TOY_BATCH, pad_to=TOY_PAD)


@pytest.mark.slow
def test_500_toys_pulls_and_coverage_at_mu_1(study):
    """Coverage of mu over 500 toys at mu = 1 (10 NPs, 7 with per-event shape effects).

    Statistical margins: with 500 toys the pull mean has a standard error of 0.045 and the
    coverage of a 68 % interval 0.021, so the bounds are more than 2 standard errors wide."""
    st = study
    assert st["n_converged"] >= 495, st
    assert abs(st["pull_mean"]) < 0.1, st  # Hessian pulls
    assert 0.9 < st["pull_width"] < 1.1, st
    assert 0.63 <= st["coverage_hesse_68"] <= 0.73, st
    assert abs(st["pull_profile_mean"]) < 0.1, st  # signed-root profile pulls
    assert 0.9 < st["pull_profile_width"] < 1.1, st
    assert 0.63 <= st["coverage_profile_68"] <= 0.73, st
    assert 0.92 <= st["coverage_profile_95"] <= 0.98, st
    assert st["n_conditional_below_free"] == 0, st  # every free fit found the global minimum


@pytest.mark.slow
def test_toy_study_reports_per_toy_results(study):
    st = study
    n = st["n_converged"]
    for key in ("toy_index", "mu_hat", "sigma", "pulls", "pulls_profile"):
        assert len(st[key]) == n, key
    mu, sig, pull, z = (
        np.asarray(st[k], dtype=float) for k in ("mu_hat", "sigma", "pulls", "pulls_profile")
    )
    np.testing.assert_allclose(pull, (mu - st["truth"]) / sig, rtol=1e-12)
    assert pull.mean() == pytest.approx(st["pull_mean"]) and np.all(
        np.sign(z) == np.sign(mu - st["truth"])
    )
    assert np.mean(np.abs(z) < 1) == pytest.approx(st["coverage_profile_68"])
    assert (
        np.corrcoef(pull, z)[0, 1] > 0.95
    )  # the two pulls agree where the likelihood is near-Gaussian


@pytest.mark.study
def test_neyman_belt_is_close_to_wilks(big_model):
    """Toy-based critical values of t = q(mu) - q_min at three mu values: near the chi2_1 68 %
    quantile 0.99 (200 toys: standard error about 0.14 each, 0.08 for their mean), and the
    confidence set of the Asimov fit contains its best fit but not the points 2 sigma away.
    About a minute on 2 CPU cores, so outside CI; CI's Neyman check is tests/fit/test_neyman.py
    (profiled nuisances, against the profile-likelihood interval)."""
    from sbi_engine.fit.toys import neyman_construction

    observed = fit(big_model)
    mu, err = observed.values["mu"], observed.errors["mu"]
    grid = [mu - 2 * err, mu, mu + 2 * err]
    belt = neyman_construction(
        big_model, grid, n_toys=200, seed=9, observed=observed, batch=TOY_BATCH, pad_to=TOY_PAD
    )
    assert all(row["n_ok"] >= 198 for row in belt["grid"]), belt
    crit = [row["critical"] for row in belt["grid"]]
    assert all(0.6 < c < 1.5 for c in crit), belt
    assert 0.8 < np.mean(crit) < 1.2, belt
    accepted = [row["accepted"] for row in belt["grid"]]
    assert accepted == [False, True, False], belt
