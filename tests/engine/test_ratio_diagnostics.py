"""Diagnostics against analytic truth: an exact-ratio 'ensemble' must pass, a wrong one must fail."""

import json

import numpy as np
import pytest
from scipy.stats import norm

from sbi_engine.data import Sample
from sbi_engine.ratio import Ensemble, diagnostics
from sbi_engine.ratio.diagnostics import (
    calibration_curve,
    closure,
    weighted_roc,
)
from sbi_engine.ratio.ensemble import FORMAT
from sbi_engine.ratio.prepare import Standardizer

MU = 0.7  # numerator N(MU, 1), reference N(0, 1): log r(x) = MU x - MU^2 / 2


def samples(n, seed):
    rng = np.random.default_rng(seed)
    num = Sample(rng.normal(MU, 1.0, (n, 1)), np.full(n, 3.0), ("x",), "num")
    ref = Sample(
        rng.normal(0.0, 1.0, (n, 1)), rng.uniform(0.5, 1.5, n), ("x",), "ref"
    )  # weights ~ 1
    return num, ref


def linear_ensemble(slopes, offsets):
    """Members that are exactly log r = a x + b: one hidden ReLU pair, h = relu(x) - relu(-x) = x."""
    m = len(slopes)
    k1 = np.tile(np.array([[1.0, -1.0]], np.float32), (m, 1, 1))
    out = np.stack([np.array([[a], [-a]], np.float32) for a in slopes])
    params = {
        "hidden_0": {"kernel": k1, "bias": np.zeros((m, 2), np.float32)},
        "output": {"kernel": out, "bias": np.asarray(offsets, np.float32)[:, None]},
    }
    scaler = Standardizer(np.zeros(1, np.float32), np.ones(1, np.float32))
    meta = {
        "format": FORMAT,
        "model": {"hidden_layers": 1, "width": 2, "activation": "relu", "dtype": "float32"},
        "feature_names": ["x"],
        "scaler": scaler.to_dict(),
        "config": {},
    }
    return Ensemble(params, meta)


@pytest.fixture(scope="module")
def holdout():
    return samples(40000, seed=5)


def test_exact_ratio_passes_every_check(holdout):
    num, ref = holdout
    exact = linear_ensemble([MU, MU], [-(MU**2) / 2, -(MU**2) / 2])
    d = diagnostics(exact, num, ref, calibrate=True)
    assert d.members == 2
    assert abs(d.normalization - 1) < 3 * d.normalization_error + 1e-3
    assert d.max_closure_chi2_ndf < 2.0
    assert d.calibration[0].member is None and d.calibration[0].max_deviation < 4.0
    # AUC of two unit Gaussians separated by MU is Phi(MU / sqrt 2)
    assert d.auc == pytest.approx(norm.cdf(MU / np.sqrt(2)), abs=0.005)
    assert d.saturated_fraction == 0.0
    # already calibrated: the histogram calibration is (nearly) the identity
    grid = np.linspace(-1.0, 1.0, 5)
    np.testing.assert_allclose(d.histogram_calibration.apply(grid), grid, atol=0.05)
    json.dumps(d.to_dict())  # JSON-safe


def test_wrong_ratio_fails_closure_normalisation_and_calibration(holdout):
    num, ref = holdout
    wrong = linear_ensemble([0.5 * MU], [0.0])  # half the slope, no normalising offset
    d = diagnostics(wrong, num, ref, calibrate=True)
    assert d.max_closure_chi2_ndf > 10
    assert abs(d.normalization - 1) > 10 * d.normalization_error
    assert d.calibration[0].max_deviation > 5
    # the histogram calibration repairs it: calibrated(a x / 2) = a x - a^2/2
    z = np.array([-0.3, 0.0, 0.3])
    np.testing.assert_allclose(d.histogram_calibration.apply(z), 2 * z - MU**2 / 2, atol=0.06)


def test_overtraining_losses_and_saturation(holdout):
    num, ref = holdout
    big = linear_ensemble([MU, 40.0], [-(MU**2) / 2, 0.0])  # second member: saturated, awful
    d = diagnostics(big, num, ref, train_numerator=num, train_reference=ref)
    good, bad = d.losses
    assert good.train_loss == pytest.approx(good.holdout_loss)  # same events -> same loss
    assert bad.holdout_loss > good.holdout_loss
    assert d.member_saturated_fraction[0] == 0.0 and d.member_saturated_fraction[1] > 0.3


def test_weighted_auc_matches_brute_force_pairs():
    rng = np.random.default_rng(3)
    s1, s0 = rng.normal(0.5, 1, 300), rng.normal(0, 1, 200)
    w1, w0 = rng.random(300), rng.random(200)
    auc, fpr, tpr = weighted_roc(s1, s0, w1, w0)
    pair = (s1[:, None] > s0[None, :]) * w1[:, None] * w0[None, :]
    assert auc == pytest.approx(pair.sum() / (w1.sum() * w0.sum()), rel=1e-10)
    assert fpr[0] == 0 and tpr[-1] == pytest.approx(1.0)


def test_closure_chi2_is_about_one_for_statistical_fluctuations_only():
    rng = np.random.default_rng(4)
    chis = [
        closure(
            "x",
            rng.normal(size=5000),
            np.ones(5000),
            rng.normal(size=5000),
            np.ones(5000),
            np.ones(5000),
            bins=10,
        ).chi2_ndf
        for _ in range(20)
    ]
    assert 0.6 < np.mean(chis) < 1.5


