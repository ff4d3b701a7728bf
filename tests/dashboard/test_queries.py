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
    rows = [{"t": 0.0, "job_id": 1, "attempt_no": 1, "cpu_percent": 50.0, "rss_bytes": 1e9, "gpus": []},
            {"t": 30.0, "job_id": 1, "attempt_no": 1, "cpu_percent": 70.0, "rss_bytes": 2e9, "gpus": []}]
    df = queries.resources_frame(rows)
    assert set(df["name"]) == {"CPU (%)", "RSS (GB)"}  # attempt_no and gpus are not resources
    assert df[df.name == "CPU (%)"]["value"].mean() == pytest.approx(60.0)
    assert df[df.name == "RSS (GB)"]["value"].tolist() == pytest.approx([1.0, 2.0])
    assert str(df["time"].dt.tz) == "UTC"


def test_campaigns_frame_flattens_counts():
    rows = [{"id": 1, "name": "a", "status": "ACTIVE", "counts": {"RUNNING": 2, "PENDING": 3},
             "progress": 1.4, "cost_usd": 1.5, "budget_usd": 10.0, "estimate_cost_usd": 3.0}]
    df = queries.campaigns_frame(rows)
    assert df.loc[0, "n_running"] == 2 and df.loc[0, "n_pending"] == 3
    assert df.loc[0, "progress"] == 1.0  # clipped
    assert (df.loc[0, "cost"], df.loc[0, "budget"], df.loc[0, "estimate_cost"]) == (1.5, 10.0, 3.0)
    assert queries.campaigns_frame([]).columns.tolist()[:3] == ["id", "name", "status"]


@pytest.mark.parametrize("value,check,expected", [
    (1.2, "closure_chi2_ndf", "green"), (2.0, "closure_chi2_ndf", "amber"), (3.5, "closure_chi2_ndf", "red"),
    (0.01, "normalisation", "green"), (0.2, "normalisation", "red"),
    (0.75, "auc", "green"), (0.5, "auc", "amber"), (0.4, "auc", "red"), (None, "auc", "unknown"),
    (float("nan"), "calibration", "unknown"),
])
def test_traffic_light(value, check, expected):
    assert queries.traffic_light(value, check) == expected


def engine_diagnostics() -> dict:
    """A diagnostics dict built with the engine's own dataclasses, so the keys are the real ones."""
    from sbi_engine.ratio.diagnostics import CalibrationCurve, Closure, Diagnostics, MemberLosses

    edges = (0.0, 0.5, 1.0)
    curves = (CalibrationCurve(None, edges, (0.25, 0.75), (0.27, 0.70), (0.01, 0.02), (1.0, 1.0), 2.5),
              CalibrationCurve(0, edges, (0.25, 0.75), (0.26, 0.74), (0.01, 0.02), (1.0, 1.0), 1.0))
    closures = (Closure("m4l", (0.0, 1.0, 2.0), (0.5, 0.5), (0.01, 0.01), (0.49, 0.51), (0.01, 0.01), (0.6, 0.4), 2.0, 1),
                Closure("pt", (0.0, 1.0, 2.0, 3.0), (0.3, 0.3, 0.4), (0.01,) * 3, (0.3, 0.3, 0.4), (0.01,) * 3,
                        (0.3, 0.3, 0.4), 1.0, 2))
    losses = (MemberLosses(0, 0.60, 0.62, 0.61), MemberLosses(1, 0.60, 0.66, 0.65))
    d = Diagnostics(members=2, aggregate="mean_ratio", n_numerator=100, n_reference=100, normalization=1.03,
                    normalization_error=0.01, member_normalization=(1.0, 1.1), auc=0.71, member_auc=(0.70, 0.72),
                    roc_fpr=(0.0, 0.5, 1.0), roc_tpr=(0.0, 0.8, 1.0), calibration=curves, closure=closures,
                    losses=losses, saturated_fraction=0.002, member_saturated_fraction=(0.0, 0.004))
    return d.to_dict()


def test_diagnostics_view_of_engine_output():
    v = queries.diagnostics_view("S_vs_B", engine_diagnostics())
    c = v.checks.set_index("check")
    assert c.loc["closure_chi2_ndf", "value"] == pytest.approx(2.0)      # worst of 2/1 and 1/2
    assert c.loc["closure_chi2_ndf", "status"] == "amber"
    assert c.loc["normalisation", "value"] == pytest.approx(0.03)
    assert c.loc["normalisation", "status"] == "amber"
    assert c.loc["calibration", "value"] == pytest.approx(2.5)           # the ensemble curve, not the member
    assert c.loc["overtraining", "value"] == pytest.approx(0.06 / 0.60)  # worst member
    assert c.loc["overtraining", "status"] == "red"
    assert c.loc["ensemble_spread", "value"] == pytest.approx(np.std([1.0, 1.1]) / 1.05)
    assert c.loc["saturation", "status"] == "amber"
    assert c.loc["auc", "status"] == "green"
    assert set(v.calibration["label"]) == {"ensemble", "member 0"}
    assert [h["observable"] for h in v.closure] == ["m4l", "pt"]
    assert list(v.closure[0]["numerator"]) == [0.5, 0.5]
    assert v.roc["auc"].iloc[0] == pytest.approx(0.71)
    empty = queries.diagnostics_view("t", {})
    assert set(empty.checks["status"]) == {"unknown"}


def test_fit_view_from_values_and_errors():
    result = {
        "poi": "mu", "bestfit": {"mu": 1.1, "a": 0.3, "b": -0.5}, "errors": {"mu": 0.2, "a": 0.9, "b": 0.7},
        "impacts": {"a": {"prefit_up": 0.05, "prefit_down": -0.04, "postfit_up": 0.03, "postfit_down": -0.03}},
        "correlation": {"names": ["mu", "a"], "matrix": [[1, 0.2], [0.2, 1]]},
        "scan": {"values": [0.9, 1.1, 1.3], "delta_nll": [0.5, 0.0, 0.5]},
        "toys": {"pulls": [0.1, -0.2]},
    }
    v = queries.fit_view(result)
    assert (v.mu_hat, v.sigma) == (1.1, 0.2)
    assert v.pulls.set_index("name").loc["b"].tolist() == [-0.5, 0.7]
    assert "mu" not in set(v.pulls["name"])
    assert v.impacts.loc[0, "pull"] == 0.3   # merged from pulls
    assert v.scan["q"].tolist() == [1.0, 0.0, 1.0]
    assert v.toys.tolist() == [0.1, -0.2]
    assert queries.fit_view({}).empty


def test_merge_fit_results_newest_wins():
    merged = queries.merge_fit_results([{"result": {"bestfit": {"mu": 1.0}, "scan": {}}},
                                        {"result": {"bestfit": {"mu": 1.2}, "toys": [0.1]}}])
    assert merged == {"bestfit": {"mu": 1.2}, "toys": [0.1]}


def test_cost_frame_and_spend():
    df = queries.cost_frame([{"campaign": "a", "day": "2026-01-01", "spot": True, "gpu_hours": 1, "cost": 2.0},
                             {"campaign": "a", "day": "2026-01-02", "spot": False, "gpu_hours": 1, "cost": 3.0}])
    assert df["spot"].tolist() == ["spot", "on-demand"]
    spend = queries.spend_over_time(df)
    assert spend["cost"].tolist() == [2.0, 3.0]
