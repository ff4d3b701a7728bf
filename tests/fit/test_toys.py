"""Toys: vectorised fits of resampled weighted simulation; pulls and coverage of mu at mu = 1."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import sbi_engine  # noqa: F401
from sbi_engine.fit import Model, fit
from sbi_engine.fit.exact import exact_demo_workspace
from sbi_engine.fit.toys import asimov_weights, expected_fit, generate_toys, toy_study


def test_asimov_reweighting_reproduces_the_truth(demo_model):
    # Asimov data at mu = 2 made by reweighting the mu = 1 simulation: the fit returns mu = 2 and
    # the nuisances at their auxiliary values; the total weight is the exact yield nu(2).
    from sbi_engine.demo import DemoProblem

    prob = DemoProblem(n_nuisances=10)
    w1 = np.asarray(demo_model.data["w"])
    w2 = asimov_weights(demo_model, {"mu": 2.0})
    assert w2.sum() / w1.sum() == pytest.approx(prob.total_yield(2.0) / prob.total_yield(1.0), rel=0.01)
    r = expected_fit(demo_model, {"mu": 2.0})
    base = fit(demo_model)
    assert r.converged
    # the simulation's own fluctuation shifts mu-hat the same way at mu = 1 and mu = 2
    assert r.values["mu"] - 2.0 == pytest.approx(base.values["mu"] - 1.0, abs=0.1)


def test_toys_are_poisson_resamples(demo_model):
    toys = generate_toys(demo_model, 200, seed=5)
    n = toys.counts.sum(axis=1)
    lam = float(np.sum(demo_model.data["w"]))
    assert abs(n.mean() - lam) < 4 * np.sqrt(lam / 200)
    assert n.var(ddof=1) == pytest.approx(lam, rel=0.25)
    assert toys.aux.std() == pytest.approx(1.0, rel=0.1) and abs(toys.aux.mean()) < 0.05


@pytest.fixture(scope="module")
def big_model():
    # 10x the demo luminosity (about 3,700 events per toy): at the demo's own ~370 events a few
    # per cent of toys run away to |alpha| ~ 5 where code-4 shape extrapolation is unnormalised.
    ws = exact_demo_workspace(60000, n_nuisances=10, seed=11, luminosity=10.0)
    return Model(ws, chunk_size=16384, storage_dtype=jnp.float64)


@pytest.mark.slow
@pytest.mark.xfail(run=False, strict=True, reason=("KNOWN FAILURE (see report): toys resampled at mu=1 run away (about 25-35 % of toys) to an NP at -5 and mu ~ 3-6, a lower q than near the truth, because the specified nu(theta) ignores the normalisation of code-4 shape factors, which the interference coefficients amplify"))
def test_500_toys_pulls_and_coverage_at_mu_1(big_model):
    st = toy_study(big_model, 500, seed=123, batch=125)
    assert st["n_converged"] >= 495, st
    assert abs(st["pull_mean"]) < 0.1, st
    assert 0.9 < st["pull_width"] < 1.1, st
    assert 0.63 <= st["coverage_profile_68"] <= 0.73, st


@pytest.mark.slow
@pytest.mark.xfail(run=False, strict=True, reason="same runaway toys as test_500_toys_pulls_and_coverage_at_mu_1")
def test_neyman_belt_is_close_to_wilks(big_model):
    from sbi_engine.fit.toys import neyman_construction

    observed = fit(big_model)
    mu, err = observed.values["mu"], observed.errors["mu"]
    grid = [mu - 2 * err, mu, mu + 2 * err]
    belt = neyman_construction(big_model, grid, n_toys=200, seed=9, observed=observed, batch=100)
    crit = [row["critical"] for row in belt["grid"]]
    assert all(0.6 < c < 1.5 for c in crit), belt  # chi2_1 68 % quantile is 0.99
    accepted = [row["accepted"] for row in belt["grid"]]
    assert accepted == [False, True, False], belt
