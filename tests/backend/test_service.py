"""The service API on SQLite and PostgreSQL: create, intents, listings, curves, costs, budget."""

from __future__ import annotations

import copy
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa
from sqlmodel import SQLModel, select

from backend import jobs_repo, service
from backend.campaigns import DEMO_CONFIG, CampaignConfigError, demo_config, expand
from backend.db import Attempt, Job, session_scope
from backend.states import CampaignStatus, DesiredState, JobStatus

T0 = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)


def _row_counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in SQLModel.metadata.sorted_tables
        }


@pytest.mark.parametrize(
    "mutate, match",
    [
        (
            lambda d: d["backend"].update(launcher="kubernetes"),
            "backend.launcher: 'kubernetes' is not allowed; allowed values: 'local', 'gce'",
        ),
        (
            lambda d: d["training"].update(members_per_job=0),
            "training.members_per_job: expected an integer >= 1, got 0",
        ),
        (lambda d: d.pop("processes"), "missing required key 'processes'"),
    ],
)
def test_bad_config_changes_nothing(engine, mutate, match):
    service.create_campaign(demo_config(), engine=engine)
    before = _row_counts(engine)
    raw = copy.deepcopy(DEMO_CONFIG)
    mutate(raw)
    with pytest.raises(CampaignConfigError) as info:
        service.create_campaign(raw, engine=engine)
    assert match in str(info.value)
    assert _row_counts(engine) == before


def test_create_stores_jobs_and_dag(engine):
    cid = service.create_campaign(demo_config(), owner="alice", engine=engine)
    plans = expand(demo_config())
    rows, total = service.list_jobs(campaign_id=cid, limit=1000, engine=engine)
    assert total == len(plans) == len(rows)
    by_name = {r.name: r for r in rows}
    assert all(r.status == JobStatus.PENDING and r.desired_state == DesiredState.HOLD for r in rows)
    for p in plans:
        assert sorted(by_name[d].id for d in p.depends_on) == sorted(by_name[p.name].depends_on)
    (summary,) = service.list_campaigns(engine=engine)
    assert (summary.id, summary.status, summary.n_jobs, summary.progress) == (
        cid,
        "CREATED",
        len(plans),
        0.0,
    )
    assert summary.counts["PENDING"] == len(plans)
    detail = service.get_campaign(cid, engine=engine)
    assert detail.config["name"] == "demo" and len(detail.config_hash) == 64
    assert detail.counts_by_kind["train"] == {"PENDING": 8}
    # nothing is launchable before a launch is requested
    with session_scope(engine) as s:
        assert jobs_repo.ready_jobs(s) == []


def test_launch_then_dependencies_gate_readiness(engine):
    cid = service.create_campaign(demo_config(), engine=engine)
    assert service.request_launch(cid, engine=engine) == 13
    with session_scope(engine) as s:
        ready = jobs_repo.ready_jobs(s)
        assert {j.kind for j in ready} == {"train"} and len(ready) == 8
        for j in ready:  # run every training to success
            a = jobs_repo.begin_attempt(s, j, launcher="local", price_per_hour=0.0)
            jobs_repo.mark_launched(s, j, a, f"pid-{j.id}")
            jobs_repo.end_attempt(s, j, a, JobStatus.SUCCEEDED, exit_code=0)
    with session_scope(engine) as s:
        assert [j.name for j in jobs_repo.ready_jobs(s)] == ["fit"]
    assert service.get_campaign(cid, engine=engine).summary.progress == pytest.approx(8 / 13)


