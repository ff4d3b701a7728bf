"""The result status on the dashboard: one definition of the limits (the traffic lights and the
result checks agree), and the badge "checks passed" / "needs review: <failed checks>" on every
page that shows a result (Campaigns, Monitor, Diagnostics -- which opens on the worst task -- and Fit)."""

from __future__ import annotations

import dash_testkit as seed
import pytest
import sqlalchemy as sa
from dash_testkit import run_page
from sqlmodel import Session


def good_diagnostics() -> dict:
    """engine_diagnostics() with every check GREEN."""
    d = seed.engine_diagnostics()
    d["normalization"] = 1.004
    d["member_normalization"] = [1.002, 1.006]
    d["calibration"][0]["max_deviation"] = 1.2
    d["closure"][0]["chi2"] = 1.0
    d["losses"] = [
        {"member": 0, "train_loss": 0.60, "holdout_loss": 0.601, "best_val_loss": 0.6},
        {"member": 1, "train_loss": 0.60, "holdout_loss": 0.603, "best_val_loss": 0.6},
    ]
    d["saturated_fraction"] = 0.0
    return d


def spoiled_diagnostics() -> dict:
    d = seed.engine_diagnostics()
    d["closure"][0]["chi2"] = 21.0  # chi2/ndf 21 over 1 ndf
    d["normalization"] = 1.08
    return d


def settle(
    url: str,
    cid: int,
    *,
    diag_by_task: dict[str, dict] | None = None,
    fit_checks: list | None = None,
) -> None:
    """Give the seeded campaign's train jobs these diagnostics (per task), add checks to its fit
    result, mark it SUCCEEDED and record its result status as the controller would."""
    from backend import result_status
    from backend.db import get_engine
    from backend.db.models import Campaign, FitResult, Job

    engine = get_engine(url)
    with Session(engine) as s:
        rows = s.execute(
            sa.select(FitResult, Job.task, Job.kind)
            .join(Job, Job.id == FitResult.job_id)
            .where(FitResult.campaign_id == cid)
        ).all()
        for fr, task, kind in rows:
            if kind == "train" and diag_by_task and task in diag_by_task:
                fr.payload = {**fr.payload, "diagnostics": diag_by_task[task]}
            if kind == "fit" and fit_checks is not None:
                fr.payload = {**fr.payload, "checks": fit_checks}
            s.add(fr)
        camp = s.get(Campaign, cid)
        camp.status = "SUCCEEDED"
        s.add(camp)
        s.flush()
        result_status.record_result_status(s, [cid])
        s.commit()


def test_one_definition_of_the_limits_and_the_values():
    """The Diagnostics page's lights and the result checks use the same limits and numbers:
    a check fails exactly where its light is RED."""
    from backend.result_status import checks as rc
    from dashboard import queries

    for name, (direction, green, amber, _) in queries.DIAGNOSTIC_THRESHOLDS.items():
        assert rc.DIAGNOSTIC_THRESHOLDS[name][:3] == (direction, green, amber), name
    for diag in (seed.engine_diagnostics(), good_diagnostics(), spoiled_diagnostics()):
        view = queries.diagnostics_view("t", diag)
        records = {r.name: r for r in rc.ensemble_checks("t", diag)}
        for row in view.checks.itertuples():
            assert records[row.check].value == pytest.approx(row.value), row.check
            assert records[row.check].passed == (row.status != "red"), row.check


def test_campaigns_list_shows_needs_review_and_checks_passed(nsbi_env):
    bad = seed.seed(nsbi_env, train_states=("SUCCEEDED",), with_diagnostics=True, name="bad")
    good = seed.seed(
        nsbi_env, train_states=("SUCCEEDED",), with_diagnostics=True, name="good", seed_value=1
    )
    running = seed.seed(
        nsbi_env, train_states=("RUNNING",), name="running", with_fit=False, seed_value=2
    )
    # still ACTIVE, but a finished ensemble already failed a check (the seeded RED light)
    failing = seed.seed(
        nsbi_env,
        train_states=("SUCCEEDED", "RUNNING"),
        with_diagnostics=True,
        name="failing-so-far",
        with_fit=False,
        seed_value=3,
    )
    settle(nsbi_env, bad.campaign_id, diag_by_task={"task1": spoiled_diagnostics()})
    settle(
        nsbi_env,
        good.campaign_id,
        diag_by_task={t: good_diagnostics() for t in ("task0", "task1", "task2")},
    )
    at = run_page("campaigns")
    table = at.dataframe[0].value.set_index("name")
    assert table.loc["bad", "status"] == "SUCCEEDED"
    assert table.loc["bad", "result"].startswith("needs review: task1 closure χ²/ndf 21 > 3")
    assert (
        "overtraining" in table.loc["bad", "result"]
    )  # the seeded diagnostics' RED light, every task
    assert table.loc["good", "result"] == "checks passed (21 checks)"
    assert table.loc["running", "result"] == "checks pending"
    assert table.loc["failing-so-far", "status"] == "ACTIVE"
    assert table.loc["failing-so-far", "result"].startswith("needs review:"), table.loc[
        "failing-so-far", "result"
    ]
    assert failing.campaign_id not in (bad.campaign_id, running.campaign_id)
    assert running.campaign_id not in (bad.campaign_id, good.campaign_id)


