"""The report folder on plain data: merged scans and intervals, the impact ranking, files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from backend.analysis import report


def parabola_scan(values, mu_hat=1.1, sigma=0.3):
    v = np.asarray(values, dtype=float)
    return {
        "poi": "mu",
        "values": v.tolist(),
        "dq": (((v - mu_hat) / sigma) ** 2).tolist(),
        "converged": [True] * len(v),
        "best": mu_hat,
    }


def test_merged_scan_intervals_match_a_parabola():
    # two scan jobs, each a chunk of the grid; q = ((mu - 1.1) / 0.3)^2 crosses 1 at 1.1 +- 0.3
    a = parabola_scan([0.0, 0.25, 0.5, 0.75])
    b = parabola_scan([1.0, 1.25, 1.5, 1.75, 2.0])
    merged = report.merge_scans([b, a])
    assert merged["values"] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    lo, hi = merged["intervals"]["68"]
    # sqrt(q) is linear in mu for a parabola, so the crossings are exact on any grid
    assert lo == pytest.approx(0.8, abs=1e-9) and hi == pytest.approx(1.4, abs=1e-9)
    lo95, hi95 = merged["intervals"]["95"]
    half = 0.3 * np.sqrt(report.Q95)
    assert lo95 == pytest.approx(1.1 - half, abs=1e-9) and hi95 == pytest.approx(
        1.1 + half, abs=1e-9
    )


def test_coarse_scan_uses_the_best_fit_point_and_open_ends():
    # the grid step (0.5) is wider than sigma: the crossing lies between mu-hat and a grid point
    s = report.merge_scans([parabola_scan([0.0, 0.5, 1.0, 1.5, 2.0, 2.5], mu_hat=1.13, sigma=0.32)])
    lo, hi = s["intervals"]["68"]
    assert lo == pytest.approx(1.13 - 0.32, abs=1e-9) and hi == pytest.approx(1.13 + 0.32, abs=1e-9)
    # an asymmetric (non-parabolic) profile: q = 4 (mu - 1)^2 below 1, (mu - 1)^2 above: 68 % at 0.5, 2
    v = np.linspace(0.0, 3.0, 7)
    q = np.where(v < 1, 4 * (v - 1) ** 2, (v - 1) ** 2)
    s = report.merge_scans([{"poi": "mu", "values": v.tolist(), "dq": q.tolist(), "best": 1.0}])
    assert s["intervals"]["68"] == [pytest.approx(0.5), pytest.approx(2.0)]
    # a scan that stops short of 95 % on the right reports None there, not a made-up number
    s = report.merge_scans([parabola_scan([0.5, 1.0, 1.5], mu_hat=1.1, sigma=0.5)])
    assert s["intervals"]["95"][1] is None
    assert report.merge_scans([]) is None
    # points whose profile fit did not converge are left out
    bad = parabola_scan([0.0, 1.0, 2.0])
    bad["converged"] = [True, True, False]
    assert report.merge_scans([bad])["values"] == [0.0, 1.0]


def test_impact_ranking_prefers_refit_and_sorts_by_size():
    cov = [
        {"nuisance": "a", "postfit_up": 0.01, "postfit_down": -0.01, "method": "covariance"},
        {"nuisance": "b", "postfit_up": 0.05, "postfit_down": -0.02, "method": "covariance"},
    ]
    refit = [{"nuisance": "a", "postfit_up": 0.09, "postfit_down": -0.08, "method": "refit"}]
    ranked = report.impact_ranking(refit, cov)
    assert [(i["nuisance"], i["method"]) for i in ranked] == [("a", "refit"), ("b", "covariance")]
    assert ranked[0]["size"] == pytest.approx(0.09)


def _result() -> dict:
    return {
        "analysis": {"name": "demo", "path": "/x/analysis.yaml", "file_hash": "ab" * 32},
        "campaign": {
            "id": 3,
            "name": "demo",
            "status": "SUCCEEDED",
            "launcher": "local",
            "config_hash": "cd" * 32,
        },
        "code_version": "abc123",
        "engine_version": "0.1.0",
        "fit": {"mu_hat": 1.1, "sigma": 0.3, "converged": True, "mu_true": 1.0, "data": "asimov"},
        "intervals": {"68": [0.8, 1.4]},
        "pulls": {"lumi": {"pull": -0.1, "constraint": 0.92}},
        "impacts": report.impact_ranking(
            [{"nuisance": "lumi", "postfit_up": -0.05, "postfit_down": 0.06, "method": "refit"}], []
        ),
        "breakdown": {"mu": {"total": 0.3, "stat": 0.28, "syst": 0.1}},
        "scan": report.merge_scans([parabola_scan([0.0, 0.5, 1.0, 1.5, 2.0])]),
        "calibration": {
            "S_vs_B": [
                {
                    "member": None,
                    "mean_score": [0.25, 0.75],
                    "observed_fraction": [0.27, 0.72],
                    "observed_error": [0.01, 0.02],
                }
            ]
        },
        "ensembles": {"S_vs_B": ["file:///store/ens.npz"]},
        "seeds": {"train": {"train-S_vs_B-g0-m0-1": 0}},
        "jobs": {"ran": ["train-S_vs_B-g0-m0-1", "fit"], "reused": {}},
        "timings": {"wall_s": 12.5},
    }


def test_html_fallback_is_said_in_the_summary(tmp_path):
    files = report.write_report(tmp_path / "rep", _result(), static=False)
    assert files.export_problem == "static export switched off"
    assert {p.suffix for ps in files.plots.values() for p in ps} == {".html"}
    text = files.summary.read_text()
    assert "interactive HTML" in text and "[HTML](plots/likelihood_scan.html)" in text
    assert "μ̂ = 1.100 ± 0.300" in text and "| lumi | -0.0500 | 0.0600 | refit |" in text
    assert (
        "`/x/analysis.yaml` (sha256 `" + "ab" * 32 + "`)" in text
        and "file:///store/ens.npz" in text
    )
    doc = json.loads(files.result.read_text())
    assert doc["plot_export"] == "static export switched off"
    assert doc["plots"]["calibration"] == ["plots/calibration.html"]
    assert doc["fit"]["mu_hat"] == 1.1


# PNG + PDF export through kaleido and Chromium is checked on the real report in test_run.py.


def test_summary_shows_error_components_shape_decisions_and_the_split(tmp_path):
    r = _result()
    r["fit"]["data"] = {"path": "/data/pseudo.parquet", "features": ["x"]}
    r["uncertainty"] = {
        "hesse": 0.3,
        "nn": 0.1,
        "nn_se": 0.03,
        "sim": 0.05,
        "sim_se": 0.01,
        "total": 0.32,
        "included": ["nn"],
        "nn_variants": 8,
        "nn_bootstrap": True,
    }
    r["shape_decisions"] = [
        {
            "nuisance": "tiny",
            "process": "B",
            "signal": 0.02,
            "noise": 0.03,
            "action": "dropped shape (yield kept)",
        }
    ]
    r["splits"] = {
        "train-S": {"numerator": {"method": "row_hash"}, "denominator": {"method": "row_hash"}}
    }
    r["data_provenance"] = {"normalisation_sample": {"process": "B", "events": 30000}}
    text = report.write_report(tmp_path / "rep", r, static=False).summary.read_text()
    assert "data: observed, pseudo.parquet" in text and "**total error ± 0.320**" in text
    assert "| NN training | 0.100 ± 0.030 | yes | spread of μ̂ over 8 one-member refits |" in text
    assert "| simulation statistics | 0.050 ± 0.010 | no (reported only) |" in text
    assert "| tiny | B | 0.0200 | 0.0300 | dropped shape (yield kept) |" in text
    assert "split by row_hash; normalisation sample: 30000 evaluation events of B" in text


def test_onnx_exports_in_the_report_folder_are_linked(tmp_path):
    folder = tmp_path / "rep"
    (folder / "onnx").mkdir(parents=True)
    (folder / "onnx" / "S_vs_B.onnx").write_bytes(b"not really onnx")  # `nsbi export onnx` output
    files = report.write_report(folder, _result(), static=False)
    assert "[onnx/S_vs_B.onnx](onnx/S_vs_B.onnx)" in files.summary.read_text()
    assert json.loads(files.result.read_text())["onnx"] == ["onnx/S_vs_B.onnx"]
    empty = report.write_report(tmp_path / "other", _result(), static=False)
    assert "ONNX" not in empty.summary.read_text()
