"""The noise shrinkage of learned log ratios against closed forms (errors-in-variables).

Synthetic task ratios: a true log ratio s = 0.3 c + b z (c a nuisance shape direction, z what
only this ratio carries), a nominal s + e with a shared error e of sd sigma, and members
nominal + f_j with member spread sigma (bootstrap members: one training's error is of the size
of the shared one). Then var(residual) = b^2 + sigma^2 and lambda = b^2 / (b^2 + sigma^2).
"""

from __future__ import annotations

import numpy as np
import pytest

from sbi_engine.learned_ratios import TaskRatios
from sbi_engine.noise_shrinkage import shape_directions, shrink

N, M = 200_000, 4


def _task(b: float, sigma: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    c, z = rng.normal(size=(2, N))
    s = 0.3 * c + b * z
    nominal = s + sigma * rng.normal(size=N)
    f = rng.normal(size=(M, N))
    f = (f - f.mean(axis=0)) * sigma / np.sqrt(np.mean(np.var(f, axis=0, ddof=1)))
    return TaskRatios("t", nominal + f, nominal), s, c


def _shrunk(tr, c, rows=None, w=None):
    rows = np.arange(N) if rows is None else rows
    w = np.ones(len(rows)) if w is None else w
    norm_rows = np.arange(N)
    return shrink(tr, c[:, None], rows, w, norm_rows, np.ones(N))


def test_lambda_is_the_errors_in_variables_factor_and_makes_the_ratio_calibrated():
    b, sigma = 0.06, 0.045  # noise 75 % of what only this ratio carries (the interference case)
    tr, s, c = _task(b, sigma)
    out, info = _shrunk(tr, c)
    assert info.factor == pytest.approx(b**2 / (b**2 + sigma**2), rel=0.02)
    assert info.noise == pytest.approx(sigma, rel=0.01)
    assert info.residual == pytest.approx(np.hypot(b, sigma), rel=0.01)
    assert info.directions == 1

    # E[s | shrunk] = shrunk: regressing the truth on [1, c, ratio] gives the ratio slope 1
    # (the raw ratio: lambda)
    def slope(t):
        return np.linalg.lstsq(np.column_stack([np.ones(N), c, t]), s, rcond=None)[0][2]

    assert slope(tr.nominal) == pytest.approx(info.factor, abs=0.02)
    assert slope(out.nominal) == pytest.approx(1.0, abs=0.03)
    # and it is closer to the truth (up to the constant the renormalisation sets)
    err_raw = np.var(tr.nominal - s)
    err = np.var(out.nominal - s)
    assert err < 0.7 * err_raw
    # the nuisance-mimicable part is untouched: the coefficient on c stays 0.3
    coef = np.linalg.lstsq(np.column_stack([np.ones(N), c]), out.nominal, rcond=None)[0]
    assert coef[1] == pytest.approx(0.3, abs=0.005)


def test_members_shrink_by_the_same_factor_and_every_ratio_is_normalised():
    tr, _, c = _task(0.06, 0.045, seed=1)
    out, info = _shrunk(tr, c)
    assert out.noise() == pytest.approx(info.factor * tr.noise(), rel=0.01)
    # noise relative to what the ratio carries is what it was (the check judges the raw ratio)
    assert out.signal(confounders=c[:, None]) / out.noise() == pytest.approx(
        tr.signal(confounders=c[:, None]) / tr.noise(), rel=0.01
    )
    np.testing.assert_allclose(np.mean(np.exp(out.members), axis=1), 1.0, rtol=1e-10)
    assert np.mean(np.exp(out.nominal)) == pytest.approx(1.0, rel=1e-10)


def test_noise_far_below_the_signal_changes_nothing():
    tr, _, c = _task(0.5, 0.005, seed=2)
    out, info = _shrunk(tr, c)
    assert info.factor == pytest.approx(1.0, abs=2e-4)
    # the input is not normalised, so compare up to the constant the normalisation sets
    d = out.nominal - tr.nominal
    assert np.ptp(d) < 2e-3 * np.std(tr.nominal)


def test_data_rows_and_weights_choose_where_lambda_is_measured():
    tr, s, c = _task(0.06, 0.045, seed=3)
    half = np.arange(N // 2)
    _, all_rows = _shrunk(tr, c)
    _, on_half = _shrunk(tr, c, rows=half)
    assert on_half.factor == pytest.approx(all_rows.factor, abs=0.03)
    w = np.zeros(N)
    w[half] = 1.0
    _, weighted = _shrunk(tr, c, w=w)
    assert weighted.factor == pytest.approx(on_half.factor, abs=1e-9)
    # a ratio that carries nothing beyond the nuisance direction: all noise, shrunk away
    e = tr.nominal - s
    pure = TaskRatios("t", tr.members - tr.nominal + e, e)
    out, none = _shrunk(pure, c)
    assert none.factor < 0.03
    assert np.std(out.nominal) < 0.2 * np.std(e)


def test_one_member_or_no_shape_directions():
    tr, _, c = _task(0.06, 0.045, seed=4)
    single = TaskRatios("t", tr.members[:1], tr.nominal)
    out, info = _shrunk(single, c)
    assert out is single and info.factor == 1.0 and np.isnan(info.noise)
    no_dirs = shape_directions([np.ones(N), np.full(N, np.nan)], N)  # constant, not finite: dropped
    assert no_dirs.size == 0
    _, info = shrink(tr, no_dirs, np.arange(N), np.ones(N), np.arange(N), np.ones(N))
    # without the direction its 0.3 c counts as signal: lambda is larger
    assert info.directions == 0
    assert info.factor == pytest.approx((0.09 + 0.0036) / (0.09 + 0.0036 + 0.045**2), rel=0.02)
