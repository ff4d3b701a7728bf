"""`compute.limits` and `compute.expected` of an analysis file: validation, and end to end.

The end-to-end run is a tiny analysis (S and B, 2 x 20k demo events, two small networks trained
for 30 steps, background-only Asimov data) whose fit job computes the CLs upper limit with its
expected band, the discovery significance and the expected (Asimov mu = 1) result. The test
recomputes the limit with `sbi_engine.fit.limits.upper_limit` on the same workspace and checks
that the expected result does not depend on the data. The networks are poor (30 steps), which
does not matter here: the limit is checked against the same model, not against the truth.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

ANALYSIS = """\
name: limits-demo
description: CLs upper limit and expected result on background-only Asimov data
samples:
  S: {demo: {process: S, n: 20000, seed: 1}}
  B: {demo: {process: B, n: 20000, seed: 3}}
processes:
  S: {sample: S, coefficient: "mu"}
  B: {sample: B, coefficient: "1"}
reference: B
poi: {init: 1.0, bounds: [0.0, 20.0]}
training:
  seed: 0
  defaults: {ensemble_size: 2, members_per_job: 2, hidden_layers: 1, width: 16, max_steps: 30,
             eval_every: 10, checkpoint_every: 30}
data:
  asimov: {mu: 0.0}
compute:
  fit:
    options: {uncertainty: {nn_variants: 0, sim_variants: 0, closure: false}}
  limits: {cl: 0.95}
  expected: {mu: 1.0}
backend: {launcher: local, max_concurrency: 1}
"""

BASE = ANALYSIS.split("compute:")[0]


def _problems(tmp_path: Path, compute: str) -> list[str]:
    from backend.analysis.spec import validate_analysis

    path = tmp_path / "a.yaml"
    path.write_text(BASE + "compute:\n" + compute)
    return [str(p) for p in validate_analysis(path, check_data=False)]


# --------------------------------------------------------------------------- validation


def test_settings_resolve_into_the_fit_jobs_options(tmp_path):
    from backend.analysis.spec import load_analysis

    path = tmp_path / "a.yaml"
    path.write_text(
        BASE + "compute:\n  fit: true\n  limits: {method: toys, cl: 0.9}\n  expected: true\n"
    )
    opts = load_analysis(path, check_data=False).campaign_config()["fit"]["options"]
    assert opts["limits"] == {"cl": 0.9, "method": "toys", "toys": 1000, "seed": 0}
    assert opts["expected"] == {"mu": 1.0}
    path.write_text(BASE + "compute:\n  limits: true\n")  # defaults; the fit is on by default
    opts = load_analysis(path, check_data=False).campaign_config()["fit"]["options"]
    assert opts["limits"] == {"cl": 0.95, "method": "asymptotic", "toys": 0, "seed": 0}
    assert "expected" not in opts
    path.write_text(BASE + "compute:\n  limits: false\n  expected: {enabled: false}\n")
    assert not load_analysis(path, check_data=False).campaign_config()["fit"]["options"]


@pytest.mark.parametrize(
    ("compute", "expected"),
    [
        (
            "  limits: {cl: 1.0}\n",
            "a.yaml:{0}: compute.limits.cl: 1 must lie strictly between 0 and 1",
        ),
        (
            "  limits: {cl: 0}\n",
            "a.yaml:{0}: compute.limits.cl: 0 must lie strictly between 0 and 1",
        ),
        (
            "  limits: {method: toys, toys: 9}\n",
            "a.yaml:{0}: compute.limits.toys: expected an integer >= 10, got 9",
        ),
        (
            "  limits:\n    method: bayesian\n",
            "a.yaml:{1}: compute.limits.method: 'bayesian' is not allowed; allowed values: "
            "'asymptotic', 'toys'",
        ),
        (
            "  limits:\n    cl: 0.95\n    toys: 100\n",
            "a.yaml:{2}: compute.limits.toys: is only used with method: toys",
        ),
        (
            "  expected:\n    mu: 25\n",
            "a.yaml:{1}: compute.expected.mu: 25 is outside poi.bounds [0, 20]",
        ),
        ("  expected: {mu: -1}\n", "a.yaml:{0}: compute.expected.mu:"),
        (
            "  fit: false\n  limits: true\n",
            "a.yaml:{1}: compute.limits: limits need the fit; enable compute.fit",
        ),
        ("  limits: 0.95\n", "a.yaml:{0}: compute.limits: expected true/false or the stage's"),
    ],
)
def test_bad_settings_are_refused_at_their_line(tmp_path, compute, expected):
    first = BASE.count("\n") + 2  # the line after "compute:"
    expected = expected.format(first, first + 1, first + 2)
    problems = _problems(tmp_path, compute)
    assert any(expected in p for p in problems), problems


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def limits_run(analysis_home, tmp_path_factory):
    from backend.analysis.run import run_analysis

    work = tmp_path_factory.mktemp("limits")
    path = work / "limits.yaml"
    path.write_text(ANALYSIS)
    summary = run_analysis(path, report_dir=work / "report", progress=False)
    assert summary.status == "SUCCEEDED", summary.result.get("jobs")
    return summary, work / "report"


def _fit_workspace(campaign_id: int):
    """The fit job's workspace, rebuilt from its stored spec and trained ensembles."""
    from backend import service
    from backend.jobkinds import collect_ensembles
    from backend.stores import get_json, open_store
    from backend.stores.local import path_from_uri
    from sbi_engine.fit_jobs import build_learned_fit

    (fit,) = [j for j in service.campaign_job_records(campaign_id) if j["kind"] == "fit"]
    spec = get_json(open_store(fit["uri"]), "spec.json")
    uris = collect_ensembles(spec.get("inputs") or {})
    paths = {t: [str(path_from_uri(u)) for u in us] for t, us in uris.items()}
    return build_learned_fit(spec, paths).workspace


