"""Issue 17: the dashboard an analyst trusts -- numbers by their uncertainty, an AUC near 0.5
not green for a signal task, the Fit page's tables (parameters, impacts, error breakdown), runs
kept apart with their states and live progress, scan and toy quality, Monitor fixes (status,
selector, default campaign, Retry only for failed jobs), each attempt's output, forms that
explain every refusal beside its field, CPU-hours and wall time for local runs, and nothing
fetched from outside the machine."""

from __future__ import annotations

import copy
import socket
from datetime import UTC, datetime

import dash_testkit as seed
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from dash_testkit import REPO, run_page

from dashboard import formatting, queries


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def table_with(at, column: str) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if column in d.value.columns)


# --------------------------------------------------------------------------- formatting


def test_numbers_are_formatted_by_their_uncertainty():
    assert formatting.with_error(1.0512, 0.2137) == "1.05 ± 0.21"
    assert formatting.with_error(-0.008098, 0.0123) == "−0.008 ± 0.012"
    assert formatting.with_error(2.558, 0.0006625) == "2.55800 ± 0.00066"
    assert formatting.with_error(1234.5, 56.0) == "1234 ± 56"
    assert formatting.asymmetric(1.05, -0.19, 0.234) == "1.05 −0.19 / +0.23"
    assert formatting.asymmetric(0.0, None, 0.5) == "0.00 −open / +0.50"
    # a check value to the resolution of its limit, not to 4 significant digits
    assert formatting.against(0.0006625, 0.05) == "0.0007"
    assert formatting.against(21.2, 3.0) == "21.20"
    assert formatting.against(0.509, 0.5) == "0.509"
    assert formatting.number(None) == formatting.number(float("nan")) == "n/a"
    assert formatting.number(2.558) == "2.558" and formatting.number(0.5) == "0.5"
    m, se = formatting.mean_with_error([0.0, 1.0, 2.0, 3.0])
    assert (m, se) == (1.5, pytest.approx(np.std([0, 1, 2, 3], ddof=1) / 2))


def test_display_frame_has_no_none_and_human_names():
    df = pd.DataFrame(
        {
            "id": [1, 2],
            "gpu_type": [None, "nvidia-l4"],
            "cost_usd": [0.5, float("nan")],
            "started_at": [datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), None],
        }
    )
    out = formatting.display_frame(
        df, {"id": "job", "gpu_type": "GPU", "cost_usd": "cost (USD)", "started_at": "started"}
    )
    assert out.columns.tolist() == ["job", "GPU", "cost (USD)", "started"]
    cells = out.astype(str).to_numpy().ravel().tolist()
    assert "None" not in cells and "nan" not in cells and "NaT" not in cells
    assert not out.isna().any().any()  # Streamlit draws a missing cell as "None"
    assert out["started"].tolist() == ["2026-01-02 03:04:05", ""]


# --------------------------------------------------------------------------- AUC


def test_an_auc_near_one_half_is_not_green_for_a_signal_task():
    diag = seed.engine_diagnostics()
    diag["auc"] = 0.509
    signal = queries.diagnostics_view("S_vs_B", diag).checks.set_index("check")
    syst = queries.diagnostics_view("alpha_up_B", diag).checks.set_index("check")
    assert signal.loc["auc", "status"] == "amber"  # barely better than chance: a warning
    assert "signal task" in signal.loc["auc", "threshold"]
    assert syst.loc["auc", "status"] == "green"  # a systematic variation is meant to be near 0.5
    diag["auc"] = 0.49
    assert queries.diagnostics_view("S_vs_B", diag).checks.set_index("check").loc[
        "auc", "status"
    ] == ("red")
    diag["auc"] = 0.71
    assert queries.diagnostics_view("S_vs_B", diag).checks.set_index("check").loc[
        "auc", "status"
    ] == ("green")


# --------------------------------------------------------------------------- Fit page


