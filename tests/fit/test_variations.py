"""Refits with other per-event arrays (NN variations, bootstrap of the normalisation sample),
sharing the base model's compiled fit.

The problem: observed pseudo-data (demo at mu = 1, 10x luminosity, ~3,700 events, weight 1)
and, in separate rows (weight 0), a weighted B simulation of 2,000 events as the
normalisation sample (exact ratios to B, two nuisances with exact shape effects). A small
normalisation sample makes its statistical uncertainty on mu-hat visible.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from demo_nuisances import demo_nuisances

from sbi_engine.demo import PROCESSES, DemoProblem
from sbi_engine.fit import Model, Workspace, fit
from sbi_engine.fit.api import newton_executable
from sbi_engine.fit.variations import Variant, bootstrap_norm_variants, refit_variants, variant_data

COEFFICIENTS = {"S": "mu - sqrt(mu)", "SBI": "sqrt(mu)", "B": "1 - sqrt(mu)"}
N_NORM = 2000
PROB = DemoProblem(n_nuisances=2, luminosity=10.0)
DATA_X = PROB.sample_mixture(1.0, None, seed=5, poisson=True).features
# the B sample's S ratio tail makes E_v[r_S] miss 1 by several % at this size: expected here
pytestmark = pytest.mark.filterwarnings("ignore:data.norm_weights. the ratios average")


def arrays(
    x: np.ndarray,
) -> tuple[dict[str, np.ndarray], dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]]:
    """Exact ratios to B and exact shape ratios of every nuisance effect at events x."""
    ratios = {c: np.exp(PROB.log_ratio(c, "B", x)) for c in PROCESSES}
    shapes = {
        (nk.name, c): tuple(np.exp(PROB.shape_log_ratio(c, nk.name, x, d)) for d in (1.0, -1.0))
        for nk in PROB.nuisances
        for c in nk.shape_processes
    }
    return ratios, shapes


def norm_rows(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(events, weights) of a fresh B simulation: one normalisation sample."""
    smp = PROB.sample("B", N_NORM, seed)
    return smp.features, smp.weights


def rows_arrays(seed: int):
    """Per-event arrays of data rows followed by the normalisation rows of B sample ``seed``."""
    xn, v = norm_rows(seed)
    x = np.concatenate([DATA_X, xn])
    ratios, shapes = arrays(x)
    nd = DATA_X.shape[0]
    return ratios, shapes, np.r_[np.zeros(nd), v], np.r_[np.ones(nd), np.zeros(N_NORM)]


def build_workspace(ratios, shapes, norm_weights, weights) -> Workspace:
    nps = demo_nuisances(PROB, lambda name, c: shapes[(name, c)])
    procs = {
        c: {"yield": PROB.yield_(c), "coefficient": COEFFICIENTS[c], "ratio": ratios[c]}
        for c in PROCESSES
    }
    return Workspace.from_arrays(
        pois={"mu": {"init": 1.0, "bounds": (0.0, 20.0)}},
        processes=procs,
        weights=weights,
        nuisances=nps,
        data_kind="observed",
        norm_weights=norm_weights,
    )


@pytest.fixture(scope="module")
def base():
    ratios, shapes, v, w = rows_arrays(seed=100)
    ws = build_workspace(ratios, shapes, v, w)
    model = Model(ws)  # float32 storage, as model_for builds it
    return ws, model, fit(model), (ratios, shapes, v, w)


def _rel(a, b):
    return np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.maximum(np.abs(np.asarray(b)), 1e-300))


def test_identity_variants_reproduce_the_base_fit(base):
    """An empty variant and one that passes the base arrays explicitly reproduce the base fit."""
    ws, model, ref, (ratios, shapes, v, _) = base
    assert ref.converged and model.has_norm and model.norm_source == "norm_weights"
    fits = refit_variants(
        model, [Variant(label="empty"), Variant(ratios=ratios, shapes=shapes, norm_weights=v)]
    )
    assert fits.converged.all()
    ref_err = np.array([ref.errors[n] for n in model.names])
    for j in range(2):
        assert np.max(np.abs(fits.theta[j] - ref.theta)) < 1e-8, fits.theta[j] - ref.theta
        assert np.max(np.abs(fits.errors[j] - ref_err)) < 1e-8
    assert fits.labels == ("empty", "1")


