"""Toys at any mu, validated against the demo's exact truth.

The workspace's normalisation sample is a weighted simulation of B (the reference density,
r_B = 1), with exact ratios r_c = p_c / p_B and exact shape ratios of two nuisances. Because
the model normalises the ratios on that sample (k_c), its expected total at mu is exactly
nu(mu) = sum_c m_c(mu) nu_c, the demo's closed-form ``total_yield(mu)``: the toys' mean count
is tested against that analytic number, and the pulls of mu against N(0, 1).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
from demo_nuisances import demo_nuisances

from sbi_engine.demo import PROCESSES, DemoProblem
from sbi_engine.fit import Model, Workspace, WorkspaceError
from sbi_engine.fit.toys import (
    asimov_weights,
    fit_toys,
    generate_toys,
    toy_expected_counts,
    toy_pull_study,
)

COEFFICIENTS = {"S": "mu - sqrt(mu)", "SBI": "sqrt(mu)", "B": "1 - sqrt(mu)"}
LUMI = 10.0  # ~3,700 events per toy at mu = 1: mu-hat stays well away from its bound 0 at mu >= 1.5
N_SAMPLE = (
    4000  # B simulation rows (the normalisation sample and the population toys are drawn from)
)
TOY_BATCH, TOY_PAD = 100, 4096  # one (batch, events) shape for every mu: one compiled toy fit


def b_reference_workspace(
    n_events: int = N_SAMPLE,
    *,
    n_nuisances: int = 2,
    luminosity: float = LUMI,
    seed: int = 3,
    mu_data: float = 1.0,
    norm_weights: np.ndarray | None = None,
) -> Workspace:
    """Demo workspace on a weighted B simulation: exact ratios to B, exact shape ratios, the
    B weights as normalisation sample and Asimov weights at ``mu_data`` as data."""
    prob = DemoProblem(n_nuisances=n_nuisances, luminosity=luminosity)
    smp = prob.sample("B", n_events, seed)
    x = smp.features
    v = np.asarray(smp.weights if norm_weights is None else norm_weights, dtype=np.float64)
    procs = {
        c: {
            "yield": prob.yield_(c),
            "coefficient": COEFFICIENTS[c],
            "ratio": np.exp(prob.log_ratio(c, "B", x)),
        }
        for c in PROCESSES
    }
    nps = demo_nuisances(
        prob,
        lambda name, c: tuple(np.exp(prob.shape_log_ratio(c, name, x, d)) for d in (1.0, -1.0)),
    )
    base = Workspace.from_arrays(
        pois={"mu": {"init": 1.0, "bounds": (0.0, 20.0)}},
        processes=procs,
        weights=v,
        nuisances=nps,
        data_kind="asimov",
        norm_weights=v,
    )
    w = asimov_weights(Model(base, storage_dtype=jnp.float64), {"mu": mu_data})
    return base.with_data(w, kind="asimov", generated_at={"mu": mu_data})


@pytest.fixture(scope="module")
def problem():
    return DemoProblem(n_nuisances=2, luminosity=LUMI)


@pytest.fixture(scope="module")
def model():
    return Model(b_reference_workspace(), storage_dtype=jnp.float64)


@pytest.mark.parametrize("mu", [0.0, 0.5, 1.0, 1.5, 3.0])
def test_toy_counts_are_the_analytic_total(model, problem, mu):
    """Mean count of 200 toys = nu(mu) (closed form) within 4 standard errors.

    A toy's count is Poisson(nu) (a sum of independent Poissons), so the mean of T toys has
    standard error sqrt(nu / T) ~ 4.3 events at nu ~ 3,700 (0.12 %); clipping negative rows
    or a missing ratio normalisation would show up as a bias in units of that error."""
    nu = problem.total_yield(mu)
    assert toy_expected_counts(model, {"mu": mu}).sum() == pytest.approx(nu, rel=1e-10)
    T = 200
    toys = generate_toys(model, T, seed=17, params={"mu": mu}, pad_to=TOY_PAD)
    n = toys.counts.sum(axis=1)
    assert abs(n.mean() - nu) < 4.0 * math.sqrt(nu / T), (n.mean(), nu)
    # count variance nu: the sample variance of 200 Poisson counts has relative error sqrt(2/199) = 0.10
    assert n.var(ddof=1) == pytest.approx(nu, rel=0.4)


def test_toy_fits_converge_at_mu_half(model):
    """At mu = 0.5 (sigma(mu) ~ 0.10 here, so 5 sigma from the bound) every toy fit converges
    inside the bounds with a finite, positive Hessian error."""
    toys = generate_toys(model, TOY_BATCH, seed=29, params={"mu": 0.5}, pad_to=TOY_PAD)
    fits = fit_toys(model, toys, batch=TOY_BATCH)
    assert fits.converged.all(), np.flatnonzero(~fits.converged)
    assert np.all(fits.theta[:, 0] > 0.0) and np.all(np.isfinite(fits.theta))
    assert np.all((fits.errors[:, 0] > 0.05) & (fits.errors[:, 0] < 0.2))


def test_toy_fits_at_mu_zero_leave_the_bound(model):
    """At mu = 0 the sqrt(mu) term of q has a random sign per toy, so about half of the toys have
    mu-hat > 0 (measured: 51 % when the fits start at mu = 1). Fits started at the truth
    (fit_toys' default) used to report mu-hat = 0 with sigma ~ 1e-51 and 'converged': stuck, as
    the Newton step -g/H at the capped d sqrt(mu)/dmu is ~1e-50. Toys left on the bound are now
    refitted from points inside and keep a refit with lower q; those still on the bound are
    flagged and have no (sub-resolution) error."""
    toys = generate_toys(model, TOY_BATCH, seed=29, params={"mu": 0.0}, pad_to=TOY_PAD)
    fits = fit_toys(model, toys, batch=TOY_BATCH)
    assert fits.converged.all()
    left = fits.theta[:, 0] > 1e-3
    assert 0.25 < np.mean(left) < 0.75
    at = fits.at_bound[:, 0]
    assert np.all(fits.theta[at, 0] <= 1e-8 * 20.0)  # within mu's resolution of the bound
    assert np.all(np.isnan(fits.errors[at, 0]))
    # no sub-resolution errors elsewhere (sigma(mu) = 2 sqrt(mu) sigma(sqrt mu) is small, not 1e-51)
    assert np.all(fits.errors[~at, 0] > 1e-8 * 20.0)


@pytest.mark.parametrize("mu", [1.5, 3.0])
def test_pulls_are_standard_normal(model, mu):
    """Hessian pulls of mu over 300 toys at mu = 1.5 and 3 (where 1 - sqrt(mu) < 0 and the B
    coefficient is negative) are N(0, 1).

    Tolerances: +-0.1 (the asymptotic allowance) plus two statistical errors; with 300 toys the
    pull mean has standard error 1/sqrt(300) = 0.058 and the width 1/sqrt(2 * 299) = 0.041."""
    st = toy_pull_study(model, mu, 300, seed=101, batch=TOY_BATCH, pad_to=TOY_PAD)
    assert st["n_converged"] >= 297, st
    assert abs(st["pull_mean"]) < 0.1 + 2.0 * st["pull_mean_se"], st
    assert 0.9 - 2.0 * st["pull_width_se"] < st["pull_width"] < 1.1 + 2.0 * st["pull_width_se"], st
    assert abs(st["count_pull"]) < 4.0, st
    assert st["count_expected"] == pytest.approx(DemoProblem(2, LUMI).total_yield(mu), rel=1e-10)


SMALL_SAMPLE_WARNING = (
    "ignore:data.norm_weights. the ratios average"  # 600 B rows under-sample the S tail
)


@pytest.mark.filterwarnings(SMALL_SAMPLE_WARNING)
def test_negative_expected_counts_are_an_error_not_clipped():
    """Negative-weight simulation gives rows with a negative expected count: toys must refuse
    (naming rows, the point and what to do) rather than clip them, which would bias the toys."""
    prob = DemoProblem(n_nuisances=2, luminosity=1.0)
    v = prob.sample("B", 600, 3).weights.copy()
    v[[7, 11, 300]] *= -1.0
    ws = b_reference_workspace(600, luminosity=1.0, norm_weights=v)
    m = Model(ws, storage_dtype=jnp.float64)
    with pytest.raises(WorkspaceError) as exc:
        generate_toys(m, 5, seed=1, params={"mu": 3.0})
    msg = str(exc.value)
    assert "3 of 600 rows have a negative expected count" in msg
    assert "7: " in msg and "11: " in msg and "300: " in msg and "mu=3" in msg
    assert "pseudo-data" in msg and "non-negative" in msg


@pytest.mark.filterwarnings(SMALL_SAMPLE_WARNING)
def test_rounding_level_negative_counts_are_zeroed():
    """|lambda_i| < 1e-12 max lambda is rounding, not a negative weight: set to 0, never drawn."""
    prob = DemoProblem(n_nuisances=2, luminosity=1.0)
    v = prob.sample("B", 600, 3).weights.copy()
    v[42] = -1e-15 * v.max()
    m = Model(b_reference_workspace(600, luminosity=1.0, norm_weights=v), storage_dtype=jnp.float64)
    lam = toy_expected_counts(m, {"mu": 1.0})
    assert lam[42] == 0.0 and np.all(lam >= 0)
    toys = generate_toys(m, 20, seed=2, params={"mu": 1.0})
    assert 42 not in set(toys.index[toys.counts > 0].tolist())
