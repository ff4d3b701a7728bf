"""Checks gate the result: check records from diagnostics and fit summaries, the result status,
its storage on the campaign row when the controller settles a campaign, the migration, and
`nsbi campaign status`."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from backend import result_status as rs
from backend.db.models import Campaign, Event, FitResult, Job

rc = rs.checks  # sbi_engine/result_checks.py, loaded without JAX


def good_diagnostics(**over) -> dict:
    """A diagnostics dict (the keys of `Diagnostics.to_dict()`) whose every check is GREEN."""
    d = {
        "members": 2,
        "normalization": 1.004,
        "normalization_error": 0.003,
        "member_normalization": [1.002, 1.006],
        "auc": 0.71,
        "member_auc": [0.70, 0.72],
        "saturated_fraction": 0.0,
        "held_out": True,
        "calibration": [
            {"member": None, "max_deviation": 1.1},
            {"member": 0, "max_deviation": 1.4},
        ],
        "closure": [
            {"observable": "m4l", "chi2": 20.0, "ndf": 19},
            {"observable": "phi", "chi2": 15.0, "ndf": 19},
        ],
        "losses": [
            {"member": 0, "train_loss": 0.60, "holdout_loss": 0.601},
            {"member": 1, "train_loss": 0.60, "holdout_loss": 0.603},
        ],
    }
    d.update(over)
    return d


def spoiled_diagnostics() -> dict:
    """What a badly trained S_vs_B looks like: closure chi2/ndf 21, normalisation 8 % off, miscalibrated."""
    return good_diagnostics(
        normalization=1.08,
        member_normalization=[1.07, 1.09],
        calibration=[{"member": None, "max_deviation": 9.5}],
        closure=[
            {"observable": "m4l", "chi2": 399.0, "ndf": 19},
            {"observable": "phi", "chi2": 19.0, "ndf": 19},
        ],
    )


# --------------------------------------------------------------------------- pure


def test_passing_diagnostics_give_checks_passed():
    records = rc.ensemble_checks("S_vs_B", good_diagnostics())
    assert {r.name for r in records} == set(rc.DIAGNOSTIC_THRESHOLDS)
    assert all(r.passed and r.task == "S_vs_B" for r in records)
    status = rc.result_status(records)
    assert (
        status.state == rc.CHECKS_PASSED == "checks passed"
        and status.passed
        and status.failed == ()
    )
    assert status.summary() == "checks passed (7 checks)" and status.worst_task is None


def test_spoiled_diagnostics_need_review_with_value_against_threshold():
    status = rc.result_status(
        rc.ensemble_checks("S_vs_B", spoiled_diagnostics())
        + rc.ensemble_checks("SBI_vs_B", good_diagnostics())
    )
    assert status.state == "needs review" and not status.passed
    # worst first, by value / threshold: closure 21/3 = 7, calibration 9.5/3 = 3.2, normalisation 0.08/0.05 = 1.6
    assert [(r.task, r.name) for r in status.failed] == [
        ("S_vs_B", "closure_chi2_ndf"),
        ("S_vs_B", "calibration"),
        ("S_vs_B", "normalisation"),
    ]
    closure = status.failed[0]
    assert (
        closure.value == pytest.approx(21.0) and closure.threshold == rc.CLOSURE_CHI2_NDF_MAX == 3.0
    )
    assert (
        status.failed[2].value == pytest.approx(0.08)
        and status.failed[2].threshold == rc.NORMALISATION_MAX
    )
    assert status.worst_task == "S_vs_B"
    assert status.summary() == (
        "needs review: S_vs_B closure χ²/ndf 21 > 3, S_vs_B calibration 9.5 > 3, "
        "S_vs_B normalisation 0.08 > 0.05"
    )
    assert len(status.checks) == 14  # 7 per task


def test_amber_warns_but_passes_and_auc_fails_below_one_half():
    amber = rc.ensemble_checks(
        "t", good_diagnostics(normalization=1.03)
    )  # 0.03: amber (0.02 < x <= 0.05)
    assert rc.result_status(amber).passed
    assert "amber" in next(r.message for r in amber if r.name == "normalisation")
    bad_auc = rc.result_status(rc.ensemble_checks("t", good_diagnostics(auc=0.42)))
    (failed,) = bad_auc.failed
    assert (
        failed.name == "auc"
        and failed.direction == "above"
        and failed.short() == "t AUC 0.42 < 0.5"
    )


def test_missing_values_are_skipped_but_failed_diagnostics_need_review():
    partial = rc.ensemble_checks("t", good_diagnostics(closure=[], losses=None, auc=None))
    assert {r.name for r in partial} == {
        "normalisation",
        "calibration",
        "ensemble_spread",
        "saturation",
    }
    (err,) = rc.ensemble_checks("t", {"error": "ValueError: boom"})
    assert err.name == "diagnostics" and not err.passed and "boom" in err.message
    status = rc.result_status([err])
    assert (
        status.state == "needs review"
        and status.summary() == "needs review: t diagnostics: diagnostics failed: ValueError: boom"
    )


def test_fit_checks_are_merged_and_a_failed_one_needs_review():
    summary = {
        "mu_hat": 1.0,
        "checks": [
            {
                "name": "converged",
                "task": None,
                "value": 1.0,
                "threshold": 1.0,
                "passed": True,
                "message": "ok",
            },
            {
                "name": "asimov_closure",
                "task": None,
                "value": 0.4,
                "threshold": 0.2,
                "passed": False,
                "message": "|mu-hat - mu_true| / sigma on Asimov data",
            },
            "not a record",
        ],
    }
    records = rc.fit_checks(summary) + rc.ensemble_checks("S_vs_B", good_diagnostics())
    status = rc.result_status(records)
    assert [r.name for r in status.failed] == ["asimov_closure"]
    assert status.failed[0].short() == "asimov_closure 0.4 > 0.2"
    assert rc.fit_checks({"mu_hat": 1.0}) == [] and rc.fit_checks(None) == []


def test_records_of_one_check_and_task_merge_into_the_worst():
    a = rc.ensemble_checks("S_vs_B", good_diagnostics())  # job 1 of the task
    b = rc.ensemble_checks("S_vs_B", good_diagnostics(normalization=1.2))  # job 2: 0.2 off
    status = rc.result_status(a + b)
    assert len(status.checks) == 7 and [r.value for r in status.failed] == [pytest.approx(0.2)]


def test_status_round_trips_through_json():
    status = rc.result_status(
        rc.ensemble_checks("S_vs_B", spoiled_diagnostics())
        + rc.ensemble_checks("x", {"error": "no"})
    )
    doc = json.loads(json.dumps(status.to_dict(), allow_nan=False))  # NaN values are stored as null
    assert (
        doc["state"] == "needs review"
        and doc["n_failed"] == 4
        and doc["worst_task"] in ("S_vs_B", "x")
    )
    back = rc.ResultStatus.from_dict(doc)
    assert back.state == status.state and [r.name for r in back.failed] == [
        r.name for r in status.failed
    ]
    assert back.summary() == status.summary()
    assert (
        rc.ResultStatus.from_dict(None) is None
        and rc.ResultStatus.from_dict({"state": "bogus"}) is None
    )
    assert math.isnan(rc.CheckRecord.from_dict({"name": "n", "value": None}).value)


def test_the_engine_module_is_the_same_file_as_the_one_the_backend_loads():
    from sbi_engine import result_checks

    assert result_checks.DIAGNOSTIC_THRESHOLDS == rc.DIAGNOSTIC_THRESHOLDS
    d = spoiled_diagnostics()
    assert (
        result_checks.result_status(result_checks.ensemble_checks("t", d)).to_dict()
        == rc.result_status(rc.ensemble_checks("t", d)).to_dict()
    )


# --------------------------------------------------------------------------- database


def _campaign(
    engine, jobs: list[tuple[str, str | None, str, dict | None]], status: str = "ACTIVE"
) -> int:
    """A campaign with jobs (name, task, job status, recorded summary or None), written directly."""
    now = datetime.now(UTC)
    with Session(engine) as s:
        c = Campaign(
            name="checks", config={}, config_hash="h", status=status, launch_requested_at=now
        )
        s.add(c)
        s.flush()
        for name, task, st, payload in jobs:
            kind = name.split("-")[0]
            j = Job(
                campaign_id=c.id, name=name, kind=kind, task=task, status=st, desired_state="RUN"
            )
            s.add(j)
            s.flush()
            if payload is not None:
                s.add(FitResult(job_id=j.id, campaign_id=c.id, kind=kind, payload=payload))
        s.commit()
        return c.id


def _settle(engine, tmp_path) -> None:
    from backend.controller import Controller, TickReport

    (tmp_path / "store").mkdir(exist_ok=True)
    Controller(engine, (tmp_path / "store").as_uri(), {})._settle(TickReport())


def test_settling_a_campaign_stores_needs_review(engine, tmp_path):
    cid = _campaign(
        engine,
        [
            (
                "train-0",
                "S_vs_B",
                "SUCCEEDED",
                {"task": "S_vs_B", "diagnostics": spoiled_diagnostics()},
            ),
            (
                "train-1",
                "SBI_vs_B",
                "SUCCEEDED",
                {"task": "SBI_vs_B", "diagnostics": good_diagnostics()},
            ),
            (
                "fit",
                None,
                "SUCCEEDED",
                {
                    "mu_hat": 1.0,
                    "converged": True,
                    "checks": [
                        {
                            "name": "converged",
                            "task": None,
                            "value": 1.0,
                            "threshold": 1.0,
                            "passed": True,
                            "message": "",
                        }
                    ],
                },
            ),
        ],
    )
    assert (
        rs.campaign_result_status(cid, engine=engine, compute_missing=False) is None
    )  # not settled yet
    assert rs.campaign_result_status(cid, engine=engine).state == "needs review"  # so far, computed
    # lists: only the stored status by default; the failed check so far on request (the
    # Campaigns page and `nsbi campaign list` ask, so an ACTIVE campaign is not "checks pending")
    assert rs.result_statuses(engine=engine)[cid] is None
    so_far = rs.result_statuses(engine=engine, failing_so_far=True)[cid]
    assert so_far.state == "needs review" and rs.badge(so_far, "ACTIVE").startswith(
        "needs review: S_vs_B closure"
    )
    _settle(engine, tmp_path)
    with Session(engine) as s:
        camp = s.get(Campaign, cid)
        assert camp.status == "SUCCEEDED"  # every job ran: the campaign status is unchanged ...
        doc = camp.result_status  # ... and the result status says the result needs review
        event = s.execute(
            sa.select(Event).where(Event.campaign_id == cid, Event.to_state == "NEEDS_REVIEW")
        ).scalar_one()
    assert doc["state"] == "needs review" and doc["n_checks"] == 15
    assert [(f["task"], f["name"]) for f in doc["failed"]] == [
        ("S_vs_B", "closure_chi2_ndf"),
        ("S_vs_B", "calibration"),
        ("S_vs_B", "normalisation"),
    ]
    assert doc["failed"][0]["value"] == pytest.approx(21.0) and doc["failed"][0]["threshold"] == 3.0
    assert event.reason.startswith("needs review: S_vs_B closure")
    stored = rs.campaign_result_status(cid, engine=engine, compute_missing=False)
    assert stored.state == "needs review" and stored.worst_task == "S_vs_B"
    assert rs.result_statuses(engine=engine)[cid].summary() == stored.summary()


def test_settling_a_good_campaign_stores_checks_passed(engine, tmp_path):
    cid = _campaign(
        engine,
        [
            (
                "train-0",
                "S_vs_B",
                "SUCCEEDED",
                {"task": "S_vs_B", "diagnostics": good_diagnostics()},
            ),
            (
                "train-1",
                "S_vs_B",
                "SUCCEEDED",
                {"task": "S_vs_B"},
            ),  # no diagnostics key (a test job): no checks
            ("fit", None, "SUCCEEDED", {"mu_hat": 1.0}),  # no "checks" key: nothing to merge
        ],
    )
    _settle(engine, tmp_path)
    status = rs.campaign_result_status(cid, engine=engine, compute_missing=False)
    assert status.state == "checks passed" and len(status.checks) == 7
    assert rs.short_label(status) == "checks passed"
    assert rs.badge_markdown(status).startswith(":green-badge[checks passed]")


def test_failed_jobs_do_not_contribute_checks_and_unsettled_campaigns_are_pending(engine, tmp_path):
    cid = _campaign(
        engine,
        [
            (
                "train-0",
                "S_vs_B",
                "RUNNING",
                {"task": "S_vs_B", "diagnostics": spoiled_diagnostics()},
            ),
        ],
    )
    _settle(engine, tmp_path)
    assert rs.result_statuses(engine=engine)[cid] is None
    # a RUNNING job's spoiled diagnostics are not a result yet: still pending in lists
    assert rs.result_statuses(engine=engine, failing_so_far=True)[cid] is None
    assert (
        rs.short_label(None, "ACTIVE") == "pending" and rs.badge(None, "ACTIVE") == "checks pending"
    )
    assert rs.badge_markdown(None, "SUCCEEDED") == ""
    nothing = rc.result_status([])  # no results with checks yet: not "checks passed" on the badge
    assert rs.badge_markdown(nothing, "ACTIVE") == ":gray-badge[checks pending]"
    assert rs.badge_markdown(nothing, "SUCCEEDED") == ":gray-badge[no checks recorded]"
    so_far = rc.result_status(rc.ensemble_checks("S_vs_B", spoiled_diagnostics()))
    assert rs.badge_markdown(so_far, "ACTIVE").endswith("] (results so far)")


def test_migration_adds_the_column_and_keeps_existing_rows(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    from backend.db import create_engine
    from backend.db.migrate import head_revision, upgrade

    e = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    assert upgrade(e, "0004") == "0004"
    assert "result_status" not in {c["name"] for c in sa.inspect(e).get_columns("campaign")}
    now = datetime.now(UTC).replace(tzinfo=None)
    with e.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO campaign (name, description, config, config_hash, code_version, owner, status, launcher, "
                "max_concurrency, retry_limit, estimate_gpu_hours, estimate_cost_usd, created_at, updated_at) VALUES "
                "('old', 'd', '{\"a\": 1}', 'h', 'v', 'me', 'SUCCEEDED', 'local', 1, 2, 0.5, 1.5, :t, :t)"
            ),
            {"t": now},
        )
    assert upgrade(e) == head_revision() >= "0005"
    with e.connect() as conn:
        row = conn.execute(
            sa.text("SELECT name, config, status, estimate_cost_usd, result_status FROM campaign")
        ).one()
        assert (
            compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata
            )
            == []
        )
    assert (
        row.name,
        json.loads(row.config),
        row.status,
        row.estimate_cost_usd,
        row.result_status,
    ) == ("old", {"a": 1}, "SUCCEEDED", 1.5, None)
    # a campaign settled before the column existed: its status is computed from its results on demand
    assert rs.campaign_result_status(1, engine=e).state == "checks passed"
    assert rs.campaign_result_status(1, engine=e, compute_missing=False) is None
    from alembic import command

    from backend.db.migrate import alembic_config

    cfg = alembic_config(e)
    with e.begin() as conn:  # and back down
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0004")
    assert "result_status" not in {c["name"] for c in sa.inspect(e).get_columns("campaign")}
    e.dispose()


def test_campaign_status_command_shows_the_result_status(sqlite_file_engine, tmp_path, capsys):
    from backend.cli import main

    url = str(sqlite_file_engine.url)
    cid = _campaign(
        sqlite_file_engine,
        [
            (
                "train-0",
                "S_vs_B",
                "SUCCEEDED",
                {"task": "S_vs_B", "diagnostics": spoiled_diagnostics()},
            )
        ],
    )
    good = _campaign(
        sqlite_file_engine,
        [("train-0", "S_vs_B", "SUCCEEDED", {"task": "S_vs_B", "diagnostics": good_diagnostics()})],
        status="CREATED",
    )
    _settle(sqlite_file_engine, tmp_path)
    assert main(["campaign", "--database-url", url, "status", str(cid)]) == 0
    out = capsys.readouterr().out
    assert "SUCCEEDED" in out and "result: needs review: S_vs_B closure χ²/ndf 21 > 3" in out
    assert "closure_chi2_ndf" in out and "<= 3" in out and "normalisation" in out
    assert main(["campaign", "--database-url", url, "status"]) == 0
    out = capsys.readouterr().out
    assert "RESULT" in out and "needs review (3)" in out and "pending" in out
    assert main(["campaign", "--database-url", url, "status", str(cid), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["result_status"]["state"] == "needs review"
    assert main(["campaign", "--database-url", url, "status", str(good)]) == 0
    assert (
        "result: checks passed (7 checks) (so far: the campaign is not final)"
        in capsys.readouterr().out
    )


def test_recorded_null_errors_and_corrections_set_the_limits():
    """The AUC fails 3 null errors below 0.5, calibration reads the global significance and
    saturation the overconfident share where the diagnostics record them; older records are
    read with the old, stricter rules."""
    tiny = good_diagnostics(auc=0.497, auc_null_error=0.002)  # 1.5 null sd below 0.5
    (auc,) = [r for r in rc.ensemble_checks("t", tiny) if r.name == "auc"]
    assert auc.passed and "amber" in auc.message and auc.threshold == pytest.approx(0.494)
    broken = good_diagnostics(auc=0.49, auc_null_error=0.002)  # 5 sd below
    (auc,) = [r for r in rc.ensemble_checks("t", broken) if r.name == "auc"]
    assert not auc.passed
    assert not [
        r
        for r in rc.ensemble_checks("t", good_diagnostics(auc=0.497))
        if r.passed and r.name == "auc"
    ]

    curve = {"member": None, "max_deviation": 3.2, "tested_bins": 20, "global_deviation": 2.3}
    values = rc.diagnostic_values(good_diagnostics(calibration=[curve]))
    assert values["calibration"] == 2.3
    old = {"member": None, "max_deviation": 3.2}
    assert rc.diagnostic_values(good_diagnostics(calibration=[old]))["calibration"] == 3.2

    steep = good_diagnostics(saturated_fraction=0.033, overconfident_fraction=0.0)
    assert all(r.passed for r in rc.ensemble_checks("t", steep))
    assert not all(
        r.passed for r in rc.ensemble_checks("t", good_diagnostics(saturated_fraction=0.033))
    )


def test_a_failed_ensemble_check_says_what_to_try():
    """Only RED records carry the remedy, naming training options that exist."""
    from sbi_engine.ratio.config import TrainConfig

    recs = {r.name: r for r in rc.ensemble_checks("S_vs_B", spoiled_diagnostics())}
    assert (
        "red; the ratio misses the numerator somewhere; try more"
        in recs["closure_chi2_ndf"].message
    )
    assert "hidden_layers" in recs["calibration"].message
    assert recs["auc"].message.endswith(": green")  # passed: no advice
    options = set(TrainConfig.__dataclass_fields__)
    for text in rc.REMEDIES.values():
        for word in ("max_steps", "min_epochs", "hidden_layers", "width", "weight_decay"):
            if word in text:
                assert word in options