@pytest.mark.slow
def test_limit_band_discovery_and_expected_result_in_the_report(limits_run):
    from sbi_engine.fit.limits import upper_limit
    from sbi_engine.fit_jobs import expected_result

    summary, report = limits_run
    doc = json.loads((report / "result.json").read_text())
    lim, exp = doc["limits"], doc["expected"]
    assert "error" not in lim, lim
    assert lim["cl"] == 0.95 and lim["method"] == "asymptotic" and lim["poi"] == "mu"
    band = [lim["expected"][k] for k in ("-2", "-1", "0", "1", "2")]
    assert all(math.isfinite(b) for b in band) and band == lim["band"]
    assert band[0] < band[1] < band[2] < band[3] < band[4], band
    # background-only Asimov data: the observed limit is the median expected one
    assert lim["observed"] == pytest.approx(band[2], rel=1e-3)
    assert lim["discovery"]["q0"] == pytest.approx(0.0, abs=1e-6)
    # the same limit recomputed independently on the same workspace
    ws = _fit_workspace(summary.campaign_id)
    ul = upper_limit(ws, cl=0.95)
    assert abs(ul.observed - lim["observed"]) < 1e-6
    assert max(abs(a - b) for a, b in zip(ul.band, band)) < 1e-6
    # the expected result: Asimov at mu = 1, whatever the data
    assert exp["mu"] == 1.0 and exp["converged"]
    assert abs(exp["mu_hat"] - 1.0) < 1e-3
    assert exp["sigma"] > 0 and exp["mu_err_lo"] < 0 < exp["mu_err_hi"]
    assert exp["discovery"]["significance"] > 0
    fake = ws.with_data(ws.data.weights * 3.0 + 1.0, kind="observed")  # other "data"
    again = expected_result(fake, {"mu": 1.0})
    assert again["mu_hat"] == pytest.approx(exp["mu_hat"], abs=1e-9)
    assert again["mu_err_hi"] == pytest.approx(exp["mu_err_hi"], abs=1e-9)
    # the markdown report
    text = (report / "summary.md").read_text()
    assert "## Upper limit on μ (95 % CL, CLs, q̃_μ, asymptotic)" in text
    row = f"| **{lim['observed']:.4f}** | " + " | ".join(f"{b:.4f}" for b in band) + " |"
    assert row in text
    assert "## Expected result (Asimov data at μ = 1.00" in text
    assert f"| **{exp['mu_hat']:.4f}** |" in text
    assert "Discovery test on the data: q₀ = 0.000" in text
    # S + B is linear in mu: the asymptotic formulas apply, and the check says so
    assert lim["extra"]["yield_turning_points"] == [] and "asymptotic_warning" not in lim["extra"]
    (check,) = [c for c in doc["fit_checks"] if c["name"] == "asymptotic_limit"]
    assert check["passed"] and check["value"] == 0.0
    assert "Warning" not in text


# --------------------------------------------------------------------------- report, plain data