def test_cancel_and_retry_intents(engine):
    cid = service.create_campaign(demo_config(), engine=engine)
    service.request_launch(cid, engine=engine)
    with session_scope(engine) as s:
        j1, j2 = jobs_repo.ready_jobs(s)[:2]
        for j, final in ((j1, JobStatus.FAILED), (j2, None)):
            a = jobs_repo.begin_attempt(s, j, launcher="local", price_per_hour=0.0)
            jobs_repo.mark_launched(s, j, a, "i")
            if final:
                jobs_repo.end_attempt(s, j, a, final, exit_code=1, failure_reason="boom")
        ids = (j1.id, j2.id)
    assert service.request_retry(job_ids=[ids[1]], engine=engine) == 0  # running, not failed
    assert service.request_retry(job_ids=[ids[0]], engine=engine) == 1
    with session_scope(engine) as s:
        out = jobs_repo.apply_simple_intents(s)
    assert out["retried"] == [ids[0]]
    assert service.get_job(ids[0], engine=engine).status == JobStatus.PENDING
    n = service.request_cancel(cid, engine=engine)
    assert n == 13
    with session_scope(engine) as s:
        out = jobs_repo.apply_simple_intents(s)
    assert out["to_stop"] == [ids[1]] and len(out["cancelled"]) == 12
    with session_scope(engine) as s:
        j = s.get(Job, ids[1])
        a = s.exec(select(Attempt).where(Attempt.job_id == j.id)).one()
        jobs_repo.end_attempt(s, j, a, JobStatus.CANCELLED, reason="stopped on request")
    with session_scope(engine) as s:
        assert jobs_repo.settle_campaigns(s) == {cid: CampaignStatus.CANCELLED}
    events = service.job_events(ids[0], engine=engine)
    assert [e["to_state"] for e in events] == [
        "LAUNCHING",
        "RUNNING",
        "FAILED",
        "RETRY_REQUESTED",
        "PENDING",
        "CANCEL_REQUESTED",
        "CANCELLED",
    ]
    with pytest.raises(service.IntentError, match="CANCELLED"):
        service.request_launch(cid, engine=engine)
    with pytest.raises(service.NotFound):
        service.request_launch(999, engine=engine)


def test_failed_dependency_cancels_dependants_after_retries(sqlite_engine):
    e = sqlite_engine
    raw = copy.deepcopy(DEMO_CONFIG)
    raw["backend"]["retry_limit"] = 0
    cid = service.create_campaign(raw, engine=e)
    service.request_launch(cid, engine=e)
    with session_scope(e) as s:
        j = jobs_repo.ready_jobs(s)[0]
        a = jobs_repo.begin_attempt(s, j, launcher="local", price_per_hour=0.0)
        jobs_repo.end_attempt(s, j, a, JobStatus.FAILED, failure_reason="launch error")
        assert jobs_repo.retryable_failed_jobs(s) == []
        out = jobs_repo.apply_simple_intents(s)
    # the fit waits on the failed training, and the impacts/scans on the fit
    cancelled = {
        r.name for r in service.list_jobs(cid, states=["CANCELLED"], limit=100, engine=e)[0]
    }
    assert cancelled == {"fit"} and len(out["cancelled"]) == 1
    with session_scope(e) as s:
        jobs_repo.apply_simple_intents(s)
    cancelled = {
        r.kind for r in service.list_jobs(cid, states=["CANCELLED"], limit=100, engine=e)[0]
    }
    assert cancelled == {"fit", "impacts", "scan"}


def test_list_jobs_paging_and_filters(engine):
    c1 = service.create_campaign(demo_config(), engine=engine)
    c2 = service.create_campaign(demo_config(), engine=engine)
    all_rows, total = service.list_jobs(limit=1000, engine=engine)
    assert total == 26
    page, t = service.list_jobs(offset=10, limit=7, engine=engine)
    assert t == 26 and [r.id for r in page] == [r.id for r in all_rows][10:17]
    rows, t = service.list_jobs(campaign_id=c2, kind="impacts", engine=engine)
    assert t == 2 and all(r.campaign_id == c2 and r.kind == "impacts" for r in rows)
    rows, t = service.list_jobs(campaign_id=c1, states=["RUNNING", "FAILED"], engine=engine)
    assert (rows, t) == ([], 0)


def _seed_metrics(engine, steps_by_member: dict[int, int]) -> int:
    cid = service.create_campaign(demo_config(), engine=engine)
    with session_scope(engine) as s:
        job = s.exec(select(Job).where(Job.campaign_id == cid).order_by(Job.id)).first()
        for local, n in steps_by_member.items():
            recs = [
                {
                    "member": local,
                    "step": k,
                    "epoch": k // 10,
                    "name": "val_loss",
                    "value": 1.0 / (k + 1),
                }
                for k in range(n)
            ]
            assert jobs_repo.ingest_metrics(s, job, 1, recs) == n
        return job.id


