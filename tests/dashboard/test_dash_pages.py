"""AppTest tests for every page, against a seeded SQLite database (see seed.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dash_testkit import REPO, run_page
from streamlit.testing.v1 import AppTest

from dashboard import formatting

TIMEOUT = 60


def metric_values(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def table_with(at: AppTest, column: str):
    """The first table on the page that has this column."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def test_campaigns_page_lists_seeded_campaign(seeded):
    at = run_page("campaigns")
    table = at.dataframe[0].value
    assert table["name"].tolist() == ["seeded"]
    assert table["succeeded"].iloc[0] == seeded.state_counts["SUCCEEDED"]
    # human column names, no raw names and no "None" anywhere
    assert "n_jobs" not in table and "estimate_cost" not in table
    assert table["jobs"].iloc[0] == len(seeded.job_ids)
    assert table["budget (USD)"].iloc[0] == "100.00"
    assert not table.isna().any().any()
    assert "None" not in table.astype(str).to_numpy().ravel().tolist()
    assert table["progress"].iloc[0] == pytest.approx(
        seeded.state_counts["SUCCEEDED"] / len(seeded.job_ids)
    )


def test_demo_button_creates_and_launches(empty_db):
    from backend import service

    at = run_page("campaigns")
    assert at.info  # the empty state
    at.button(key="demo-campaign").click().run()
    assert not at.exception
    (c,) = service.list_campaigns()
    assert c.name.startswith("demo-") and c.status == "ACTIVE" and c.n_jobs > 0
    assert at.dataframe[0].value["id"].tolist() == [c.id]


def test_form_shows_errors_beside_fields_and_creates_nothing(empty_db):
    from backend import service

    at = run_page("campaigns")
    at.text_input(key="f-name").set_value("")
    at.text_area(key="f-grid").set_value("bogus = 1, 2")
    at.selectbox(key="f-launcher").set_value("gce")
    at.button(key="FormSubmitter:campaign-form-Create and launch").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("give the campaign a name" in e for e in errors)
    assert any("unknown key 'bogus'" in e for e in errors)
    assert any("zone" in e for e in errors)
    assert service.list_campaigns() == []


def test_form_estimate_matches_service_then_create_and_launch(empty_db):
    from backend import service
    from dashboard import forms

    at = run_page("campaigns")
    at.text_input(key="f-name").set_value("form-made")
    at.number_input(key="f-ensemble").set_value(6)
    at.number_input(key="f-budget").set_value(25.0)
    at.button(key="FormSubmitter:campaign-form-Estimate").click().run()
    assert not at.exception
    values = forms.default_values() | {"name": "form-made", "ensemble_size": 6, "budget": 25.0}
    expected = service.estimate_campaign(forms.build_config(values).config)
    shown = metric_values(at)
    assert shown["Estimated GPU-hours"] == formatting.number(expected.gpu_hours, 3)
    assert shown["Jobs"] == str(len(expected.per_job))
    breakdown = table_with(at, "price (USD/h)")
    assert breakdown["jobs"].sum() == len(expected.per_job)
    assert sum(float(c.replace(",", "")) for c in breakdown["cost (USD)"]) == pytest.approx(
        expected.cost, abs=0.01 * len(breakdown)
    )
    assert service.list_campaigns() == []  # estimating creates nothing
    at.button(key="FormSubmitter:campaign-form-Create and launch").click().run()
    assert not at.exception
    (c,) = service.list_campaigns()
    assert (c.name, c.status, c.budget_usd, c.n_jobs) == (
        "form-made",
        "ACTIVE",
        25.0,
        len(expected.per_job),
    )


def test_bulk_cancel_selected_campaign(seeded):
    from backend import service

    at = run_page("campaigns")
    at.dataframe[0]  # the table exists
    # selection state of st.dataframe is set through the widget's session state key
    at.session_state["campaign-table"] = {"selection": {"rows": [0], "columns": []}}
    at.run()
    at.button(key="bulk-Cancel").click().run()
    assert not at.exception
    assert service.get_campaign(seeded.campaign_id).cancel_requested_at is not None


def test_monitor_shows_states_jobs_and_curves(seeded):
    at = run_page("monitor")
    shown = metric_values(at)
    assert shown["Running"] == str(seeded.state_counts["RUNNING"])
    assert shown["Failed"] == str(seeded.state_counts["FAILED"])
    jobs = at.dataframe[0].value
    assert len(jobs) == len(seeded.job_ids)
    assert not jobs.isna().any().any()  # Streamlit draws a missing cell as "None"
    assert set(jobs["state"]) == set(seeded.state_counts)
    (chart,) = at.get("plotly_chart")
    spec = json.loads(chart.proto.spec)
    assert spec["layout"]["title"]["text"].startswith("Training vs validation loss")
    at.button_group(key="monitor-chart").set_value("Resource usage").run()
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert titles == ["GPU", "CPU and memory"]  # the seeded workers report a GPU
    at.multiselect(key="monitor-states").set_value(["FAILED"]).run()
    assert set(at.dataframe[0].value["state"]) == {"FAILED"}


