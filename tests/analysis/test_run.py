"""`nsbi analysis run` end to end on the demo analysis: the learned fit against the exact one,
the report's provenance, and reuse on a second run (the fit-only change is tested on the
smaller ROOT example, test_run_root.py).

One real run of examples/analysis-demo.yaml (worker processes train the ensembles through the
local launcher) is shared by the module; the later runs reuse its jobs, so they are quick.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from analysis_testkit import exact_fit

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "analysis-demo.yaml"

pytestmark = pytest.mark.slow


def attempts_by_job(campaign_id: int) -> dict[str, int]:
    """job name -> attempt rows: what actually ran (a reused job has none)."""
    from backend.db import get_engine
    from backend.db.models import Attempt, Job

    with get_engine().connect() as conn:
        rows = conn.execute(
            sa.select(Job.name, sa.func.count(Attempt.id))
            .outerjoin(Attempt, Attempt.job_id == Job.id)
            .where(Job.campaign_id == campaign_id)
            .group_by(Job.name)
        ).all()
    return dict(rows)


def fit_spec(campaign_id: int) -> dict:
    """The spec.json the fit job's worker read (with its inputs), from the store."""
    from backend import service
    from backend.stores import get_json, open_store

    (fit,) = [j for j in service.campaign_job_records(campaign_id) if j["kind"] == "fit"]
    return get_json(open_store(fit["uri"]), "spec.json")


@pytest.fixture(scope="module")
def first(analysis_home):
    from backend.analysis.run import run_analysis

    return run_analysis(DEMO, report_dir=analysis_home / "report-1", progress=False)


def test_demo_fit_agrees_with_the_exact_ratio_fit(first):
    assert first.status == "SUCCEEDED"
    assert set(attempts_by_job(first.campaign_id).values()) == {
        1
    }  # every job ran once, none retried
    spec = fit_spec(first.campaign_id)
    mu_exact, sigma_exact = exact_fit(spec)
    mu_learned, sigma_learned = exact_fit(spec, learned=True)
    # The simulation's own Asimov events (evaluation events, weights from the simulation, not from
    # the model) fitted with the analytic and the learned ratios: the learned ensembles may move
    # mu-hat by at most 0.2 sigma and the error by at most 15 % (the acceptance).
    assert abs(mu_learned - mu_exact) < 0.2 * sigma_exact, (mu_learned, mu_exact, sigma_exact)
    assert abs(sigma_learned / sigma_exact - 1.0) < 0.15, (sigma_learned, sigma_exact)
    # the job's own Asimov data are the learned model's expectation: a fit returns mu_true
    assert first.mu_hat == pytest.approx(1.0, abs=1e-6)