def _patch_fit_payload(url: str, cid: int, kind: str, update) -> None:
    from sqlmodel import Session

    from backend.db import get_engine
    from backend.db.models import FitResult, Job

    with Session(get_engine(url)) as s:
        fr = s.execute(
            sa.select(FitResult)
            .join(Job, Job.__table__.c.id == FitResult.__table__.c.job_id)
            .where(FitResult.__table__.c.campaign_id == cid, Job.__table__.c.kind == kind)
        ).scalar_one()
        payload = copy.deepcopy(fr.payload)  # a new object, so the JSON column is written
        update(payload)
        fr.payload = payload
        s.add(fr)
        s.commit()


def _add_run(url: str, cid: int, states: dict[str, str]) -> None:
    """Fit-stage jobs of a second fit run (named like fit_starts names them: '<kind>-r2')."""
    from backend.db import Job, get_engine

    now = datetime.now(UTC)
    rows: list[dict[str, object]] = [
        {
            "campaign_id": cid,
            "name": f"{kind}-r2",
            "kind": kind,
            "task": None,
            "members": [],
            "status": state,
            "desired_state": "RUN",
            "current_attempt": 1,
            "retries": 0,
            "recoveries": 0,
            "machine_type": "local",
            "gpu_type": None,
            "gpu_count": 0,
            "spot": False,
            "created_at": now,
            "updated_at": now,
            "np_subset": [],
            "seeds": [],
            "depends_on": [],
            "spec": {},
            "zones": [],
        }
        for kind, state in states.items()
    ]
    with get_engine(url).begin() as conn:
        conn.execute(sa.insert(Job.__table__), rows)


def test_fit_page_tables_asymmetric_errors_scan_flags_and_toy_errors(nsbi_env):
    s = seed.seed(nsbi_env, n_jobs=4, train_states=("SUCCEEDED",))

    def asym(p):
        p.update(mu_err_lo=-0.19, mu_err_hi=0.24)

    def bad_scan(p):
        scan = p["scan"]
        scan["converged"][3] = False
        scan["non_monotonic"][17] = True
        scan["flags"] = ["not_converged", "non_monotonic_right"]

    def few_biased_toys(p):
        pulls = (np.linspace(-1, 1, 20) + 0.55).tolist()
        p["toys"].update(
            n_toys=20,
            n_converged=20,
            pulls=pulls,
            pull_mean=float(np.mean(pulls)),
            pull_width=float(np.std(pulls, ddof=1)),
        )

    _patch_fit_payload(nsbi_env, s.campaign_id, "fit", asym)
    _patch_fit_payload(nsbi_env, s.campaign_id, "scan", bad_scan)
    _patch_fit_payload(nsbi_env, s.campaign_id, "toys", few_biased_toys)
    at = run_page("fit")
    shown = metrics(at)
    assert shown["best-fit mu"] == "1.05 ± 0.21"
    assert shown["68 % profile interval"] == "1.05 −0.19 / +0.24"
    params = table_with(at, "value ± error")
    mu = params.set_index("parameter").loc["mu"]
    assert mu["asymmetric (68 % profile)"] == "1.05 −0.19 / +0.24" and mu["role"] == "POI"
    nps = params[params["role"] == "constrained"]
    assert sorted(nps["parameter"]) == sorted(seed.NPS)
    assert (nps["pull"] != "").all() and (nps["constraint"] != "").all()
    breakdown = table_with(at, "component")
    assert {"Hesse total", "statistical", "systematic"} <= set(breakdown["component"])
    assert not params.isna().any().any()

    at.button_group(key="fit-view").set_value("Impacts").run()
    impacts = table_with(at, "nuisance parameter")
    assert len(impacts) == len(seed.NPS) and impacts["nuisance parameter"].iloc[0] == "jes"

    at.button_group(key="fit-view").set_value("Scan").run()
    warning = " ".join(w.value for w in at.warning)
    assert "did not converge" in warning and "not monotonic right" in warning
    assert "left out of the curve" in warning

    at.button_group(key="fit-view").set_value("Toys").run()
    shown = metrics(at)
    mean, se = formatting.mean_with_error((np.linspace(-1, 1, 20) + 0.55).tolist())
    assert shown["Pull mean"] == formatting.with_error(mean, se)  # "0.55 ± 0.14"
    assert "±" in shown["Pull width"]
    assert "pull mean is" in " ".join(w.value for w in at.warning)  # 3.9 standard errors off