def test_monitor_retry_selected_job_and_history(seeded):
    from backend import service

    at = run_page("monitor")
    jobs = at.dataframe[0].value
    failed_row = int(jobs.index[jobs["state"] == "FAILED"][0])
    failed_id = int(jobs.loc[failed_row, "job"])
    at.session_state["monitor-jobs"] = {"selection": {"rows": [failed_row], "columns": []}}
    at.run()
    assert any(e.label == f"History of job {failed_id}" for e in at.expander)
    at.button(key="jobs-Retry jobs").click().run()
    assert not at.exception
    rows = {j.id: j for j in service.list_jobs(campaign_id=seeded.campaign_id, limit=100)[0]}
    assert rows[failed_id].retry_requested is True


def test_monitor_without_campaigns(empty_db):
    at = run_page("monitor")
    assert "No campaigns yet" in at.info[0].value


def test_fit_page_shows_mu_pulls_impacts(seeded):
    at = run_page("fit")
    shown = metric_values(at)
    assert shown["best-fit mu"] == formatting.with_error(seeded.mu_hat, seeded.sigma)
    assert shown["Nuisance parameters"] == "5"
    # the learned model's error components, each on its own, and the total they make
    assert shown["total error"] == formatting.error(seeded.sigma * np.sqrt(1.25), seeded.sigma)
    assert shown["NN training"] == formatting.with_error(0.3 * seeded.sigma, 0.1 * seeded.sigma)
    assert shown["simulation statistics"] == formatting.with_error(
        0.4 * seeded.sigma, 0.05 * seeded.sigma
    )
    # how much network noise was shrunk out of each ratio: only the task it changed is named
    shrinkage = next(c.value for c in at.caption if c.value.startswith("Noise shrinkage"))
    assert "SBI_vs_B lambda 0.636" in shrinkage and "0.0072" in shrinkage
    assert "S_vs_B" not in shrinkage.replace("SBI_vs_B", "")
    # the page opens on the table of every parameter (numbers formatted by their errors)
    params = table_with(at, "value ± error")
    assert params["parameter"].tolist()[0] == "mu" and len(params) == 6
    assert params["value ± error"].iloc[0] == formatting.with_error(seeded.mu_hat, seeded.sigma)
    at.button_group(key="fit-view").set_value("Pulls").run()
    assert [b.label for b in at.download_button] == ["PNG", "PDF"]  # every chart is exportable
    titles = []
    for view in ("Pulls", "Impacts", "Correlations", "Scan", "Toys"):
        at.button_group(key="fit-view").set_value(view).run()
        assert not at.exception
        (chart,) = at.get("plotly_chart")
        titles.append(json.loads(chart.proto.spec)["layout"]["title"]["text"])
    assert titles == [
        "Nuisance-parameter pulls",
        "Impact on mu: top 5",
        "Correlation matrix",
        "Profile likelihood scan of mu",
        "Toy pulls of mu",
    ]
    # the scan view reads the 68 % interval off the seeded parabola q = ((mu - mu_hat) / sigma)^2
    at.button_group(key="fit-view").set_value("Scan").run()
    lo, hi = (float(v) for v in metric_values(at)["mu 68 % CL (scan)"].strip("[]").split(","))
    assert (lo, hi) == (
        # shown to the decimals of sigma (0.21): 0.01, plus the grid's interpolation error
        pytest.approx(seeded.mu_hat - seeded.sigma, abs=0.015),
        pytest.approx(seeded.mu_hat + seeded.sigma, abs=0.015),
    )


def test_fit_page_limits_view_shows_the_band_the_warning_and_the_expected_result(seeded):
    import dash_testkit as seed

    at = run_page("fit")
    at.button_group(key="fit-view").set_value("Limits").run()
    assert not at.exception
    shown = metric_values(at)
    assert shown["observed 95 % CL limit"] == "0.8142"
    assert shown["expected (median)"] == "0.8142"
    assert shown["expected ±1σ"] == "[0.1263, 1.2]"  # 1.1997 to 4 significant digits
    assert shown["expected mu"] == formatting.asymmetric(1.0, -0.25, 0.3)
    assert shown["observed mu"] == formatting.number(seeded.mu_hat)  # no profile errors seeded
    assert shown["expected significance"] == "4.1 σ"
    (warning,) = at.warning
    assert "not to be trusted" in warning.value
    assert seed.LIMITS["extra"]["asymptotic_warning"] in warning.value
    (chart,) = at.get("plotly_chart")
    spec = json.loads(chart.proto.spec)
    assert spec["layout"]["title"]["text"] == "95 % CL upper limit on mu (CLs)"
    rects = [s for s in spec["layout"]["shapes"] if s["type"] == "rect"]
    assert [(r["x0"], r["x1"]) for r in rects] == [(0.0492, 1.5525), (0.1263, 1.1997)]
    assert spec["data"][0]["x"] == [0.8142]  # the observed marker
    assert any("Discovery test on the data" in c.value for c in at.caption)


