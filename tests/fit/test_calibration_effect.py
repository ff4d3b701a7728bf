"""The calibration effect: a ratio recalibrated by histograms of its own output, and the fit redone.

Truth known in closed form: with u = (m4l - 400) / 200, the reference B has u ~ N(0, 1) and the
signal S has u ~ N(s, 1), so log(p_S / p_B) = s u - s^2 / 2. An ensemble with slope s is the
true ratio (after normalisation); slope s / 2 is a ratio too flat, the networks' usual error.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sbi_engine.calibration_effect import (
    CALIBRATION_EFFECT_LIMIT,
    TaskCalibration,
    calibration_effect_checks,
)
from sbi_engine.fit import fit
from sbi_engine.fit_jobs import build_learned_fit
from sbi_engine.result_checks import CheckRecord, result_status
from tests.fit.test_learned_ratios import FEATURES, linear_ensemble

S_SHIFT = 1.0  # the signal's mean in u: true log r = u - 1/2


def _gaussians(n: int, mean: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, 1.0, n)


def test_the_recalibration_recovers_the_true_ratio_from_a_flat_one():
    """r-hat with half the true slope, or one saturating at both ends (3 tanh(u / 3)),
    recalibrated on 200k + 200k fresh events, is the true log r within 0.05 over |u| < 2 (the
    cubic's own error there is 0.005-0.03 over 6 seeds of these samples; the flat one is off by
    up to 0.6); a calibrated r-hat comes back as itself."""
    u_num, u_den = _gaussians(200_000, S_SHIFT, 1), _gaussians(200_000, 0.0, 2)
    w = np.ones(200_000)
    grid = np.linspace(-2.0, 2.0, 81)
    truth = S_SHIFT * grid - S_SHIFT**2 / 2
    for name, hat in {
        "calibrated": lambda u: S_SHIFT * u,
        "too flat": lambda u: 0.5 * S_SHIFT * u,
        "saturating": lambda u: 3.0 * np.tanh(S_SHIFT * u / 3.0),
    }.items():
        cal = TaskCalibration("t", np.nan, hat(u_num), hat(u_den), w, w)
        err = np.abs(cal.recalibrated(hat(grid)) - truth)
        assert np.max(err) < 0.05, (name, err.max())
        # the recalibrated curve passes the calibration check (what lets an effect be judged;
        # the outer 1 % beyond the fitted range keeps the outermost correction: 2.1 sigma for
        # the saturating one)
        assert cal.residual_deviation() < 3.0, name
    flat = 0.5 * grid - np.log(np.mean(np.exp(0.5 * u_den)))  # normalised on the reference
    assert np.max(np.abs(flat - truth)) > 0.6


def test_a_histogram_calibration_keeps_a_calibrated_ratio_even_in_the_outer_bins():
    """The histogram map's bin centres are log E_ref[r-hat | bin], so a calibrated r-hat maps
    onto itself in the wide outer bins too (30 bins of ~13k events: within 0.05, about 3 bin
    errors, over |u| < 2), and beyond the outermost centres the correction is kept."""
    from sbi_engine.ratio.diagnostics import histogram_calibration

    u_num, u_den = _gaussians(200_000, S_SHIFT, 1), _gaussians(200_000, 0.0, 2)
    w = np.ones(200_000)
    log_r = S_SHIFT * np.linspace(-2.0, 2.0, 81) - S_SHIFT**2 / 2
    cal = histogram_calibration(u_num - 0.5, u_den - 0.5, w, w)
    assert np.max(np.abs(cal.apply(log_r) - log_r)) < 0.05
    far = np.array([-8.0, 8.0])
    assert np.max(np.abs(cal.apply(far) - far)) < 0.1


def _write(path, u: np.ndarray, weight: float) -> dict:
    cols = {"m4l": 400.0 + 200.0 * u}
    for name in FEATURES[1:]:
        cols[name] = np.zeros_like(u)
    cols["weight"] = np.full(u.size, weight)
    pq.write_table(pa.table(cols), path)
    return {"format": "parquet", "features": FEATURES, "weight": "weight", "path": str(path)}


def _spec(tmp_path) -> dict:
    """S (50 expected events) over B (200) in one feature; observed data drawn at mu = 1."""
    rng = np.random.default_rng(7)
    n_s, n_b = rng.poisson(50), rng.poisson(200)
    data = np.concatenate([_gaussians(n_s, S_SHIFT, 11), _gaussians(n_b, 0.0, 12)])
    return {
        "name": "fit",
        "campaign": "c",
        "kind": "fit",
        "params": {
            "reference": "B",
            "mu_true": 1.0,
            "processes": {
                "S": _write(tmp_path / "S.parquet", _gaussians(60_000, S_SHIFT, 3), 50 / 60_000),
                "B": _write(tmp_path / "B.parquet", _gaussians(60_000, 0.0, 4), 200 / 60_000),
            },
            "tasks": {"S_vs_B": {"kind": "process", "process": "S"}},
            "systematics": [],
            "data": _write(tmp_path / "data.parquet", data, 1.0),
            "coefficients": {"S": "mu", "B": "1"},
            "yields": {"S": 50.0, "B": 200.0},
            "poi": {"init": 1.0, "bounds": [0.0, 20.0]},
        },
    }


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    return _spec(tmp_path_factory.mktemp("cal"))


@pytest.mark.parametrize(
    "slopes, relevant",
    [
        ([S_SHIFT * f for f in (0.98, 1.0, 1.02, 1.0)], False),  # the truth, with member noise
        ([S_SHIFT * f for f in (0.49, 0.5, 0.51, 0.5)], True),  # half the slope: too flat
    ],
)
def test_the_effect_of_a_miscalibration_on_mu_is_measured_and_judged(
    tmp_path, spec, slopes, relevant
):
    ens = {"S_vs_B": [linear_ensemble(tmp_path / "s.npz", slopes)]}
    lf = build_learned_fit(spec, ens)
    res = fit(lf.workspace)
    (rec,) = calibration_effect_checks(lf, res, ens, lf.evaluation_samples)
    assert rec["name"] == "calibration_effect" and rec["task"] == "S_vs_B"
    assert rec["threshold"] == CALIBRATION_EFFECT_LIMIT
    assert rec["passed"] is (not relevant), rec["message"]
    if relevant:
        # the too-flat ratio fitted 250 events: the recalibrated one moves mu-hat by a
        # sizeable part of its error, and the message says so
        assert rec["value"] > 0.3 and "matters" in rec["message"]
    else:
        # the truth: the shift is the recalibration's own noise (18k evaluation events a
        # class), so the check does not fail; whether it is small enough to excuse a failed
        # calibration depends on that noise, which the record carries
        assert rec["value"] < CALIBRATION_EFFECT_LIMIT and 0 < rec["error"] < 0.1
    assert "sigma global" in rec["message"] and "bootstrap replicas" in rec["message"]


def _rec(name, task, passed, value=1.0, threshold=0.5, error=0.01):
    return CheckRecord(
        name, task, value, threshold, passed, f"{name}: {'ok' if passed else 'red'}", error=error
    )


def test_a_significant_miscalibration_that_does_not_move_the_result_passes():
    status = result_status(
        [
            _rec("calibration", "A", False, 3.4, 3.0),
            _rec("calibration_effect", "A", True, 0.03, 0.1),
            _rec("closure_chi2_ndf", "A", True, 1.1, 3.0),
        ]
    )
    assert status.passed, status.summary()
    (cal,) = [r for r in status.checks if r.name == "calibration"]
    assert cal.passed and "irrelevant to the result" in cal.message and "0.03 ± 0.01" in cal.message
    (effect,) = [r for r in status.checks if r.name == "calibration_effect"]
    assert effect.short() == "A calibration effect (σ of the POI) 0.03 ± 0.01 <= 0.1"
    assert CheckRecord.from_dict(effect.to_dict()) == effect  # the error survives storage


@pytest.mark.parametrize(
    "records, failed",
    [
        # the effect is large: both fail
        (
            [
                _rec("calibration", "A", False, 3.4, 3.0),
                _rec("calibration_effect", "A", False, 0.4, 0.1),
            ],
            {"calibration", "calibration_effect"},
        ),
        # one fit job found it harmless, another did not: the worst record decides
        (
            [
                _rec("calibration", "A", False, 3.4, 3.0),
                _rec("calibration_effect", "A", True, 0.03, 0.1),
                _rec("calibration_effect", "A", False, 0.2, 0.1),
            ],
            {"calibration", "calibration_effect"},
        ),
        # within the limit, but not with its noise: too few evaluation events to excuse it
        (
            [
                _rec("calibration", "A", False, 3.4, 3.0),
                _rec("calibration_effect", "A", True, 0.06, 0.1, error=0.05),
            ],
            {"calibration"},
        ),
        # another task's harmless effect excuses nothing
        (
            [
                _rec("calibration", "A", False, 3.4, 3.0),
                _rec("calibration_effect", "B", True, 0.03, 0.1),
            ],
            {"calibration"},
        ),
        # no fit judged it: the significance test stands
        ([_rec("calibration", "A", False, 3.4, 3.0)], {"calibration"}),
        # only calibration is weighed by its effect
        (
            [
                _rec("closure_chi2_ndf", "A", False, 3.4, 3.0),
                _rec("calibration_effect", "A", True, 0.03, 0.1),
            ],
            {"closure_chi2_ndf"},
        ),
    ],
)
def test_a_miscalibration_stays_failed_unless_every_fit_found_it_harmless(records, failed):
    status = result_status(records)
    assert not status.passed
    assert {r.name for r in status.failed} == failed


def test_the_report_lists_an_excused_calibration_and_why():
    from backend.analysis.report import result_status_markdown

    status = result_status(
        [
            _rec("calibration", "A", False, 3.4, 3.0),
            _rec("calibration_effect", "A", True, 0.03, 0.1),
        ]
    ).to_dict()
    md = "\n".join(result_status_markdown(status))
    assert md.startswith("**Result status: checks passed** (all 2 checks passed)")
    assert "Beyond their threshold, but the result was shown not to depend on them" in md
    (row,) = [line for line in md.splitlines() if line.startswith("| calibration | A |")]
    assert "| 3.4000 | ≤ 3.0000 |" in row and "irrelevant to the result" in row
    # nothing to excuse: no such table
    plain = result_status([_rec("calibration", "A", True, 1.0, 3.0)]).to_dict()
    assert "Beyond their threshold" not in "\n".join(result_status_markdown(plain))


def test_a_cap_measures_the_most_deviating_tasks_and_an_unreadable_task_is_reported(tmp_path, spec):
    """max_tasks 0: nothing refitted, one record names the task left out; a task whose
    evaluation events cannot be read gets a record saying why, and the fit job goes on."""
    ens = {"S_vs_B": [linear_ensemble(tmp_path / "s.npz", [S_SHIFT] * 4)]}
    lf = build_learned_fit(spec, ens)
    res = fit(lf.workspace)
    (left,) = calibration_effect_checks(lf, res, ens, lf.evaluation_samples, max_tasks=0)
    assert left["passed"] and left["value"] is None and "not for 1 more (S_vs_B)" in left["message"]

    def unreadable(task):
        raise OSError(f"{task}: evaluation file gone")

    (rec,) = calibration_effect_checks(lf, res, ens, unreadable)
    assert rec["task"] == "S_vs_B" and rec["value"] is None and rec["passed"]
    assert rec["message"] == "not measured: OSError: S_vs_B: evaluation file gone"
    excused = result_status(
        [
            CheckRecord("calibration", "S_vs_B", 3.4, 3.0, False, "calibration: red"),
            CheckRecord.from_dict(rec),
        ]
    )
    assert not excused.passed  # an unmeasured effect excuses nothing


def test_with_the_noise_shrinkage_the_effect_is_measured_on_the_networks_own_ratio(tmp_path, spec):
    """shrink_noise on: the fit uses a shrunk S ratio, but the recalibration judges the
    networks' output, so the shift is taken from a refit with the unshrunk ratio and equals
    the one without the shrinkage (the same recalibrated arrays against the same base)."""
    import copy

    ens = {"S_vs_B": [linear_ensemble(tmp_path / "s.npz", [S_SHIFT * 0.5] * 3 + [S_SHIFT * 0.52])]}
    plain = build_learned_fit(spec, ens)
    (want,) = calibration_effect_checks(plain, fit(plain.workspace), ens, plain.evaluation_samples)
    shrunk_spec = copy.deepcopy(spec)
    shrunk_spec["params"]["options"] = {"shrink_noise": True}
    shrunk = build_learned_fit(shrunk_spec, ens)
    assert shrunk.shrinkage and "S_vs_B" in shrunk.unshrunk
    (got,) = calibration_effect_checks(
        shrunk, fit(shrunk.workspace), ens, shrunk.evaluation_samples
    )
    assert got["value"] == pytest.approx(want["value"], rel=1e-3, abs=1e-4)
    assert not got["passed"] and got["value"] > 0.3  # half the slope: it matters either way


def test_a_paired_recalibration_of_the_true_ratio_is_exact_and_noiseless():
    """A hypothesis simulated by reweighting: the numerator is the reference's events weighted
    by the true ratio. Each event then carries its own soft label, the logistic fit of the true
    log r is the identity (up to a constant the renormalisation removes) on every replica, so
    the recalibration neither moves nor scatters anything; resampled as two independent
    samples it would scatter."""
    u = _gaussians(100_000, 0.0, 5)
    log_r = S_SHIFT * u - S_SHIFT**2 / 2
    w = np.ones_like(u)
    paired = TaskCalibration("t", np.nan, log_r, log_r, np.exp(log_r), w, paired=True)
    unpaired = TaskCalibration("t", np.nan, log_r, log_r, np.exp(log_r), w)
    normalised = log_r - np.log(np.mean(np.exp(log_r)))
    for k in (None, 0, 1, 2):
        np.testing.assert_allclose(paired.recalibrated(log_r, k), normalised, atol=1e-6)
    spread = np.std([unpaired.recalibrated(log_r, k)[:1000] for k in range(4)], axis=0)
    assert np.mean(spread) > 1e-3