def test_fit_runs_kept_apart_with_states_and_live_progress(nsbi_env):
    s = seed.seed(nsbi_env, n_jobs=4, train_states=("SUCCEEDED",))
    _add_run(nsbi_env, s.campaign_id, {"fit": "RUNNING", "scan": "PENDING", "toys": "SUCCEEDED"})
    at = run_page("fit")
    assert at.selectbox(key="fit-run").options == ["run 2", "run 1"]
    assert at.selectbox(key="fit-run").value == 2
    (bar,) = at.get("progress")
    assert "1 of 3 fit-stage jobs finished" in bar.proto.text and "1 running" in bar.proto.text
    jobs = table_with(at, "state")
    assert set(jobs["name"]) == {"fit-r2", "scan-r2", "toys-r2"}  # run 2's jobs only
    assert set(jobs["state"]) == {"RUNNING", "PENDING", "SUCCEEDED"}
    at.selectbox(key="fit-run").set_value(1).run()
    assert not at.exception
    at.button_group(key="fit-view").set_value("Jobs").run()
    jobs = table_with(at, "state")
    assert set(jobs["name"]) == {"fit", "impacts", "scan", "toys"}
    assert set(jobs["state"]) == {"SUCCEEDED"}
    assert jobs.set_index("name").loc["fit", "μ̂ ± σ"] == "1.05 ± 0.21"
    assert not jobs.isna().any().any()


# --------------------------------------------------------------------------- Monitor


def test_monitor_status_selector_default_campaign_and_retry_rules(nsbi_env):
    from backend import service
    from backend.campaigns import DEMO_CONFIG

    s = seed.seed(nsbi_env, n_jobs=7)
    service.create_campaign({**DEMO_CONFIG, "name": "never-launched"})  # newer, CREATED
    at = run_page("monitor")
    sel = at.selectbox(key="monitor-campaign")
    assert sel.value == s.campaign_id  # the newest campaign that has jobs and was launched
    assert all("(" not in label for label in sel.options)  # no status to go stale
    assert metrics(at)["Status"] == "ACTIVE"
    jobs = at.dataframe[0].value
    succeeded = int(jobs.index[jobs["state"] == "SUCCEEDED"][0])
    at.session_state["monitor-jobs"] = {"selection": {"rows": [succeeded], "columns": []}}
    at.run()
    assert at.button(key="jobs-Retry jobs").disabled  # nothing to retry in a succeeded job
    assert at.button(key="jobs-Cancel jobs").disabled
    failed = int(jobs.index[jobs["state"] == "FAILED"][0])
    at.session_state["monitor-jobs"] = {"selection": {"rows": [succeeded, failed], "columns": []}}
    at.run()
    assert not at.button(key="jobs-Retry jobs").disabled
    assert at.button(key="jobs-Retry jobs").label == "Retry jobs (1)"


def test_monitor_shows_each_attempts_output_and_traceback(nsbi_env, tmp_path):
    s = seed.seed(nsbi_env, n_jobs=4, train_states=("FAILED",))
    job = s.train_job_ids[0]
    seed.failed_attempt_with_log(
        nsbi_env,
        job,
        tmp_path / "launcher",
        "nsbi-1-1",
        "step 10 loss 0.7\nstep 20 loss 0.6\n",
        "ValueError: boom\nTraceback (most recent call last): ...",
    )
    at = run_page("monitor")
    jobs = at.dataframe[0].value
    row = int(jobs.index[jobs["job"] == job][0])
    at.session_state["monitor-jobs"] = {"selection": {"rows": [row], "columns": []}}
    at.run()
    assert not at.exception
    code = [c.value for c in at.code]
    assert any("ValueError: boom" in c for c in code)
    assert any("step 20 loss 0.6" in c for c in code)
    assert any(b.label == "Download output" for b in at.get("download_button"))