def test_metric_ingest_is_idempotent_and_maps_members(engine):
    job_id = _seed_metrics(engine, {0: 6000, 1: 30})  # 6000 takes the COPY path on PostgreSQL
    with session_scope(engine) as s:
        job = s.get(Job, job_id)
        assert job.members == [0, 1]
        again = [{"member": 1, "step": k, "name": "val_loss", "value": 9.0} for k in range(40)]
        assert jobs_repo.ingest_metrics(s, job, 1, again) == 10  # steps 30..39 are new
        assert jobs_repo.ingest_metrics(s, job, 2, again[:5]) == 5  # another attempt is another key
    rows = service.metric_series(job_id=job_id, max_points=10**6, engine=engine)
    assert len(rows) == 6000 + 40 + 5
    first = [r for r in rows if r["member"] == 1 and r["attempt_no"] == 1]
    assert [r["value"] for r in first[:30]] == [1.0 / (k + 1) for k in range(30)]  # originals kept


def _expected_steps(steps: np.ndarray, m: int) -> list[int]:
    """Independent reference of the documented rule: all steps if they fit; else those
    divisible by 2**k for the smallest k leaving at most m of them, plus the last step; if
    that leaves fewer than m // 4, every ceil(n / m)-th step of the evenly spaced grid from
    the first step (spacing: smallest gap among the first steps), plus the last."""
    steps = np.unique(steps)
    if len(steps) <= m:
        return steps.tolist()
    k = next(k for k in range(17) if np.count_nonzero(steps % 2**k == 0) <= m)
    keep = steps[steps % 2**k == 0]
    if len(keep) < m // 4:
        spacing = int(np.diff(steps[:8]).min())
        n_est = (steps[-1] - steps[0]) // spacing + 1
        keep = steps[(steps - steps[0]) % (spacing * math.ceil(n_est / m)) == 0]
    return sorted(set(keep.tolist()) | {int(steps[-1])})


def _seed_steps(engine, steps_by_member: dict[int, list[int]]) -> int:
    cid = service.create_campaign(demo_config(), engine=engine)
    with session_scope(engine) as s:
        job = s.exec(select(Job).where(Job.campaign_id == cid).order_by(Job.id)).first()
        for member, steps in steps_by_member.items():
            recs = [
                {"member": member, "step": int(k), "name": "val_loss", "value": 1.0 / (k + 1)}
                for k in steps
            ]
            assert jobs_repo.ingest_metrics(s, job, 1, recs) == len(steps)
        return job.id


@pytest.mark.parametrize(
    "steps, m",
    [
        (np.arange(6000), 100),  # contiguous: every 64th step
        (np.arange(1000), 7),
        (np.arange(50), 50),
        (np.arange(51), 50),
        (np.arange(3, 30_000, 10), 500),  # offset, spacing 10: multiples of 2**k*... among them
        (
            np.concatenate([np.arange(100), np.arange(100, 200_000, 37)]),
            300,
        ),  # dense start, sparse tail
    ],
)
def test_metric_downsampling_matches_reference(sqlite_engine, steps, m):
    job_id = _seed_steps(sqlite_engine, {0: steps.tolist(), 1: [0, 1, 2]})
    rows = service.metric_series(
        job_id=job_id, names=["val_loss"], max_points=m, engine=sqlite_engine
    )
    got0 = [r["step"] for r in rows if r["member"] == 0]
    assert got0 == _expected_steps(steps, m) and len(got0) <= m + 1
    assert [r["step"] for r in rows if r["member"] == 1] == [0, 1, 2]
    assert service.metric_names(job_id=job_id, engine=sqlite_engine) == ["val_loss"]


def test_metric_downsampling_on_postgresql(pg_engine):
    steps = np.arange(0, 60_000, 3)
    job_id = _seed_steps(pg_engine, {0: steps.tolist()})
    rows = service.metric_series(job_id=job_id, max_points=100, engine=pg_engine)
    assert [r["step"] for r in rows] == _expected_steps(steps, 100)


