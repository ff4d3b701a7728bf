"""`nsbi closure` in small: the whole user path on a benchmark problem with an exact likelihood.

The full study (default training, 300 pseudo-experiments, every problem) runs outside CI and is
tabulated in docs/validation.md; here a 10 %-size `low_stats` problem with short training checks
that the command runs end to end, compares learned with exact fits on fresh pseudo-data, runs
fresh pseudo-experiments for both, and that spoiled networks make the result "needs review".
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _closure(home, name, *extra):
    from backend.cli import main

    out = home / f"{name}.json"
    code = main(
        [
            "closure",
            "low_stats",
            "--events-scale",
            "0.1",
            "--mu-true",
            "1",
            "--no-intervals",
            "--workdir",
            str(home / name),
            "--json",
            str(out),
            *extra,
        ]
    )
    return code, json.loads(out.read_text())["results"][0]


def test_closure_runs_the_user_path_and_compares_with_the_exact_fit(analysis_home):
    code, r = _closure(
        analysis_home,
        "short",
        "--training",
        '{"max_steps": 300}',
        "--toys",
        "40",
        "--coverage-mu",
        "1",
        "--shrink-noise",
    )
    assert code in (0, 1) and "error" not in r, r
    (c,) = r["closure"]
    assert c["learned"]["converged"] and c["exact"]["converged"]
    # the same fresh pseudo-data, fitted with exact and with short-trained ratios: close, but
    # not equal (300 steps on 10 % of the events); the criteria are evaluated and reported
    assert (
        abs(c["differences"]["mu_hat_in_sigma"]) < 1.0
        and 0.7 < c["differences"]["sigma_ratio"] < 1.3
    )
    assert set(c["passes"]) <= {"valid", "mu_hat", "sigma", "interval"} and "mu_hat" in c["passes"]
    u = c["uncertainty"]
    assert (
        u["nn"] > 0
        and u["sim"] > 0
        and u["total"] == pytest.approx(np.sqrt(u["hesse"] ** 2 + u["nn"] ** 2 + u["sim"] ** 2))
    )
    # the noise shrinkage of every process ratio: lambda = 1 - (noise / residual spread)^2
    shrink = c["noise_shrinkage"]
    assert shrink and all(x["task"].endswith("_vs_B") for x in shrink)
    for x in shrink:
        assert x["lambda"] == pytest.approx(max(0.0, 1.0 - x["noise_to_signal"] ** 2), abs=1e-9)
    (cov,) = r["coverage"]
    assert (
        cov["exact"]["n"] >= 38 and cov["learned_hesse"]["n"] >= 38
    )  # converged experiments of 40
    # 40 experiments: the exact-ratio 68 % coverage must be within 4 binomial sigma (0.074) of 0.683
    assert abs(cov["exact"]["cover68"] - 0.683) < 4 * 0.074
    assert (
        cov["learned_with_components"]["cover68"] >= cov["learned_hesse"]["cover68"]
    )  # wider intervals
    assert r["result_status"]["state"] in ("checks passed", "needs review")


def test_spoiled_networks_need_review_and_fail_the_asimov_closure(analysis_home):
    code, r = _closure(analysis_home, "spoiled", "--training", '{"max_steps": 10}', "--toys", "0")
    assert code == 1
    status = r["result_status"]
    assert status["state"] == "needs review"
    failed = {f["name"] for f in status["failed"]}
    assert "asimov_closure" in failed, status["failed"]
    closure = next(f for f in status["failed"] if f["name"] == "asimov_closure")
    assert closure["value"] > closure["threshold"]