def test_fit_page_nothing_yet(empty_db):
    from backend import service
    from backend.campaigns import DEMO_CONFIG

    service.create_campaign(DEMO_CONFIG)
    at = run_page("fit")
    assert any("Nothing yet" in i.value for i in at.info)
    assert not at.get("plotly_chart")


def test_diagnostics_page_nothing_yet(seeded):
    at = run_page("diagnostics")
    assert any("Nothing yet" in i.value for i in at.info)


def test_diagnostics_page_lights_and_charts(nsbi_env):
    import dash_testkit as seed

    seed.seed(nsbi_env, train_states=("SUCCEEDED",), with_diagnostics=True)
    at = run_page("diagnostics")
    assert at.selectbox(key="diag-task").options == ["task0", "task1", "task2"]
    lights = " ".join(m.value for m in at.markdown)
    assert (
        ":orange-badge[AMBER]  \n**closure χ²/ndf**  \n2" in lights
        and "green ≤ 1.5, amber ≤ 3" in lights
    )
    assert (
        ":red-badge[RED]  \n**overtraining**" in lights
        and ":green-badge[GREEN]  \n**AUC**" in lights
    )
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert titles == ["Calibration: task0", "ROC: task0"]
    at.button_group(key="diag-view").set_value("Closure").run()
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert titles == ["m4l: χ²/ndf = 2.0/1"]
    at.selectbox(key="diag-observable").set_value(1).run()
    assert (
        json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]["title"]["text"]
        == "pt: χ²/ndf = 1.0/2"
    )
    at.button_group(key="diag-view").set_value("Overtraining").run()
    assert at.dataframe[0].value["holdout_loss"].tolist() == [0.62, 0.66]


def test_diagnostics_page_says_when_a_task_trained_paired(nsbi_env):
    import dash_testkit as seed
    import sqlalchemy as sa
    from dash_testkit import engine_diagnostics

    from backend.db import FitResult, Job, get_engine

    seeded = seed.seed(nsbi_env, train_states=("SUCCEEDED",), with_diagnostics=True)
    fr, job = FitResult.__table__, Job.__table__
    with get_engine(nsbi_env).begin() as conn:
        ids = [
            r.id
            for r in conn.execute(
                sa.select(job.c.id).where(
                    job.c.campaign_id == seeded.campaign_id, job.c.task == "task1"
                )
            )
        ]
        conn.execute(
            sa.update(fr)
            .where(fr.c.job_id.in_(ids))
            .values(
                payload={"task": "task1", "diagnostics": {**engine_diagnostics(), "paired": True}}
            )
        )
    at = run_page("diagnostics")
    assert not any("Trained paired" in c.value for c in at.caption)  # task0: two samples
    # the calibration view explains how the check reads the curve
    assert any(c.value.startswith("Worst bin") for c in at.caption)
    # a RED light says what to try (the seeded task's overtraining is RED)
    assert any("failed: the networks learned" in e.value for e in at.error)
    at.selectbox(key="diag-task").set_value("task1").run()
    assert any("Trained paired" in c.value for c in at.caption)


def test_costs_page_totals_match_seed(seeded):
    at = run_page("costs")
    shown = metric_values(at)
    assert shown["Total cost (USD)"] == f"{seeded.cost:,.2f}"
    assert shown["GPU-hours"] == f"{seeded.gpu_hours:,.1f}"
    assert len(at.get("plotly_chart")) == 1
    assert at.get("download_button")
    for view in ("Over time", "Budget burn-down"):
        at.button_group(key="cost-view").set_value(view).run()
        assert not at.exception and len(at.get("plotly_chart")) == 1
    at.button_group(key="cost-view").set_value("Table").run()
    table = at.dataframe[0].value
    assert table["cost (USD)"].astype(float).sum() == pytest.approx(seeded.cost, abs=0.05)


def test_costs_page_empty(empty_db):
    at = run_page("costs")
    assert any("No usage yet" in i.value for i in at.info)


def test_app_open_on_loopback(seeded):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert at.title[0].value == "Campaigns"


@pytest.fixture
def public_address():
    from streamlit import config

    old = config.get_option("server.address")
    config.set_option("server.address", "0.0.0.0")
    yield
    config.set_option("server.address", old)


def test_app_locked_without_password_on_public_address(seeded, public_address, monkeypatch):
    monkeypatch.delenv("NSBI_DASHBOARD_PASSWORD", raising=False)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.run()
    assert "no login is configured" in at.error[0].value
    assert not at.title or at.title[0].value != "Campaigns"


def test_app_password_login_on_public_address(seeded, public_address, monkeypatch):
    monkeypatch.setenv("NSBI_DASHBOARD_PASSWORD", "s3cret")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.dataframe  # nothing shown before login
    at.text_input(key="_nsbi_password").set_value("wrong")
    at.button(key="FormSubmitter:login-Log in").click().run()
    assert at.error[0].value == "Wrong password."
    at.text_input(key="_nsbi_password").set_value("s3cret")
    at.button(key="FormSubmitter:login-Log in").click().run()
    assert not at.exception
    assert at.title[0].value == "Campaigns"