def test_campaign_curves_thin_every_series(sqlite_engine):
    job_id = _seed_steps(sqlite_engine, {0: list(range(4096)), 1: list(range(10))})
    rows = service.metric_series(campaign_id=1, max_points=256, engine=sqlite_engine)
    got0 = [r["step"] for r in rows if r["job_id"] == job_id and r["member"] == 0]
    assert got0 == list(range(0, 4096, 16)) + [4095]
    assert [r["step"] for r in rows if r["member"] == 1] == list(range(10))


def test_resource_series(engine):
    cid = service.create_campaign(demo_config(), engine=engine)
    with session_scope(engine) as s:
        job = s.exec(select(Job).where(Job.campaign_id == cid)).first()
        samples = [
            {
                "time": T0 + timedelta(seconds=5 * i),
                "cpu_percent": 50.0 + i,
                "rss_bytes": 10**9,
                "gpus": [
                    {"index": 0, "util_percent": 80.0, "memory_bytes": 2**30, "power_w": 100.0},
                    {"index": 1, "util_percent": 60.0, "memory_bytes": 2**30, "power_w": 50.0},
                ],
            }
            for i in range(10)
        ]
        assert jobs_repo.ingest_resources(s, job.id, 1, samples) == 10
        assert jobs_repo.ingest_resources(s, job.id, 1, samples) == 0
    rows = service.resource_series(job_id=job.id, max_points=5, engine=engine)
    assert [r["time"] for r in rows] == [T0 + timedelta(seconds=5 * i) for i in (0, 2, 4, 6, 8, 9)]
    assert (
        rows[0]["gpu_util_mean"] == 70.0
        and rows[0]["gpu_power_w"] == 150.0
        and rows[0]["gpu_memory_bytes"] == 2**31
    )


def _attempt(s, job, no, *, machine, spot, gpus, price, start, hours, status=JobStatus.SUCCEEDED):
    a = Attempt(
        job_id=job.id,
        attempt_no=no,
        launcher="gce",
        machine_type=machine,
        spot=spot,
        gpu_count=gpus,
        gpu_type="nvidia-tesla-t4" if gpus else None,
        price_per_hour=price,
        created_at=start,
        launched_at=start,
        status=status,
    )
    s.add(a)
    s.flush()
    if hours is not None:
        a.ended_at = start + timedelta(hours=hours)
        a.cost_usd = price * hours
        a.gpu_hours = gpus * hours
    return a


def test_cost_summary_and_recoveries(engine):
    cid = service.create_campaign(demo_config(), engine=engine)
    now = datetime.now(UTC)
    with session_scope(engine) as s:
        j1, j2 = s.exec(select(Job).where(Job.campaign_id == cid).order_by(Job.id)).all()[:2]
        _attempt(
            s,
            j1,
            1,
            machine="n1-standard-8",
            spot=True,
            gpus=1,
            price=0.5,
            start=T0,
            hours=3,
            status="PREEMPTED",
        )
        _attempt(
            s,
            j1,
            2,
            machine="n1-standard-8",
            spot=True,
            gpus=1,
            price=0.6,
            start=T0 + timedelta(hours=4),
            hours=1,
        )
        _attempt(
            s,
            j2,
            1,
            machine="g2-standard-8",
            spot=False,
            gpus=0,
            price=1.0,
            start=now - timedelta(hours=2),
            hours=None,
            status="RUNNING",
        )
        j1_id, j2_id = j1.id, j2.id
    by_campaign = service.cost_summary(("campaign",), engine=engine)
    assert len(by_campaign) == 1
    r = by_campaign[0]
    assert (r["campaign"], r["campaign_name"], r["attempts"]) == (cid, "demo", 3)
    assert r["cost"] == pytest.approx(0.5 * 3 + 0.6 * 1 + 1.0 * 2, rel=1e-3)
    assert r["gpu_hours"] == pytest.approx(4.0) and r["hours"] == pytest.approx(6.0, rel=1e-3)
    by_day = {
        (x["day"], x["machine"], x["spot"]): x
        for x in service.cost_summary(("day", "machine", "spot"), engine=engine)
    }
    assert by_day[("2026-03-01", "n1-standard-8", True)]["cost"] == pytest.approx(1.5)
    assert by_day[("2026-03-02", "n1-standard-8", True)]["cost"] == pytest.approx(0.6)
    # cost of a job is summed over its recoveries
    assert service.get_job(j1_id, engine=engine).cost_usd == pytest.approx(2.1)
    assert service.get_job(j2_id, engine=engine).cost_usd == pytest.approx(2.0, rel=1e-3)
    (summary,) = service.list_campaigns(engine=engine)
    assert summary.cost_usd == pytest.approx(4.1, rel=1e-3)
    with pytest.raises(ValueError, match="allowed: campaign, day"):
        service.cost_summary(("color",), engine=engine)