def test_report_holds_result_and_provenance(first, analysis_home):
    folder = analysis_home / "report-1"
    doc = json.loads((folder / "result.json").read_text())
    assert doc["fit"]["mu_hat"] == pytest.approx(first.mu_hat) and doc["fit"][
        "sigma"
    ] == pytest.approx(first.sigma)
    assert doc["analysis"]["file_hash"] == hashlib.sha256(DEMO.read_bytes()).hexdigest()
    assert doc["hashes"]["analysis_file"] == doc["analysis"]["file_hash"]
    assert doc["code_version"] and doc["engine_version"]
    assert set(doc["ensembles"]) == {"S_vs_B", "SBI_vs_B", "m4l_scale_up_B", "m4l_scale_down_B"}
    from backend.stores.local import path_from_uri

    assert all(path_from_uri(u).is_file() for uris in doc["ensembles"].values() for u in uris)
    assert set(doc["seeds"]["train"].values()) == {0}
    assert doc["paired_tasks"] == []  # the demo simulates every process on its own
    assert {i["nuisance"] for i in doc["impacts"]} == {"m4l_scale", "lumi"}
    assert all(i["method"] == "refit" for i in doc["impacts"])
    assert set(doc["pulls"]) == {"m4l_scale", "lumi"}
    assert doc["breakdown"]["mu"]["total"] == pytest.approx(first.sigma, rel=1e-6)
    scan = doc["scan"]
    # the requested points (a point whose profile fit failed is left out: mu = 0 today, where
    # d sqrt(mu)/d mu diverges), with q >= 0 everywhere and the points around the minimum present
    assert set(scan["values"]) <= {0.0, 0.5, 1.0, 1.5, 2.0, 2.5} and {0.5, 1.0, 1.5, 2.0} <= set(
        scan["values"]
    )
    assert min(scan["dq"]) > -1e-6
    lo, hi = doc["intervals"]["68"]
    # the profile interval brackets mu-hat and is +-sigma wide to 10 %: near its minimum the
    # profile of this fit is close to a parabola, which the interpolation in sqrt(q) gets exactly
    assert lo < first.mu_hat < hi and (hi - lo) / 2 == pytest.approx(first.sigma, rel=0.10)
    assert set(doc["calibration"]) == set(doc["ensembles"])
    assert doc["jobs"]["reused"] == {} and len(doc["jobs"]["ran"]) == 8
    # plots: PNG + PDF where a Chromium exists, HTML otherwise (and the summary says so)
    summary = (folder / "summary.md").read_text()
    for name in ("likelihood_scan", "impacts_pulls", "calibration"):
        files = [folder / p for p in doc["plots"][name]]
        assert files and all(f.is_file() and f.stat().st_size > 1000 for f in files)
        if doc["plot_export"] == "png+pdf":
            assert {f.suffix for f in files} == {".png", ".pdf"}
            assert files[0].read_bytes()[:4] == b"\x89PNG" and files[1].read_bytes()[:4] == b"%PDF"
        else:
            assert {f.suffix for f in files} == {".html"} and "HTML" in summary
        assert f"({files[0].relative_to(folder).as_posix()})" in summary
    assert re.search(rf"μ̂ = {first.mu_hat:.3f} ± {first.sigma:.3f}", summary)
    assert doc["analysis"]["file_hash"] in summary
    # the recorded results carry the provenance too (the dashboard's view of the same fit)
    from backend import service

    (fit,) = [f for f in service.fit_results(first.campaign_id) if f["kind"] == "fit"]
    prov = fit["payload"]["provenance"]
    assert prov["analysis"]["file_hash"] == doc["analysis"]["file_hash"] and prov["cache_key"]
    assert prov["ensembles"] == doc["ensembles"]


def test_second_run_of_unchanged_file_trains_nothing(first, analysis_home, capsys):
    from backend import service
    from backend.analysis.run import run_analysis

    second = run_analysis(DEMO, report_dir=analysis_home / "report-2", progress=True)
    assert second.status == "SUCCEEDED"
    assert second.ran == []
    assert set(attempts_by_job(second.campaign_id).values()) == {0}  # no job of it ran at all
    first_ids = {j["name"]: j["id"] for j in service.campaign_job_records(first.campaign_id)}
    assert second.reused == first_ids  # each job points at the job that ran it
    assert second.mu_hat == first.mu_hat and second.sigma == first.sigma
    err = capsys.readouterr().err
    assert "reused" in err and "train 4/4" in err  # the progress line on the command line


def test_cli_validate_and_bad_file(analysis_home, tmp_path, capsys):
    from backend import service
    from backend.cli import main

    assert main(["analysis", "validate", str(DEMO)]) == 0
    out = capsys.readouterr().out
    assert "valid analysis 'offshell-demo'" in out and "8 jobs" in out and "already done" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEMO.read_text().replace("reference: B", "reference: Nope"))
    before = len(service.list_campaigns())
    assert main(["analysis", "run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:" in err and "reference" in err and "nothing was created" in err
    assert len(service.list_campaigns()) == before


def test_gce_backend_creates_a_gce_campaign(tmp_path, monkeypatch):
    """--backend gce: the campaign and its jobs are for the GCE launcher (no controller here:
    the one `nsbi up` runs with GCE settings carries it)."""
    from backend import service
    from backend.analysis.run import run_analysis
    from backend.db import dispose_engines, get_engine, init_db

    url = f"sqlite:///{tmp_path / 'gce.db'}"
    monkeypatch.setenv("NSBI_HOME", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", url)
    engine = init_db(get_engine(url))
    try:
        summary = run_analysis(DEMO, backend="gce", progress=False, wait=False, engine=engine)
        detail = service.get_campaign(summary.campaign_id, engine=engine)
        assert detail.summary.launcher == "gce" and detail.summary.status == "ACTIVE"
        jobs, _ = service.list_jobs(campaign_id=summary.campaign_id, engine=engine)
        assert {j.machine_type for j in jobs} == {"g2-standard-4"}
        assert {j.desired_state for j in jobs} == {"RUN"}
    finally:
        dispose_engines()
