"""The ROOT example end to end: ntuples with jagged branches -> features by expressions ->
ratio ensembles -> fit of the observed pseudo-data; then reuse keyed on the files' bytes."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def ran_jobs(campaign_id: int) -> set[str]:
    from backend.db import get_engine
    from backend.db.models import Attempt, Job

    with get_engine().connect() as conn:
        return set(
            conn.execute(
                sa.select(Job.name)
                .join(Attempt, Attempt.job_id == Job.id)
                .where(Job.campaign_id == campaign_id)
            ).scalars()
        )


def test_root_example_end_to_end_then_reuse_and_a_fit_only_change(analysis_home, tmp_path):
    from backend.analysis.run import run_analysis

    work = tmp_path / "analysis"
    work.mkdir()
    shutil.copy(REPO / "examples" / "analysis-root.yaml", work / "analysis-root.yaml")
    made = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "make_root_samples.py"),
            str(work / "root-samples"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr
    first = run_analysis(
        work / "analysis-root.yaml", report_dir=tmp_path / "report", progress=False
    )
    assert first.status == "SUCCEEDED", first.result["jobs"]["states"]
    # observed pseudo-data drawn at mu = 1: a small ensemble lands within 3 sigma of it
    assert (
        math.isfinite(first.mu_hat)
        and first.sigma > 0
        and abs(first.mu_hat - 1.0) < 3 * first.sigma
    )
    doc = json.loads((tmp_path / "report" / "result.json").read_text())
    assert doc["fit"]["data"] != "asimov"
    assert {i["nuisance"] for i in doc["impacts"]} == {"m4l_scale", "bkg_xs"}
    assert set(doc["ensembles"]) == {"S_vs_B", "SBI_vs_B", "m4l_scale_up_B", "m4l_scale_down_B"}
    assert len(first.ran) == len(doc["jobs"]["states"])
    # the jobs' keys cover the files' bytes: a new mtime alone retrains nothing ...
    for f in (work / "root-samples").glob("*.root"):
        st = f.stat()
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = run_analysis(
        work / "analysis-root.yaml", report_dir=tmp_path / "report-2", progress=False
    )
    assert again.status == "SUCCEEDED" and ran_jobs(again.campaign_id) == set()
    assert again.mu_hat == first.mu_hat
    # ... and a changed fit setting re-runs the fit stage only, on the trained ensembles
    text = (work / "analysis-root.yaml").read_text()
    assert "bounds: [0.0, 20.0]" in text
    (work / "analysis-root.yaml").write_text(
        text.replace("bounds: [0.0, 20.0]", "bounds: [0.0, 10.0]")
    )
    third = run_analysis(
        work / "analysis-root.yaml", report_dir=tmp_path / "report-3", progress=False
    )
    assert third.status == "SUCCEEDED"
    assert ran_jobs(third.campaign_id) == {"fit", "impacts-000", "scan-000"}
    assert set(third.reused) == {
        n for n in first.result["jobs"]["states"] if n.startswith("train-")
    }
    # the same ensembles and data, and the bound is not active: the same result
    assert third.mu_hat == pytest.approx(first.mu_hat, abs=1e-3 * first.sigma)