def test_budget_decision(engine):
    raw = copy.deepcopy(DEMO_CONFIG)
    raw["backend"].update(
        launcher="gce", machine_type="n1-standard-8", budget_usd=1.0, zones=["us-central1-b"]
    )
    cid = service.create_campaign(raw, engine=engine)
    est = service.estimate_campaign(raw)
    price = est.per_job[0].price_per_hour
    assert price == pytest.approx(0.38)
    assert est.cost == pytest.approx(sum(p.est_hours for p in expand(demo_config())) * price)
    d = service.budget_allows_launch(cid, engine=engine)
    assert d.allowed and d.spent_usd == 0 and d.next_usd == pytest.approx(0.02 * price)
    with session_scope(engine) as s:
        j = s.exec(select(Job).where(Job.campaign_id == cid)).first()
        _attempt(
            s, j, 1, machine="n1-standard-8", spot=False, gpus=0, price=0.38, start=T0, hours=2.5
        )
    d = service.budget_allows_launch(cid, next_job_cost=0.05, engine=engine)
    assert d.allowed and d.spent_usd == pytest.approx(0.95)
    d = service.budget_allows_launch(cid, next_job_cost=0.051, engine=engine)
    assert not d.allowed
    assert d.reason.startswith(
        "over budget: spent 0.95 + running 0.00 + next job 0.05 = 1.00 USD of budget 1.00 USD"
    )
    with session_scope(engine) as s:
        j = s.exec(select(Job).where(Job.campaign_id == cid).order_by(Job.id.desc())).first()
        _attempt(
            s, j, 1, machine="n1-standard-8", spot=False, gpus=0, price=0.38, start=T0, hours=0.125
        )
    assert service.get_campaign(cid, engine=engine).budget.allowed is False


def test_fit_results(engine):
    cid = service.create_campaign(demo_config(), engine=engine)
    with session_scope(engine) as s:
        fit = s.exec(select(Job).where(Job.campaign_id == cid, Job.kind == "fit")).one()
        jobs_repo.record_fit_result(s, fit, {"pulls": {"a": 0.1}}, mu_hat=1.1, sigma=0.3)
    with session_scope(engine) as s:
        fit = s.exec(select(Job).where(Job.campaign_id == cid, Job.kind == "fit")).one()
        jobs_repo.record_fit_result(
            s, fit, {"pulls": {"a": 0.2}}, mu_hat=1.05, sigma=0.25
        )  # replaces
    (r,) = service.fit_results(cid, engine=engine)
    assert (r["job_name"], r["kind"], r["mu_hat"], r["sigma"], r["payload"]) == (
        "fit",
        "fit",
        1.05,
        0.25,
        {"pulls": {"a": 0.2}},
    )


def test_artifacts_recorded_once(engine):
    cid = service.create_campaign(demo_config(), engine=engine)
    with session_scope(engine) as s:
        j = s.exec(select(Job).where(Job.campaign_id == cid)).first()
        assert jobs_repo.record_artifact(
            s, j.id, "ensemble", "file:///x/e.nsbi", size_bytes=10, checksum="sha256:ab"
        )
        assert not jobs_repo.record_artifact(s, j.id, "ensemble", "file:///x/e.nsbi")


