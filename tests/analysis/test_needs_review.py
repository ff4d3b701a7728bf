"""Checks gate the result, end to end: ratio networks stopped after 10 training steps make an
analysis campaign "needs review" -- in the database, in the report and in `nsbi analysis run`'s
exit status (3) -- with the failing checks listed, although every job SUCCEEDED.

One ratio task (S_vs_B), one training job of two small members, 10 steps, no fit: about 15 s
on 2 cores (the fit stage's own checks are merged at unit level, tests/backend/test_result_status.py).
"""

from __future__ import annotations

import json

import pytest

SPOILED = """\
name: spoiled-ratios
description: networks stopped after 10 training steps; the result must say "needs review"
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
  defaults: {ensemble_size: 2, members_per_job: 2, hidden_layers: 1, width: 16, max_steps: 10,
             eval_every: 5, checkpoint_every: 10}
data:
  asimov: {mu: 1.0}
compute:
  fit: false
backend: {launcher: local, max_concurrency: 1}
"""


@pytest.fixture(scope="module")
def spoiled_run(analysis_home, tmp_path_factory):
    """`nsbi analysis run` of the spoiled analysis: (exit status, stdout, report folder, campaign id)."""
    import contextlib
    import io

    from backend import service
    from backend.cli import main

    work = tmp_path_factory.mktemp("spoiled")
    path = work / "spoiled.yaml"
    path.write_text(SPOILED)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["analysis", "run", str(path), "--report-dir", str(work / "report"), "--quiet"])
    cid = max(c.id for c in service.list_campaigns())
    return code, out.getvalue(), work / "report", cid, path


@pytest.mark.slow
def test_spoiled_ratios_need_review_in_db_report_and_exit_status(spoiled_run):
    from backend import result_status, service

    code, out, report, cid, _ = spoiled_run
    assert service.get_campaign(cid).summary.status == "SUCCEEDED"  # every job ran ...
    assert code == result_status.EXIT_NEEDS_REVIEW == 3, out  # ... but the result needs review
    assert "result: needs review: S_vs_B closure χ²/ndf" in out
    # the database: stored on the campaign row when the controller settled it
    status = result_status.campaign_result_status(cid, compute_missing=False)
    assert status is not None and status.state == "needs review"
    failed = {r.name: r for r in status.failed}
    assert {"closure_chi2_ndf", "calibration"} <= set(failed), status.summary()
    assert all(r.task == "S_vs_B" for r in status.failed)
    assert (
        failed["closure_chi2_ndf"].value > 3 * failed["closure_chi2_ndf"].threshold
    )  # by how much
    assert all(
        r.value > r.threshold if r.direction == "below" else r.value < r.threshold
        for r in status.failed
    )
    # the report: result.json carries the status, summary.md opens with it and the failed checks
    doc = json.loads((report / "result.json").read_text())
    assert doc["result_status"]["state"] == "needs review"
    assert [f["name"] for f in doc["result_status"]["failed"]] == [r.name for r in status.failed]
    summary = (report / "summary.md").read_text()
    head = summary.split("μ̂ =")[0]  # everything before the result itself
    assert (
        "**Result status: NEEDS REVIEW**" in head
        and "| check | task | value | threshold | message |" in head
    )
    assert "| closure_chi2_ndf | S_vs_B |" in head and "| ≤ 3.0000 |" in head


@pytest.mark.slow
def test_a_rerun_reusing_the_spoiled_ensembles_still_needs_review(spoiled_run):
    from backend import result_status, service
    from backend.analysis.run import run_analysis

    _, _, report, cid, path = spoiled_run
    again = run_analysis(path, report_dir=report.parent / "report-2", progress=False)
    assert again.campaign_id != cid and again.ran == [] and again.status == "SUCCEEDED"
    assert again.needs_review and again.exit_code == 3
    assert again.result_status["summary"] == result_status.campaign_result_status(cid).summary()
    assert service.get_campaign(again.campaign_id).summary.status == "SUCCEEDED"


def test_exit_codes_and_a_passing_report():
    """Exit status: 0 succeeded with checks passed, 3 needs review, 1 failed (whatever the checks)."""
    from backend.analysis.report import summary_markdown
    from backend.analysis.run import RunSummary

    def summary(status: str, state: str | None) -> RunSummary:
        return RunSummary(
            1, status, None, None, [], {}, None, 0.0, {}, {"state": state} if state else {}
        )

    assert summary("SUCCEEDED", "checks passed").exit_code == 0
    assert summary("SUCCEEDED", "needs review").exit_code == 3
    assert (
        summary("FAILED", "needs review").exit_code == 1
        and summary("CANCELLED", None).exit_code == 1
    )
    assert summary("SUCCEEDED", None).exit_code == 0  # no status recorded: nothing failed
    md = summary_markdown(
        {"result_status": {"state": "checks passed", "n_checks": 7, "failed": []}}, {}, None, None
    )
    assert "**Result status: checks passed** (all 7 checks passed)" in md.split("μ̂")[0]


def test_report_names_the_tasks_trained_paired():
    from backend.analysis.report import summary_markdown

    split = {"numerator": {"method": "split_by"}, "denominator": {"method": "split_by"}}
    result = {
        "result_status": {"state": "checks passed", "n_checks": 1, "failed": []},
        "splits": {"train-sbi": split, "train-s": split},
        "paired_tasks": ["SBI_vs_B"],
    }
    md = summary_markdown(result, {}, None, None)
    line = next(x for x in md.splitlines() if x.startswith("- events the networks never saw"))
    assert "split by split_by" in line
    assert "trained paired (the same events with two weightings): SBI_vs_B" in line
    result["paired_tasks"] = []
    assert "paired" not in summary_markdown(result, {}, None, None)