def test_calibration_curve_is_diagonal_for_true_posterior():
    rng = np.random.default_rng(6)
    x1, x0 = rng.normal(MU, 1, 50000), rng.normal(0, 1, 50000)
    c = calibration_curve(
        MU * x1 - MU**2 / 2, MU * x0 - MU**2 / 2, np.ones(50000), np.ones(50000), bins=10
    )
    ok = np.asarray(c.weight) > 100
    np.testing.assert_allclose(
        np.asarray(c.observed_fraction)[ok], np.asarray(c.mean_score)[ok], atol=0.03
    )


def test_look_elsewhere_sigma_is_the_sidak_global_significance():
    from sbi_engine.ratio.diagnostics import look_elsewhere_sigma

    assert look_elsewhere_sigma(2.5, 1) == 2.5
    p_local = 2 * norm.sf(3.0)
    p_global = 1 - (1 - p_local) ** 20
    assert look_elsewhere_sigma(3.0, 20) == pytest.approx(norm.isf(p_global / 2), rel=1e-9)
    assert 1.9 < look_elsewhere_sigma(3.0, 20) < 2.0  # 3 local sigma in 20 bins: p 0.053
    assert look_elsewhere_sigma(12.0, 20) == pytest.approx(11.8, abs=0.1)  # far out: ~local
    # under the null the global significance exceeds 3 in 0.27 % of curves, whatever the bins
    rng = np.random.default_rng(0)
    z = np.abs(rng.normal(size=(200_000, 20))).max(axis=1)
    glob = np.array([look_elsewhere_sigma(v, 20) for v in z[:20_000]])
    assert np.mean(z > 3) == pytest.approx(0.053, abs=0.003)
    assert np.mean(glob > 3) == pytest.approx(0.0027, abs=0.0012)


def test_a_steep_true_ratio_saturates_but_is_not_overconfident():
    """A narrow numerator over a wide reference: the true |log r| passes 13.8 on 1/4 of the
    reference events (where the numerator has no density), but no numerator event is called
    impossible; 40 times the true log ratio calls a fifth of the reference impossible."""
    rng = np.random.default_rng(2)
    n = 40_000
    num = Sample(rng.normal(0.0, 0.2, (n, 1)), np.ones(n), ("x",), "narrow")
    ref = Sample(rng.normal(0.0, 2.0, (n, 1)), np.ones(n), ("x",), "wide")
    # log N(x; 0, 0.2) - log N(x; 0, 2) = log 10 - x^2 (1 / 0.08 - 1 / 8) / 2
    from sbi_engine.ratio.diagnostics import overconfident_fraction

    def log_r(x):
        return np.log(10.0) - x[:, 0] ** 2 * (1 / 0.08 - 1 / 8) / 2

    zn, zr = log_r(num.features), log_r(ref.features)
    assert np.mean(np.abs(zr) > 13.8) > 0.2  # the old saturation reading fails the truth
    assert overconfident_fraction(zn, zr, num.weights, ref.weights, 13.8) == 0.0
    assert overconfident_fraction(40 * zn, 40 * zr, num.weights, ref.weights, 13.8) > 0.15
    signed = np.where(rng.random(n) < 0.1, -1.0, 1.0)  # signed weights: shares stay in [0, 1]
    assert 0.0 <= overconfident_fraction(zn, zr, signed, ref.weights, 13.8) <= 1.0


def test_auc_null_error_is_the_spread_of_indistinguishable_aucs():
    from sbi_engine.ratio.diagnostics import auc_null_error

    rng = np.random.default_rng(3)
    n1, n2 = 400, 600
    w1, w2 = rng.uniform(0.5, 1.5, n1), rng.uniform(0.5, 1.5, n2)
    aucs = [
        weighted_roc(rng.normal(size=n1), rng.normal(size=n2), w1, w2, points=2)[0]
        for _ in range(1500)
    ]
    err = auc_null_error(w1, w2)
    # Kish sizes of U(0.5, 1.5) weights are 12/13 of the counts; the sd of an sd from 1500
    # draws is 1.8 %, so 8 % is over 4 of its errors
    assert np.mean(aucs) == pytest.approx(0.5, abs=3 * err / np.sqrt(1500) + 1e-3)
    assert np.std(aucs) == pytest.approx(err, rel=0.08)


def test_logit_slope_is_one_for_the_true_ratio_and_the_inverse_flattening_otherwise(holdout):
    """b = 1 within its error for the exact ratio; a log ratio at half the slope gives b = 2
    (the regression undoes the flattening); the error matches the spread over fresh samples."""
    from sbi_engine.ratio.diagnostics import logit_slope

    num, ref = holdout
    exact = linear_ensemble([MU], [-(MU**2) / 2])
    d = diagnostics(exact, num, ref)
    assert abs(d.logit_slope - 1.0) < 3 * d.logit_slope_error
    assert 0.005 < d.logit_slope_error < 0.03  # 40k + 40k events, separation 0.7
    flat = diagnostics(linear_ensemble([MU / 2], [-(MU**2) / 8]), num, ref)
    assert flat.logit_slope == pytest.approx(2.0, abs=4 * flat.logit_slope_error)
    slopes = []
    for seed in range(40):
        n, r = samples(4000, seed=100 + seed)
        z = lambda s: MU * s.features[:, 0] - MU**2 / 2  # noqa: E731
        slopes.append(logit_slope(z(n), z(r), n.weights, r.weights))
    b, err = np.array(slopes).T
    # the sd of an sd from 40 draws is 11 %: 35 % is 3 of its errors
    assert np.std(b) == pytest.approx(np.mean(err), rel=0.35)
    assert abs(np.mean(b) - 1) < 3 * np.mean(err) / np.sqrt(40)