def test_changed_ratios_equal_a_fresh_workspace(base):
    """A variant with other ratios (an NN-like deformation of r_S and r_SBI, changing k_c too)
    gives the fit of a freshly built Workspace with those ratios, to 1e-6 relative."""
    ws, model, ref, (ratios, shapes, v, w) = base
    x_m = np.concatenate([DATA_X, norm_rows(100)[0]])[:, 0]
    other = dict(ratios)
    other["S"] = ratios["S"] * np.exp(0.15 * np.sin(x_m / 40.0))
    other["SBI"] = ratios["SBI"] * np.exp(-0.05 * np.cos(x_m / 70.0))
    var_fit = refit_variants(
        model, [Variant(ratios={"S": other["S"], "SBI": other["SBI"]})]
    ).results[0]
    fresh_model = Model(build_workspace(other, shapes, v, w))
    fresh = fit(fresh_model)
    assert var_fit.converged and fresh.converged
    assert (
        np.max(np.abs(fresh_model.ratio_scale / model.ratio_scale - 1)) > 1e-3
    )  # the k_c really changed
    assert (
        abs(var_fit.values["mu"] - ref.values["mu"]) > 10 * 1e-6 * ref.values["mu"]
    )  # and so did mu-hat
    assert _rel(var_fit.values["mu"], fresh.values["mu"]) < 1e-6
    assert (
        _rel([var_fit.errors[n] for n in model.names], [fresh.errors[n] for n in model.names])
        < 1e-6
    )
    np.testing.assert_allclose(var_fit.theta, fresh.theta, rtol=1e-6, atol=1e-7)


def test_all_variants_share_one_compilation(base):
    """Several variants (ratios, shapes, normalisation weights) reuse the compiled Newton fit."""
    ws, model, ref, (ratios, shapes, v, _) = base
    exe = newton_executable(model)
    before = (model.clock.count, len(exe._cache))
    key = next(iter(shapes))
    variants = [
        Variant(ratios={"S": ratios["S"] * 1.01}),
        Variant(shapes={key: (shapes[key][0] ** 1.1, shapes[key][1])}),
        *bootstrap_norm_variants(model, 3, seed=1),
    ]
    fits = refit_variants(model, variants, init=ref)
    assert fits.converged.all()
    assert (model.clock.count, len(exe._cache)) == before == (model.clock.count, 1)
    # every variant's pytree has the base data's structure, shapes and dtypes
    sig = lambda d: [(np.shape(a), str(a.dtype)) for a in jax.tree_util.tree_leaves(d)]  # noqa: E731
    assert all(sig(variant_data(model, var)) == sig(model.data) for var in variants)


def test_bootstrap_spread_matches_fresh_normalisation_samples(base):
    """The Poisson(1) bootstrap spread of mu-hat over the normalisation sample agrees within a
    factor 2 with the spread over 30 independently simulated normalisation samples (same data).

    With 30 replicas each standard deviation has a relative standard error 1/sqrt(58) = 13 %,
    so their ratio is within about +-20 % (1 sigma) of the truth; a factor 2 is > 3 sigma."""
    ws, model, ref, (_, _, _, w) = base
    boot = refit_variants(model, bootstrap_norm_variants(model, 30, seed=7), init=ref)
    fresh_variants = []
    for seed in range(200, 230):
        ratios, shapes, v, _ = rows_arrays(seed)
        fresh_variants.append(
            Variant(ratios=ratios, shapes=shapes, norm_weights=v, label=f"B seed {seed}")
        )
    indep = refit_variants(model, fresh_variants, init=ref)
    assert boot.converged.sum() >= 29 and indep.converged.sum() >= 29
    s_boot, se_boot = boot.spread("mu")
    s_ind, se_ind = indep.spread("mu")
    assert s_boot > 0 and s_boot > 5 * 1e-6
    assert 0.5 < s_boot / s_ind < 2.0, (s_boot, se_boot, s_ind, se_ind)
    assert se_boot == pytest.approx(s_boot / np.sqrt(2 * (boot.converged.sum() - 1)))
