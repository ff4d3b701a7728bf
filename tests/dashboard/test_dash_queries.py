"""Reshaping of service results: plain pytest, numbers against independent computations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from dashboard import queries


def test_cap_points_thins_each_group_evenly_and_keeps_ends():
    df = pd.DataFrame({"g": np.repeat([0, 1], 10_000), "step": np.tile(np.arange(10_000), 2)})
    out = queries.cap_points(df, 1000, by=("g",))
    assert len(out) <= 1000
    for _, grp in out.groupby("g"):
        assert grp["step"].iloc[0] == 0 and grp["step"].iloc[-1] == 9_999
        assert len(grp) == 500
    small = df.head(10)
    assert queries.cap_points(small, 1000) is small


def test_ensemble_band_buckets_misaligned_steps():
    rng = np.random.default_rng(0)
    rows = []
    for m in range(3):
        steps = np.sort(rng.choice(100_000, 2000, replace=False))
        rows += [{"member": m, "step": s, "name": "loss", "value": 2.0} for s in steps]
    band = queries.ensemble_band(pd.DataFrame(rows), max_steps=100)
    assert len(band) <= 100
    assert np.allclose(band["mean"], 2.0) and np.allclose(band["std"], 0.0)
    assert band["n"].max() == 3


def test_metrics_frame_from_dataclasses():
    @dataclasses.dataclass
    class P:
        member: int
        step: int
        name: str
        value: float

    df = queries.metrics_frame([P(0, 1, "loss", 0.5), P(1, 1, "loss", 0.7)])
    assert df["value"].sum() == pytest.approx(1.2)
    assert set(df.columns) >= set(queries.METRIC_COLUMNS)
    assert df["member"].tolist() == [0, 1]


def test_resources_frame_wide_to_long_epoch_seconds():
    rows = [
        {"t": 0.0, "job_id": 1, "attempt_no": 1, "cpu_percent": 50.0, "rss_bytes": 1e9, "gpus": []},
        {
            "t": 30.0,
            "job_id": 1,
            "attempt_no": 1,
            "cpu_percent": 70.0,
            "rss_bytes": 2e9,
            "gpus": [],
        },
    ]
    df = queries.resources_frame(rows)
    assert set(df["name"]) == {"CPU (%)", "RSS (GB)"}  # attempt_no and gpus are not resources
    assert df[df.name == "CPU (%)"]["value"].mean() == pytest.approx(60.0)
    assert df[df.name == "RSS (GB)"]["value"].tolist() == pytest.approx([1.0, 2.0])
    assert str(df["time"].dt.tz) == "UTC"


def test_campaigns_frame_flattens_counts():
    rows = [
        {
            "id": 1,
            "name": "a",
            "status": "ACTIVE",
            "counts": {"RUNNING": 2, "PENDING": 3},
            "progress": 1.4,
            "cost_usd": 1.5,
            "budget_usd": 10.0,
            "estimate_cost_usd": 3.0,
        }
    ]
    df = queries.campaigns_frame(rows)
    assert df.loc[0, "n_running"] == 2 and df.loc[0, "n_pending"] == 3
    assert df.loc[0, "progress"] == 1.0  # clipped
    assert (df.loc[0, "cost"], df.loc[0, "budget"], df.loc[0, "estimate_cost"]) == (1.5, 10.0, 3.0)
    assert queries.campaigns_frame([]).columns.tolist()[:3] == ["id", "name", "status"]


@pytest.mark.parametrize(
    "value,check,expected",
    [
        (1.2, "closure_chi2_ndf", "green"),
        (2.0, "closure_chi2_ndf", "amber"),
        (3.5, "closure_chi2_ndf", "red"),
        (0.01, "normalisation", "green"),
        (0.2, "normalisation", "red"),
        (0.75, "auc", "green"),
        (0.5, "auc", "amber"),
        (0.4, "auc", "red"),
        (None, "auc", "unknown"),
        (float("nan"), "calibration", "unknown"),
    ],
)
def test_traffic_light(value, check, expected):
    assert queries.traffic_light(value, check) == expected


def test_diagnostics_view_of_engine_output():
    from dash_testkit import engine_diagnostics

    v = queries.diagnostics_view("S_vs_B", engine_diagnostics())
    c = v.checks.set_index("check")
    assert c.loc["closure_chi2_ndf", "value"] == pytest.approx(2.0)  # worst of 2/1 and 1/2
    assert c.loc["closure_chi2_ndf", "status"] == "amber"
    assert c.loc["normalisation", "value"] == pytest.approx(0.03)
    assert c.loc["normalisation", "status"] == "amber"
    assert c.loc["calibration", "value"] == pytest.approx(2.5)  # the ensemble curve, not the member
    assert c.loc["overtraining", "value"] == pytest.approx(0.06 / 0.60)  # worst member
    assert c.loc["overtraining", "status"] == "red"
    assert "smaller network" in c.loc["overtraining", "remedy"]
    assert c.loc["normalisation", "remedy"] == ""  # amber: no advice
    assert c.loc["ensemble_spread", "value"] == pytest.approx(np.std([1.0, 1.1]) / 1.05)
    assert c.loc["saturation", "status"] == "amber"
    assert c.loc["auc", "status"] == "green"
    assert set(v.calibration["label"]) == {"ensemble", "member 0"}
    assert [h["observable"] for h in v.closure] == ["m4l", "pt"]
    assert list(v.closure[0]["numerator"]) == [0.5, 0.5]
    assert v.roc["auc"].iloc[0] == pytest.approx(0.71)
    empty = queries.diagnostics_view("t", {})
    assert set(empty.checks["status"]) == {"unknown"}


def _fit_rows(**extra_jobs):
    import dash_testkit as seed

    payloads = seed.fit_payloads(np.random.default_rng(0))
    rows = [
        {"job_id": i, "job_name": k, "kind": k, "payload": v}
        for i, (k, v) in enumerate(payloads.items())
    ]
    return payloads, rows


def test_fit_view_of_engine_shaped_results():
    payloads, rows = _fit_rows()
    v = queries.fit_view(queries.merge_fit_results(rows))
    fit = payloads["fit"]["fit"]
    assert (v.mu_hat, v.sigma) == (fit["values"]["mu"], fit["errors"]["mu"])
    assert v.converged is True and v.breakdown["stat"] == pytest.approx(0.168)
    assert v.pulls.set_index("name")["pull"].to_dict() == {
        n: d["pull"] for n, d in payloads["fit"]["pulls"].items()
    }
    assert "mu" not in set(v.pulls["name"])
    # refits replace the covariance estimate for the nuisances they cover
    methods = v.impacts.set_index("name")["method"].to_dict()
    assert methods == {
        "m4l_scale": "refit",
        "bkg_norm": "refit",
        "gg_scale": "covariance",
        "lumi": "covariance",
        "jes": "covariance",
    }
    assert v.impacts.set_index("name").loc["m4l_scale", "prefit_up"] == pytest.approx(0.11)
    assert v.corr_names == tuple(fit["names"]) and np.allclose(np.diag(v.corr_matrix), 1.0)
    assert v.scan["value"].is_monotonic_increasing and v.scan["q"].min() == pytest.approx(
        0.0025 / 0.0441
    )
    assert v.toys.size == 200
    assert queries.fit_view({}).empty


def test_merge_joins_scan_and_impacts_jobs_and_pools_toys():
    rng = np.random.default_rng(5)
    pulls = rng.normal(0.1, 1.2, 90)
    parts = np.split(pulls, [20, 50])
    rows = [{"job_name": "fit", "kind": "fit", "payload": {"mu_hat": 1.0, "sigma": 0.2}}]
    for i, (xs, part) in enumerate(zip(([0.0, 0.5], [1.0, 1.5], [2.0]), parts)):
        rows.append(
            {
                "job_name": f"scan-{i:03d}",
                "kind": "scan",
                "payload": {"scan": {"values": xs[::-1], "dq": [(x - 1.0) ** 2 for x in xs[::-1]]}},
            }
        )
        rows.append(
            {
                "job_name": f"impacts-{i:03d}",
                "kind": "impacts",
                "payload": {
                    "impacts_refit": [
                        {
                            "poi": "mu",
                            "nuisance": f"np{i}",
                            "prefit_up": 1,
                            "prefit_down": -1,
                            "postfit_up": 1,
                            "postfit_down": -1,
                        }
                    ]
                },
            }
        )
        rows.append(
            {
                "job_name": f"toys-{i:03d}",
                "kind": "toys",
                "payload": {
                    "toys": {
                        "n_toys": len(part),
                        "n_converged": len(part),
                        "pull_mean": part.mean(),
                        "pull_width": part.std(ddof=1),
                        "coverage_profile_68": float(np.mean(np.abs(part) < 1)),
                    }
                },
            }
        )
    v = queries.fit_view(queries.merge_fit_results(rows))
    assert v.scan["value"].tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert v.scan["q"].tolist() == [1.0, 0.25, 0.0, 0.25, 1.0]
    assert sorted(v.impacts["name"]) == ["np0", "np1", "np2"]
    t = v.toy_summary
    assert t["n_converged"] == 90
    assert t["pull_mean"] == pytest.approx(pulls.mean(), rel=1e-12)
    assert t["pull_width"] == pytest.approx(pulls.std(ddof=1), rel=1e-12)  # pooled exactly
    assert t["coverage_profile_68"] == pytest.approx(np.mean(np.abs(pulls) < 1), rel=1e-12)


@pytest.mark.parametrize(
    "name,run",
    [("fit", 1), ("scan-003", 1), ("fit-r2", 2), ("toys-r12-000", 12), ("impacts-r3-001", 3)],
)
def test_fit_run_of(name, run):
    assert queries.fit_run_of(name) == run


def test_cost_frame_and_spend():
    df = queries.cost_frame(
        [
            {"campaign": "a", "day": "2026-01-01", "spot": True, "gpu_hours": 1, "cost": 2.0},
            {"campaign": "a", "day": "2026-01-02", "spot": False, "gpu_hours": 1, "cost": 3.0},
        ]
    )
    assert df["spot"].tolist() == ["spot", "on-demand"]
    spend = queries.spend_over_time(df)
    assert spend["cost"].tolist() == [2.0, 3.0]


def test_scan_interval_of_parabola_is_mu_pm_k_sigma():
    from scipy import stats

    mu = np.linspace(0.0, 2.0, 201)
    scan = pd.DataFrame({"value": mu, "q": ((mu - 1.1) / 0.3) ** 2})
    lo, hi = queries.scan_interval(scan, 1.0)
    assert (lo, hi) == (pytest.approx(0.8, abs=1e-3), pytest.approx(1.4, abs=1e-3))
    z95 = stats.norm.ppf(0.975)
    lo, hi = queries.scan_interval(scan, stats.chi2.ppf(0.95, 1))
    assert (lo, hi) == (
        pytest.approx(1.1 - 0.3 * z95, abs=2e-3),
        pytest.approx(1.1 + 0.3 * z95, abs=2e-3),
    )
    assert queries.scan_interval(scan, 100.0) == (None, None)  # never reached inside the scan


def test_diagnostics_view_reads_the_corrected_checks_and_explains_calibration():
    """Calibration shows the global significance with the worst bin beside it; an AUC just
    under 0.5 within its null error is AMBER, not RED; saturation reads the overconfident share."""
    from dash_testkit import engine_diagnostics

    d = engine_diagnostics()
    d["calibration"][0].update(max_deviation=3.2, tested_bins=20, global_deviation=2.3)
    d.update(auc=0.497, auc_null_error=0.002, saturated_fraction=0.03, overconfident_fraction=0.0)
    d.update(logit_slope=1.1, logit_slope_error=0.02)
    v = queries.diagnostics_view("tiny_slope_up_B", d)
    c = v.checks.set_index("check")
    assert c.loc["calibration", "value"] == pytest.approx(2.3)
    assert c.loc["calibration", "status"] == "amber"
    assert "3.20 σ" in v.calibration_note and "20 bins" in v.calibration_note
    assert "2.30 σ globally" in v.calibration_note
    assert "slope 1.100 ± 0.020" in v.calibration_note and "+5.0 σ" in v.calibration_note
    assert c.loc["auc", "status"] == "amber" and c.loc["auc", "limit"] == pytest.approx(0.494)
    assert "red < 0.494" in c.loc["auc", "threshold"]
    assert c.loc["saturation", "value"] == 0.0 and c.loc["saturation", "status"] == "green"
    old = queries.diagnostics_view("S_vs_B", engine_diagnostics())
    assert old.calibration_note.startswith("Worst bin 2.50 σ")