def test_attempt_output_is_read_only_inside_the_launchers_log_folder(nsbi_env, tmp_path):
    from backend import service
    from backend.db import Attempt, get_engine

    s = seed.seed(nsbi_env, n_jobs=1, train_states=("FAILED",), with_fit=False)
    secret = tmp_path / "secret.log"
    secret.write_text("do not show")
    (tmp_path / "logs").mkdir()
    with get_engine(nsbi_env).begin() as conn:
        conn.execute(
            sa.update(Attempt.__table__).values(
                launcher="local",
                instance_id="../secret",
                launched_from=f"{socket.gethostname()}:{tmp_path}",
            )
        )
    (a,) = service.job_attempts(s.train_job_ids[0])
    assert a["output"] is None and "gone" in a["output_note"]


# --------------------------------------------------------------------------- Campaign form


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("f-ensemble", -3, "ensemble size must be at least 1"),
        ("f-ensemble", 0, "ensemble size must be at least 1"),
        ("f-budget", 1e15, "backend.budget_usd: expected a number <= 1e+09"),
        ("f-budget", -5.0, "the budget cannot be negative"),
    ],
)
def test_form_refusals_are_explained_beside_the_field(empty_db, field, value, message):
    from backend import service

    at = run_page("campaigns")
    at.number_input(key=field).set_value(value)
    at.button(key="FormSubmitter:campaign-form-Create and launch").click().run()
    assert not at.exception
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    assert service.list_campaigns() == []


def test_form_gpu_count_beyond_the_backend_limit(empty_db):
    from backend import service

    at = run_page("campaigns")
    at.selectbox(key="f-launcher").set_value("gce")
    machines = at.selectbox(key="f-machine").options
    at.selectbox(key="f-machine").set_value(next(m for m in machines if m != "local"))
    at.selectbox(key="f-gpu").set_value(at.selectbox(key="f-gpu").options[1])
    at.number_input(key="f-gpus").set_value(9999)
    at.text_input(key="f-zones").set_value("us-central1-a")
    at.button(key="FormSubmitter:campaign-form-Estimate").click().run()
    errors = [e.value for e in at.error]
    assert any("backend.gpu_count: expected an integer <= 16, got 9999" in e for e in errors)
    assert service.list_campaigns() == []


def test_estimate_breakdown_names_machine_gpus_and_spot_pricing(empty_db):
    """The estimate by task carries the config's machine type, GPUs and spot / on-demand."""
    from backend import service

    at = run_page("campaigns")
    at.selectbox(key="f-launcher").set_value("gce")
    machines = at.selectbox(key="f-machine").options
    machine = next(m for m in machines if m.startswith("n1-"))  # GPUs attach to N1 machines
    at.selectbox(key="f-machine").set_value(machine)
    gpu = next(g for g in at.selectbox(key="f-gpu").options if "t4" in str(g))
    at.selectbox(key="f-gpu").set_value(gpu)
    at.number_input(key="f-gpus").set_value(2)
    at.checkbox(key="f-spot").check()
    at.text_input(key="f-zones").set_value("us-central1-a")
    at.button(key="FormSubmitter:campaign-form-Estimate").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    breakdown = table_with(at, "price (USD/h)")
    assert set(breakdown["machine type"]) == {machine}
    assert set(breakdown["GPU"]) == {f"2 × {gpu}"}
    assert set(breakdown["pricing"]) == {"spot"}
    assert "train" in set(breakdown["kind"]) and (breakdown["jobs"] > 0).all()
    assert all(float(v.replace(",", "")) > 0 for v in breakdown["GPU-hours"])
    assert service.list_campaigns() == []  # estimating creates nothing


def test_demo_button_label_matches_the_readme(empty_db):
    at = run_page("campaigns")
    label = at.button(key="demo-campaign").label
    assert label == "Launch demo campaign"
    assert f"**{label}**" in (REPO / "README.md").read_text()


