"""Profile-likelihood intervals by root finding, against iminuit MINOS on the same NLL; scans
that flag (not drop) bad points, refine where the curve bends and report grid-free intervals;
the asymmetric errors in the fit job's summary and the analysis report."""

from __future__ import annotations

import numpy as np
import pytest

from backend.analysis import report
from sbi_engine.closure import profile_interval as closure_interval
from sbi_engine.fit import Model, Workspace, fit
from sbi_engine.fit.intervals import LEVELS, ProfileInterval, profile_interval, profile_intervals
from sbi_engine.fit.scan import Scan, monotonic_flags, profile_scan
from sbi_engine.fit.summary import format_summary
from sbi_engine.fit_jobs import _profile_errors


def minos(model: Model, result, cl: float, poi: str = "mu") -> tuple[float, float, bool]:
    """iminuit MIGRAD + MINOS on the project's NLL (q = -2 ln L, errordef 1): the interval's
    ends and whether the lower one stopped at the POI's bound."""
    from iminuit import Minuit

    m = Minuit(
        lambda t: model.nll(np.asarray(t)),
        np.asarray(result.theta, dtype=float),
        grad=lambda t: model.value_and_grad(np.asarray(t))[1],
        name=list(model.names),
    )
    m.errordef = Minuit.LEAST_SQUARES
    m.strategy = 2
    m.tol = 1e-6
    m.limits = [
        (lo if np.isfinite(lo) else None, hi if np.isfinite(hi) else None)
        for lo, hi in zip(model.lower, model.upper)
    ]
    m.migrad()
    m.minos(poi, cl=cl)
    me = m.merrors[poi]
    assert me.is_valid, me
    best = float(m.values[poi])
    return best + me.lower, best + me.upper, bool(me.at_lower_limit)


@pytest.fixture(scope="module")
def poisson_model():
    """A low-count unbinned problem: 6 events, signal shape 2x on [0, 1] over a flat
    background of yield 1 with a 30 % normalisation nuisance: strongly asymmetric errors."""
    n = 6
    x = np.random.default_rng(11).uniform(0.0, 1.0, n)
    ws = Workspace.from_arrays(
        pois={"mu": {"init": 1.0, "bounds": (0.0, 20.0)}},
        processes={
            "S": {"yield": 2.0, "coefficient": "mu", "ratio": 2.0 * x},
            "B": {"yield": 1.0, "coefficient": "1", "ratio": np.ones(n)},
        },
        weights=np.ones(n),
        nuisances=[{"name": "bkg", "effects": {"B": {"norm": (1.3, 1.0 / 1.3)}}}],
    )
    return Model(ws, storage_dtype=np.float64)


def test_demo_interval_agrees_with_minos(demo_model, demo_fit):
    iv = profile_interval(demo_model, demo_fit, "mu", level=1.0)
    sig = demo_fit.errors["mu"]
    lo, hi, _ = minos(demo_model, demo_fit, cl=1.0)
    assert iv.flags == () and 0 < iv.n_fits <= 16
    assert abs(iv.lo - lo) < 0.01 * sig and abs(iv.hi - hi) < 0.01 * sig
    assert iv.err_lo == pytest.approx(iv.lo - iv.best) and iv.err_lo < 0 < iv.err_hi
    # the demo's profile is mildly asymmetric: the Hesse error is not the interval
    assert iv.err_hi - (-iv.err_lo) > 0.05 * sig
    assert closure_interval(demo_model, demo_fit) == pytest.approx((iv.lo, iv.hi), abs=1e-4 * sig)


def test_low_count_intervals_agree_with_minos(poisson_model):
    res = fit(poisson_model)
    assert res.converged, res.message
    sig = res.errors["mu"]
    ivs = profile_intervals(poisson_model, res, "mu")
    for key, cl in (("68", 1.0), ("95", 0.95)):
        iv = ivs[key]
        lo, hi, at_limit = minos(poisson_model, res, cl=cl)
        assert not at_limit and not iv.lo_at_bound
        assert abs(iv.lo - lo) < 0.01 * sig and abs(iv.hi - hi) < 0.01 * sig, (key, iv, lo, hi)
    e68 = ivs["68"]
    assert e68.err_hi > 1.3 * -e68.err_lo  # clearly asymmetric (Poisson, few events)
    assert ivs["95"].lo < e68.lo < res.values["mu"] < e68.hi < ivs["95"].hi