def test_start_fit_adds_a_new_fit_run(engine):
    cid = service.create_campaign(demo_config(), engine=engine)
    n_before = service.list_jobs(cid, engine=engine)[1]
    ids = service.start_fit(
        cid,
        {
            "data": "observed",
            "mu_true": 1.3,
            "steps": ["scan", "toys"],
            "scan": {"low": 0.0, "high": 2.0, "points": 5},
            "toys": 25,
        },
        engine=engine,
    )
    rows = {r.id: r for r in service.list_jobs(cid, limit=100, engine=engine)[0]}
    new = [rows[i] for i in ids]
    assert [r.name for r in new] == [
        "fit-r2",
        "scan-r2-000",
        "scan-r2-001",
        "toys-r2-000",
        "toys-r2-001",
        "toys-r2-002",
    ]
    assert len(rows) == n_before + len(ids)
    trains = sorted(r.id for r in rows.values() if r.kind == "train")
    assert sorted(new[0].depends_on) == trains and all(r.depends_on == [ids[0]] for r in new[1:])
    assert all(r.desired_state == DesiredState.HOLD for r in new)  # campaign not launched yet
    with session_scope(engine) as s:
        fit = s.get(Job, ids[0])
        assert (
            fit.spec["params"]["data"]["demo"]["mu"] == 1.3 and fit.spec["params"]["mu_true"] == 1.3
        )
        scans = [s.get(Job, i).spec["params"]["poi_values"] for i in ids[1:3]]
    assert scans == [[0.0, 0.5, 1.0], [1.5, 2.0]]
    assert sorted(s for r in new for s in r.seeds) == list(range(1000, 1025))
    with pytest.raises(ValueError, match="unknown \\['fits'\\]"):
        service.start_fit(cid, {"steps": ["fits"]}, engine=engine)
    service.request_launch(cid, engine=engine)
    ids3 = service.start_fit(cid, {"steps": ["fit"]}, engine=engine)
    assert [service.get_job(i, engine=engine).desired_state for i in ids3] == [DesiredState.RUN]
    service.request_cancel(cid, engine=engine)
    with pytest.raises(service.IntentError, match="CANCELLING"):
        service.start_fit(cid, {}, engine=engine)


def test_start_fit_carries_limits_and_expected_into_the_fit_job(engine):
    """The dashboard's form asks for an upper limit and an expected result: they reach the new
    fit job's options resolved as an analysis file's compute.limits / .expected are; bad values
    are refused with the key named, and nothing is added."""
    cid = service.create_campaign(demo_config(), engine=engine)
    (fit_id,) = service.start_fit(
        cid,
        {"steps": ["fit"], "limits": {"cl": 0.9, "method": "toys"}, "expected": {"mu": 0.5}},
        engine=engine,
    )
    with session_scope(engine) as s:
        options = s.get(Job, fit_id).spec["params"]["options"]
    assert options["limits"] == {"cl": 0.9, "method": "toys", "toys": 1000, "seed": 0}
    assert options["expected"] == {"mu": 0.5}
    (plain,) = service.start_fit(cid, {"steps": ["fit"], "limits": True}, engine=engine)
    with session_scope(engine) as s:
        options = s.get(Job, plain).spec["params"]["options"]
    assert options["limits"] == {"cl": 0.95, "method": "asymptotic", "toys": 0, "seed": 0}
    assert "expected" not in options
    n_jobs = service.list_jobs(cid, engine=engine)[1]
    for request, message in (
        ({"limits": {"cl": 1.5}}, "start_fit: limits.cl:"),
        ({"limits": {"method": "bayes"}}, "start_fit: limits.method:"),
        ({"limits": {"toys": 100}}, "start_fit: limits.toys: is only used with method: toys"),
        ({"limits": 0.95}, "start_fit: limits: expected true/false or a mapping"),
        ({"expected": {"mu": "one"}}, "start_fit: expected.mu:"),
    ):
        with pytest.raises(ValueError, match=message):
            service.start_fit(cid, {"steps": ["fit"], **request}, engine=engine)
    assert service.list_jobs(cid, engine=engine)[1] == n_jobs