def test_monitor_and_fit_show_the_badge_with_the_fit_checks(nsbi_env):
    s = seed.seed(nsbi_env, train_states=("SUCCEEDED",), with_diagnostics=True)
    settle(
        nsbi_env,
        s.campaign_id,
        diag_by_task={t: good_diagnostics() for t in ("task0", "task1", "task2")},
        fit_checks=[
            {
                "name": "converged",
                "task": None,
                "value": 1.0,
                "threshold": 1.0,
                "passed": True,
                "message": "",
            },
            {
                "name": "asimov_closure",
                "task": None,
                "value": 0.5,
                "threshold": 0.2,
                "passed": False,
                "message": "|mu-hat - mu_true| / sigma",
            },
        ],
    )
    for name in ("monitor", "fit"):
        at = run_page(name)
        badges = [m.value for m in at.markdown if m.value.startswith("**Result:**")]
        assert badges == ["**Result:** :red-badge[needs review: asimov_closure 0.5 > 0.2]"], name
    at = run_page("fit")  # the fit converged, and the page says both
    assert {m.label: m.value for m in at.metric}["Minimiser"] == "converged"


def test_diagnostics_opens_on_the_worst_task_and_shows_checks_passed(nsbi_env):
    s = seed.seed(nsbi_env, train_states=("SUCCEEDED",), with_diagnostics=True)
    settle(
        nsbi_env,
        s.campaign_id,
        diag_by_task={
            "task0": good_diagnostics(),
            "task1": good_diagnostics(),
            "task2": spoiled_diagnostics(),
        },
    )
    at = run_page("diagnostics")
    assert at.selectbox(key="diag-task").options == ["task0", "task1", "task2"]
    assert at.selectbox(key="diag-task").value == "task2"  # the worst task first
    badge = next(m.value for m in at.markdown if m.value.startswith("**Result:**"))
    assert badge.startswith("**Result:** :red-badge[needs review: task2 closure χ²/ndf 21 > 3")
    lights = " ".join(m.value for m in at.markdown)
    assert ":red-badge[RED]  \n**closure χ²/ndf**  \n21" in lights  # the same check, RED below


def test_every_page_says_checks_passed_for_a_good_result(nsbi_env):
    s = seed.seed(nsbi_env, train_states=("SUCCEEDED",), with_diagnostics=True)
    settle(
        nsbi_env,
        s.campaign_id,
        diag_by_task={t: good_diagnostics() for t in ("task0", "task1", "task2")},
    )
    for name in ("monitor", "diagnostics", "fit"):
        at = run_page(name)
        badges = [m.value for m in at.markdown if m.value.startswith("**Result:**")]
        assert badges == ["**Result:** :green-badge[checks passed] 21 checks, none failed"], name
    at = run_page("diagnostics")
    assert at.selectbox(key="diag-task").value == "task0"


def test_diagnostics_shows_the_fits_noise_to_signal_of_the_task(nsbi_env):
    s = seed.seed(nsbi_env, train_states=("SUCCEEDED",), with_diagnostics=True)
    noisy = {
        "name": "noise_to_signal",
        "task": "task1",
        "value": 0.89,
        "threshold": 0.2,
        "passed": False,
        "message": "log-ratio error 0.0226 against a log-ratio spread 0.0252 on the data (noise/signal 0.89, limit 0.2)",
    }
    calm = dict(
        noisy, task="task0", value=0.05, passed=True, message="noise/signal 0.05, limit 0.2"
    )
    settle(
        nsbi_env,
        s.campaign_id,
        diag_by_task={t: good_diagnostics() for t in ("task0", "task1", "task2")},
        fit_checks=[noisy, calm],
    )
    at = run_page("diagnostics")
    assert (
        at.selectbox(key="diag-task").value == "task1"
    )  # the failed fit check makes it the worst task
    assert [e.value for e in at.error] == ["In the fit: " + noisy["message"]]
    at.selectbox(key="diag-task").set_value("task0").run()
    assert not at.error and "In the fit: noise/signal 0.05, limit 0.2" in [
        c.value for c in at.caption
    ]


def test_a_red_calibration_the_fit_does_not_depend_on_is_explained_not_failed(nsbi_env):
    """task1's reliability curve is 3.4 sigma off (RED), and the fit redone with task1
    recalibrated moved mu by 0.02 +- 0.01 sigma: the result passes, and the Diagnostics page
    says why under the RED light instead of a failure box."""
    s = seed.seed(nsbi_env, train_states=("SUCCEEDED",), with_diagnostics=True)
    off = good_diagnostics()
    off["calibration"][0]["max_deviation"] = 3.4  # no global_deviation: read as 3.4 sigma
    effect = {
        "name": "calibration_effect",
        "task": "task1",
        "value": 0.02,
        "error": 0.01,
        "threshold": 0.1,
        "passed": True,
        "message": "refit with the ratio recalibrated moves mu +0.020 ± 0.010 sigma",
    }
    settle(
        nsbi_env,
        s.campaign_id,
        diag_by_task={"task0": good_diagnostics(), "task1": off, "task2": good_diagnostics()},
        fit_checks=[effect],
    )
    at = run_page("diagnostics")
    badge = next(m.value for m in at.markdown if m.value.startswith("**Result:**"))
    assert badge.startswith("**Result:** :green-badge[checks passed]"), badge
    at.selectbox(key="diag-task").set_value("task1").run()
    assert ":red-badge[RED]  \n**calibration**" in " ".join(m.value for m in at.markdown)
    assert not at.error
    (info,) = [i.value for i in at.info]
    assert info.startswith("Calibration is red here, and the result does not depend on it")
    assert "0.02 ± 0.01 sigma <= 0.1" in info
    assert "In the fit: " + effect["message"] in [c.value for c in at.caption]