def test_an_end_beyond_the_bound_is_the_bound(poisson_model):
    """Two background-like events: mu-hat = 0.12, both lower ends at the bound mu = 0."""
    w = np.zeros(6)
    w[:2] = 1.0
    data = poisson_model.with_weights(w)
    res = fit(poisson_model, data=data, init={"mu": 0.3})  # the intervals are under test here
    from iminuit import Minuit

    m = Minuit(
        lambda t: poisson_model.nll(np.asarray(t), data), res.theta.copy(), name=["mu", "bkg"]
    )
    m.errordef, m.strategy, m.tol = 1.0, 2, 1e-6
    m.limits["mu"] = (0.0, 20.0)
    m.migrad()
    assert res.values["mu"] == pytest.approx(m.values["mu"], abs=1e-3)
    assert res.values["mu"] > 0.1
    ivs = profile_intervals(poisson_model, res, "mu", data=data)
    for key, cl in (("68", 1.0), ("95", 0.95)):
        iv = ivs[key]
        assert iv.lo == 0.0 and iv.lo_at_bound and iv.flags == ("lo_at_bound",)
        assert iv.err_lo == pytest.approx(-res.values["mu"])
        m.minos("mu", cl=cl)
        me = m.merrors["mu"]
        assert me.at_lower_limit  # MINOS stops at the limit too
        assert abs(m.values["mu"] + me.upper - iv.hi) < 0.01 * iv.sigma_hesse
    # a best fit that is not the minimum (here: mu held at 0) is flagged, not hidden
    at_zero = fit(poisson_model, data=data, fixed={"mu": 0.0})
    stuck = profile_interval(poisson_model, at_zero, "mu", data=data)
    assert "new_minimum" in stuck.flags


def test_scan_interval_does_not_depend_on_the_grid(demo_model, demo_fit):
    sig = demo_fit.errors["mu"]
    grids = [
        {"n_points": 6},
        {"n_points": 21},
        {"values": np.linspace(0.0, 2.0, 5)},  # coarse: the grid's own crossings are 0.13 sigma off
    ]
    scans = [profile_scan(demo_model, demo_fit, "mu", **g) for g in grids]
    ref = np.array(scans[1].intervals["68"])
    for s in scans:
        assert np.max(np.abs(np.array(s.intervals["68"]) - ref)) < 0.02 * sig
        assert s.profile["68"].ends == s.intervals["68"] and s.flags == ()
    coarse = np.array(scans[2].grid_intervals["68"])
    assert np.max(np.abs(coarse - ref)) > 0.1 * sig  # what the grid alone would have said


def test_scan_refines_where_the_curve_bends(demo_model, demo_fit):
    s = profile_scan(demo_model, demo_fit, "mu", n_points=6, intervals=False)
    assert s.n_refined > 0 and len(s.values) == 6 + s.n_refined
    assert s.profile == {} and s.intervals == s.grid_intervals
    assert s.converged.all() and not s.non_monotonic.any()
    fixed = profile_scan(demo_model, demo_fit, "mu", values=np.array([0.5, 1.5]), intervals=False)
    assert fixed.n_refined == 0 and list(fixed.values) == [0.5, 1.5]  # given values: as given


def test_non_monotonic_points_are_flagged_not_dropped():
    x = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    q = np.array([4.0, 1.0, 0.0, 1.0, 2.0, 1.5, 3.0])  # a dip on the right at 2.5
    assert monotonic_flags(x, q, 1.0).tolist() == [False] * 5 + [True, False]
    # a Scan built the old way (six fields) still works and serialises with the new keys
    s = Scan("mu", x, q, np.ones(7, bool), 1.0, {"68": (0.5, 1.5), "95": (None, None)})
    d = s.to_dict()
    assert d["flags"] == [] and d["non_monotonic"] == [False] * 7 and d["profile_intervals"] == {}
    # the report: a non-converged point is listed (not silently lost), the dip is flagged
    merged = report.merge_scans(
        [{**d, "dq": q.tolist(), "converged": [True] * 6 + [False], "flags": ["not_converged"]}]
    )
    assert merged["not_converged"] == [3.0] and merged["non_monotonic"] == [2.5]
    assert {"not_converged", "non_monotonic_right"} <= set(merged["flags"])


def test_fit_job_summary_and_report_show_asymmetric_errors(demo_model, demo_fit, tmp_path):
    out = _profile_errors(demo_model, demo_fit)
    p68 = out["profile"]["68"]
    assert out["mu_err_lo"] == pytest.approx(p68["lo"] - p68["best"]) and out["mu_err_lo"] < 0
    assert out["mu_err_hi"] > 0 and set(out["profile"]) == set(LEVELS)
    fit_doc = {
        "mu_hat": demo_fit.values["mu"],
        "sigma": demo_fit.errors["mu"],
        "converged": True,
        "data": "asimov",
        **out,
    }
    text = "\n".join(report.fit_table_markdown(fit_doc))
    assert "| profile 68 % CL | −0.29" in text and "| Hesse | −0.315 | +0.315 |" in text
    assert "root finding" in text
    bound = {**fit_doc, "profile": {"95": {**out["profile"]["95"], "flags": ["lo_at_bound"]}}}
    assert " (bound)" in "\n".join(report.fit_table_markdown(bound))


def test_summary_text_shows_the_root_found_interval(demo_model, demo_fit):
    iv = ProfileInterval("mu", 1.0, 0.2, 0.0, 0.9, ("lo_at_bound",), 5, 0.3)
    s = Scan(
        "mu",
        np.array([0.0, 1.0]),
        np.array([0.5, 1.2]),
        np.array([True, True]),
        0.2,
        {"68": iv.ends, "95": (0.0, None)},
        profile={"68": iv},
    )
    text = format_summary(demo_fit, ["mu"], scans=[s])
    assert "profile 68% [0 (bound), 0.9]" in text and "+0.7 -0.2" in text
    assert "flags: lo_at_bound" in text