def test_campaign_diagnostics_come_from_train_results(sqlite_engine):
    e = sqlite_engine
    cid = service.create_campaign(demo_config(), engine=e)
    assert service.campaign_diagnostics(cid, engine=e) == {}
    with session_scope(e) as s:
        trains = s.exec(
            select(Job).where(Job.campaign_id == cid, Job.kind == "train").order_by(Job.id)
        ).all()
        # second pack of S_vs_B reports diagnostics, first pack none; SBI_vs_B first pack reports
        jobs_repo.record_job_result(s, trains[0], {"task": "S_vs_B"})
        jobs_repo.record_job_result(s, trains[1], {"diagnostics": {"closure_chi2": 1.2}})
        jobs_repo.record_job_result(
            s, trains[2], {"diagnostics": {"closure_chi2": 0.9, "jobs": "ignored"}}
        )
        ids = [t.id for t in trains[:3]]
    diag = service.campaign_diagnostics(cid, engine=e)
    assert diag == {
        "S_vs_B": {"jobs": ids[:2], "closure_chi2": 1.2},
        "SBI_vs_B": {"jobs": [ids[2]], "closure_chi2": 0.9},
    }
    assert service.fit_results(cid, engine=e) == []  # train results are not fit results


def _finish_all(engine, cid, final_for):
    """Run every job of the campaign to a final state chosen by final_for(job)."""
    while True:
        with session_scope(engine) as s:
            jobs_repo.apply_simple_intents(s)
            ready = jobs_repo.ready_jobs(s, campaign_id=cid)
            if not ready:
                return
            for j in ready:
                a = jobs_repo.begin_attempt(s, j, launcher="local", price_per_hour=0.0)
                jobs_repo.mark_launched(s, j, a, "i")
                jobs_repo.end_attempt(s, j, a, final_for(j))


@pytest.mark.parametrize(
    "case, expected",
    [("all_ok", "SUCCEEDED"), ("one_failed", "FAILED"), ("one_cancelled", "CANCELLED")],
)
def test_settle_campaign_outcomes(sqlite_engine, case, expected):
    e = sqlite_engine
    raw = copy.deepcopy(DEMO_CONFIG)
    raw["backend"]["retry_limit"] = 0
    cid = service.create_campaign(raw, engine=e)
    service.request_launch(cid, engine=e)
    scan = next(r for r in service.list_jobs(cid, kind="scan", engine=e)[0])
    if case == "one_cancelled":
        service.request_cancel(job_ids=[scan.id], engine=e)
    bad = scan.id if case == "one_failed" else None
    _finish_all(e, cid, lambda j: JobStatus.FAILED if j.id == bad else JobStatus.SUCCEEDED)
    with session_scope(e) as s:
        assert jobs_repo.settle_campaigns(s) == {cid: expected}
        assert jobs_repo.settle_campaigns(s) == {}  # settled campaigns are left alone
    assert service.get_campaign(cid, engine=e).summary.status == expected


def test_ready_jobs_within_concurrency(engine):
    raw = copy.deepcopy(DEMO_CONFIG)
    raw["backend"]["max_concurrency"] = 3
    c1 = service.create_campaign(raw, engine=engine)
    raw["backend"]["max_concurrency"] = 1
    c2 = service.create_campaign(raw, engine=engine)
    for cid in (c1, c2):
        service.request_launch(cid, engine=engine)
    with session_scope(engine) as s:
        all_ready = jobs_repo.ready_jobs(s)
        capped = jobs_repo.ready_jobs(s, within_concurrency=True)
        assert len(all_ready) == 16
        # per campaign the first max_concurrency jobs in launch order
        expected = [j.id for j in all_ready if j.campaign_id == c1][:3] + [
            j.id for j in all_ready if j.campaign_id == c2
        ][:1]
        assert sorted(j.id for j in capped) == sorted(expected)
        first = capped[0]
        jobs_repo.begin_attempt(s, first, launcher="local", price_per_hour=0.0)
    with session_scope(engine) as s:
        capped = jobs_repo.ready_jobs(s, within_concurrency=True)
        per = {cid: sum(j.campaign_id == cid for j in capped) for cid in (c1, c2)}
        launched_campaign = first.campaign_id
        assert per[launched_campaign] == (2 if launched_campaign == c1 else 0)