def test_report_tables_on_plain_data():
    from backend.analysis.report import expected_markdown, limits_markdown

    lim = {
        "cl": 0.9,
        "method": "toys",
        "n_toys": 500,
        "observed": 1.5,
        "expected": {"-2": 0.5, "-1": 0.8, "0": 1.2, "1": 1.7, "2": 2.4},
        "discovery": {"q0": 4.0, "significance": 2.0, "p0": 0.02275},
    }
    text = "\n".join(limits_markdown(lim))
    assert "## Upper limit on μ (90 % CL, CLs, q̃_μ, toys, 500 toys per hypothesis" in text
    assert "| **1.5000** | 0.5000 | 0.8000 | 1.2000 | 1.7000 | 2.4000 |" in text
    assert "q₀ = 4.000, Z = 2.00 σ, p₀ = 0.0227" in text
    warned = {**lim, "method": "asymptotic", "extra": {"asymptotic_warning": "it turns"}}
    assert "**Warning:** it turns." in "\n".join(limits_markdown(warned))
    failed = "\n".join(limits_markdown({"cl": 0.95, "method": "asymptotic", "error": "X: y|z"}))
    assert "could not be computed: X: y/z" in failed
    assert limits_markdown({}) == [] and expected_markdown(None) == []
    exp = {
        "mu": 1.0,
        "mu_hat": 0.9999,
        "sigma": 0.2,
        "converged": True,
        "profile": {"68": {"err_lo": -0.19, "err_hi": 0.21}, "95": {"lo": 0.6, "hi": 1.43}},
    }
    text = "\n".join(expected_markdown(exp))
    assert "| **0.9999** | ±0.200 | +0.210 −0.190 | [0.600, 1.430] | True |" in text


def test_report_and_dashboard_read_the_bands_the_limit_writes():
    """The report and the Fit page read the "expected" keys the limit's JSON writes."""
    from backend.analysis.fit_figures import LIMIT_BAND_KEYS
    from sbi_engine.fit.limits import BANDS, UpperLimit

    limit = UpperLimit("mu", 0.95, "asymptotic", 1.0, {n: 1.0 + 0.1 * n for n in BANDS}, 0.0)
    assert tuple(limit.to_dict()["expected"]) == LIMIT_BAND_KEYS


def test_fit_job_refuses_an_unknown_limit_method():
    from sbi_engine.fit_jobs import FitJobError, limits_result

    with pytest.raises(FitJobError, match="params.options.limits"):
        limits_result(None, {"method": "bayes"})
    with pytest.raises(FitJobError, match="params.options.limits"):
        limits_result(None, {"method": "toys", "toys": 0})


def test_fit_job_toy_limit_on_a_counting_workspace():
    """method: toys through the fit job's entry point (5 signal on 5 background events)."""
    import numpy as np

    from sbi_engine.fit import Workspace
    from sbi_engine.fit_jobs import limits_result

    ws = Workspace.from_arrays(
        pois={"mu": {"init": 1.0, "bounds": (0.0, 20.0)}},
        processes={
            "S": {"yield": 5.0, "coefficient": "mu", "ratio": np.ones(1)},
            "B": {"yield": 5.0, "coefficient": "1", "ratio": np.ones(1)},
        },
        weights=np.array([5.0]),
        data_kind="asimov",
        generated_at={"mu": 0.0},
    )
    asym = limits_result(ws, {"cl": 0.95, "method": "asymptotic"})
    toys = limits_result(ws, {"cl": 0.95, "method": "toys", "toys": 200, "seed": 3})
    assert "error" not in toys and toys["method"] == "toys" and toys["n_toys"] == 200
    assert len(toys["scan"]) >= 3 and toys["discovery"]["q0"] == pytest.approx(0.0, abs=1e-9)
    # b = 5 is far from asymptotic (measured 1.48 with these toys against 1.15)
    assert 0.8 < toys["observed"] / asym["observed"] < 1.5


def test_asymptotic_limit_check_fails_only_where_the_yield_turns():
    from sbi_engine.fit_jobs import asymptotic_limit_check

    turned = {
        "method": "asymptotic",
        "extra": {"yield_turning_points": [0.41], "asymptotic_warning": "w"},
    }
    check = asymptotic_limit_check(turned)
    assert check is not None and not check["passed"] and check["value"] == 1.0
    assert check["message"] == "w" and check["name"] == "asymptotic_limit"
    flat = asymptotic_limit_check({"method": "asymptotic", "extra": {"yield_turning_points": []}})
    assert flat is not None and flat["passed"] and "monotonic" in flat["message"]
    assert (
        asymptotic_limit_check({"method": "toys", "extra": {"yield_turning_points": [0.4]}}) is None
    )
    assert asymptotic_limit_check({"method": "asymptotic", "error": "X: y"}) is None