# --------------------------------------------------------------------------- usage and cost


def _local_attempts(url: str) -> None:
    """Make every attempt a free local run with CPU samples of 150 % (1.5 cores)."""
    from backend.db import Attempt, ResourceSample, get_engine

    with get_engine(url).begin() as conn:
        conn.execute(
            sa.update(Attempt.__table__).values(
                launcher="local",
                machine_type="local",
                gpu_type=None,
                gpu_count=0,
                price_per_hour=0.0,
                cost_usd=0.0,
                gpu_hours=0.0,
            )
        )
        conn.execute(sa.update(ResourceSample.__table__).values(cpu_percent=150.0))


def test_local_runs_show_cpu_hours_and_wall_time(nsbi_env):
    from backend import service
    from backend.db import Attempt, get_engine

    seed.seed(nsbi_env, n_jobs=4, with_fit=False, train_states=("SUCCEEDED",))
    _local_attempts(nsbi_env)
    with get_engine(nsbi_env).connect() as conn:
        spans = conn.execute(
            sa.select(Attempt.__table__.c.launched_at, Attempt.__table__.c.ended_at)
        ).all()
    wall = sum((e - s).total_seconds() for s, e in spans) / 3600
    (row,) = service.cost_summary(group_by=())
    assert row["wall_hours"] == pytest.approx(wall)
    assert row["cpu_hours"] == pytest.approx(1.5 * wall)  # every attempt had samples
    at = run_page("costs")
    shown = metrics(at)
    assert shown["Total cost (USD)"] == "0.00" and shown["GPU-hours"] == "0.0"
    assert shown["CPU-hours"] == f"{1.5 * wall:,.2f}"
    assert shown["Wall time"].endswith("min") and not shown["Wall time"].startswith("0 min")
    assert at.radio(key="cost-value").value == "cpu_hours"  # opens on what local runs used
    at.radio(key="cost-value").set_value("gpu_hours").run()
    assert not at.get("plotly_chart")  # no blank chart scaled -1 to 1: a note instead
    assert any("used no GPU" in i.value for i in at.info)


def test_usage_over_time_ticks_on_whole_days():
    from dashboard import figures

    usage = pd.DataFrame(
        {
            "time": pd.to_datetime(["2026-12-05", "2026-12-06"]),
            "cpu_hours": [1.0, 2.0],
            "campaign_name": ["a", "a"],
        }
    )
    fig = figures.usage_over_time(usage, value="cpu_hours", by="campaign_name")
    assert fig.layout.xaxis.tickformat == "%Y-%m-%d"
    assert fig.layout.xaxis.dtick == 86_400_000
    assert fig.layout.yaxis.title.text == "CPU-hours"


# --------------------------------------------------------------------------- offline


def test_no_page_icon_from_an_outside_font_host():
    """A ":material/...:" page icon makes the browser fetch the favicon from fonts.gstatic.com."""
    app = (REPO / "app.py").read_text()
    assert "page_icon=favicon()" in app and 'page_icon=":material' not in app
    from dashboard.icon import favicon

    assert favicon().size == (32, 32)


def test_result_status_shown_on_every_page_that_shows_a_result(nsbi_env):
    """A failing ensemble check is visible on Campaigns, Monitor and Fit (not only Diagnostics)."""
    from test_dash_result_status import settle, spoiled_diagnostics

    s = seed.seed(nsbi_env, train_states=("SUCCEEDED",), with_diagnostics=True)
    settle(nsbi_env, s.campaign_id, diag_by_task={"task1": spoiled_diagnostics()})
    at = run_page("campaigns")
    assert table_with(at, "result")["result"].iloc[0].startswith("needs review")
    for name in ("monitor", "fit"):
        at = run_page(name)
        badge = next(m.value for m in at.markdown if m.value.startswith("**Result:**"))
        assert "needs review: task1 closure χ²/ndf 21 > 3" in badge, name
    at = run_page("diagnostics")
    assert at.selectbox(key="diag-task").value == "task1"  # opens on the worst task
