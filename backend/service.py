"""What the dashboard and the CLI call: create campaigns, write intents, read views.

Writes here are *intents* only (launch requested, cancel requested, retry requested); the
controller acts on them. Reads return frozen dataclasses or plain dicts, never ORM rows, so
callers can keep them after the session closes. Every function takes an optional `engine`
(default: the cached engine for `DATABASE_URL`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from backend.campaigns import CampaignConfig, config_region, expand, validate_config
from backend.costs import Estimate, JobEstimate, accrued_cost, hours_between, load_catalogue
from backend.db.engine import session_scope
from backend.db.models import (
    MAX_STEP_LEVEL,
    Attempt,
    Campaign,
    Event,
    FitResult,
    Job,
    JobDependency,
    MetricPoint,
    ResourceSample,
)
from backend.states import CampaignStatus, DesiredState, JobStatus, utcnow

__all__ = [
    "FIT_KINDS", "BudgetDecision", "CampaignDetail", "CampaignSummary", "IntentError", "JobRow", "NotFound",
    "analysis_file_problems", "analysis_plan", "budget_allows_launch", "campaign_analysis", "campaign_diagnostics", "campaign_job_records", "campaign_ids", "campaign_progress",
    "cost_summary", "create_campaign", "create_campaign_from_analysis", "create_campaign_from_analysis_file",
    "estimate_campaign", "fit_results", "get_campaign", "get_job", "job_events", "list_campaigns", "list_jobs",
    "metric_names", "metric_series", "request_cancel", "request_launch", "request_retry", "resource_series",
    "start_fit",
]


class NotFound(LookupError):
    """No campaign / job with the given id."""


class IntentError(ValueError):
    """An intent that does not apply to the campaign's current status."""


# --------------------------------------------------------------------------- result types


@dataclass(frozen=True)
class CampaignSummary:
    id: int
    name: str
    status: str
    owner: str
    launcher: str
    created_at: datetime
    n_jobs: int
    counts: dict[str, int]  # jobs per JobStatus value (every status present, zeros included)
    progress: float  # fraction of jobs SUCCEEDED
    cost_usd: float  # accrued so far, live attempts up to now
    gpu_hours: float
    budget_usd: float | None
    estimate_cost_usd: float
    estimate_gpu_hours: float


@dataclass(frozen=True)
class CampaignDetail:
    summary: CampaignSummary
    description: str
    config: dict[str, Any]
    config_hash: str
    code_version: str
    max_concurrency: int
    retry_limit: int
    counts_by_kind: dict[str, dict[str, int]]  # kind -> status -> n
    launch_requested_at: datetime | None
    cancel_requested_at: datetime | None
    budget: "BudgetDecision"
    events: list[dict[str, Any]] = field(default_factory=list)  # campaign-level events, newest first


@dataclass(frozen=True)
class JobRow:
    id: int
    campaign_id: int
    name: str
    kind: str
    task: str | None
    status: str
    status_reason: str
    desired_state: str
    cancel_requested: bool
    retry_requested: bool
    members: list[int]
    np_subset: list[str]
    seeds: list[int]
    depends_on: list[int]
    attempts: int
    current_attempt: int
    retries: int
    recoveries: int
    max_retries: int
    machine_type: str
    gpu_type: str | None
    gpu_count: int
    spot: bool
    last_heartbeat: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cost_usd: float
    gpu_hours: float
    instance_id: str | None


@dataclass(frozen=True)
class BudgetDecision:
    """Whether the controller may launch one more job of a campaign, and why (shown to users)."""

    allowed: bool
    reason: str
    budget_usd: float | None
    spent_usd: float
    running_usd: float  # estimated remaining cost of attempts now running
    next_usd: float  # estimated cost of the job about to launch


# --------------------------------------------------------------------------- helpers


def _code_version() -> str:
    """git describe of the checkout if there is one, else the package version."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=Path(__file__).parent,
            capture_output=True, text=True, timeout=5,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        return version("nsbi-workbench")
    except Exception:  # noqa: BLE001 - not installed: no version to report
        return "unknown"


def _campaign_or_raise(session: Session, campaign_id: int) -> Campaign:
    c = session.get(Campaign, campaign_id)
    if c is None:
        raise NotFound(f"no campaign with id {campaign_id}")
    return c


def _campaign_costs(session: Session, campaign_ids: Sequence[int] | None, now: datetime) -> dict[int, tuple[float, float]]:
    """campaign id -> (cost, gpu_hours): closed attempts summed in SQL, open ones accrued to now."""
    base = sa.select(Job.campaign_id, sa.func.sum(Attempt.cost_usd), sa.func.sum(Attempt.gpu_hours)).join(
        Job, Job.id == Attempt.job_id
    )
    closed = base.where(sa.or_(Attempt.ended_at.is_not(None), Attempt.launched_at.is_(None)))
    if campaign_ids is not None:
        closed = closed.where(Job.campaign_id.in_(campaign_ids))
    out: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for cid, cost, gh in session.execute(closed.group_by(Job.campaign_id)):
        out[cid][0] += cost or 0.0
        out[cid][1] += gh or 0.0
    live = sa.select(Job.campaign_id, Attempt.launched_at, Attempt.price_per_hour, Attempt.gpu_count).join(
        Job, Job.id == Attempt.job_id
    ).where(Attempt.launched_at.is_not(None), Attempt.ended_at.is_(None))
    if campaign_ids is not None:
        live = live.where(Job.campaign_id.in_(campaign_ids))
    for cid, launched, price, gpus in session.execute(live):
        out[cid][0] += accrued_cost(price, launched, now)
        out[cid][1] += hours_between(launched, now) * gpus
    return {k: (v[0], v[1]) for k, v in out.items()}


def _status_counts(session: Session, campaign_ids: Sequence[int] | None) -> dict[int, dict[str, int]]:
    q = sa.select(Job.campaign_id, Job.status, sa.func.count()).group_by(Job.campaign_id, Job.status)
    if campaign_ids is not None:
        q = q.where(Job.campaign_id.in_(campaign_ids))
    out: dict[int, dict[str, int]] = defaultdict(lambda: {s.value: 0 for s in JobStatus})
    for cid, status, n in session.execute(q):
        out[cid][status] = n
    return out


def _summaries(session: Session, campaigns: Sequence[Campaign]) -> list[CampaignSummary]:
    now = utcnow()
    ids = [c.id for c in campaigns]
    counts = _status_counts(session, ids)
    costs = _campaign_costs(session, ids, now)
    out = []
    for c in campaigns:
        cnt = dict(counts[c.id])
        n = sum(cnt.values())
        cost, gh = costs.get(c.id, (0.0, 0.0))
        out.append(CampaignSummary(
            id=c.id, name=c.name, status=c.status, owner=c.owner, launcher=c.launcher,
            created_at=c.created_at, n_jobs=n, counts=cnt,
            progress=(cnt[JobStatus.SUCCEEDED] / n) if n else 0.0,
            cost_usd=cost, gpu_hours=gh, budget_usd=c.budget_usd,
            estimate_cost_usd=c.estimate_cost_usd, estimate_gpu_hours=c.estimate_gpu_hours,
        ))
    return out


def _event_dict(e: Event) -> dict[str, Any]:
    return {"id": e.id, "campaign_id": e.campaign_id, "job_id": e.job_id, "attempt_no": e.attempt_no,
            "time": e.time, "from_state": e.from_state, "to_state": e.to_state, "reason": e.reason,
            "actor": e.actor, "detail": dict(e.detail or {})}


def _add_campaign_event(session: Session, c: Campaign, to_state: str, reason: str, actor: str,
                        now: datetime, detail: dict[str, Any] | None = None) -> None:
    session.add(Event(campaign_id=c.id, time=now, from_state=c.status, to_state=to_state,
                      reason=reason, actor=actor, detail=detail or {}))


# --------------------------------------------------------------------------- estimates


def estimate_campaign(config: Mapping[str, Any] | CampaignConfig) -> Estimate:
    """GPU-hours and cost before launch, from the config's per-job time estimates and the
    price catalogue (no retries or preemptions counted)."""
    cfg = validate_config(config)
    catalogue = load_catalogue()
    region = cfg.region
    per_job = []
    prices: dict[tuple, float] = {}
    for p in expand(cfg):
        key = (p.machine_type, p.gpu_type, p.gpu_count, p.spot)
        if key not in prices:
            prices[key] = catalogue.price_per_hour(p.machine_type, p.gpu_type, p.gpu_count, p.spot, region)
        price = prices[key]
        per_job.append(JobEstimate(p.name, p.kind, p.est_hours, p.est_hours * p.gpu_count, price, p.est_hours * price))
    return Estimate(
        machine_hours=sum(j.hours for j in per_job),
        gpu_hours=sum(j.gpu_hours for j in per_job),
        cost=sum(j.cost for j in per_job),
        currency=catalogue.currency,
        catalogue_date=catalogue.date,
        per_job=tuple(per_job),
    )


# --------------------------------------------------------------------------- create + intents


def _job_row_values(camp_id: int, p: Any, backend: Mapping[str, Any], est_hours: float, desired: str,
                    now: datetime) -> dict[str, Any]:
    return {
        "campaign_id": camp_id, "name": p.name, "kind": p.kind, "task": p.task,
        "members": list(p.members), "np_subset": list(p.np_subset), "seeds": list(p.seeds),
        "depends_on": [], "spec": p.spec, "uri": None, "status": JobStatus.PENDING.value,
        "status_reason": "created", "desired_state": desired,
        "cancel_requested": False, "retry_requested": False, "current_attempt": 0,
        "retries": 0, "recoveries": 0, "max_retries": backend["retry_limit"],
        "priority": p.priority, "launcher": backend["launcher"], "machine_type": p.machine_type,
        "gpu_type": p.gpu_type, "gpu_count": p.gpu_count, "spot": p.spot,
        "zones": list(backend["zones"]), "est_hours": est_hours,
        "created_at": now, "updated_at": now, "started_at": None, "finished_at": None,
        "last_heartbeat": None,
    }


def _insert_plans(session: Session, camp_id: int, plans: Sequence[Any], backend: Mapping[str, Any],
                  est_hours: Mapping[str, float], desired: str, now: datetime) -> dict[str, int]:
    """Bulk-insert job plans and their DAG edges; `depends_on` names may also name jobs that
    already exist in the campaign. Returns name -> id for every job of the campaign."""
    conn = session.connection()
    if plans:
        conn.execute(sa.insert(Job.__table__),
                     [_job_row_values(camp_id, p, backend, est_hours[p.name], desired, now) for p in plans])
    ids = dict(conn.execute(sa.select(Job.name, Job.id).where(Job.campaign_id == camp_id)).all())
    edges = [{"job_id": ids[p.name], "depends_on_id": ids[d]} for p in plans for d in p.depends_on]
    if edges:
        conn.execute(sa.insert(JobDependency.__table__), edges)
    updates = [
        {"_id": ids[p.name], "_deps": [ids[d] for d in p.depends_on],
         "_spec": {**p.spec, "job_id": ids[p.name], "depends_on": {d: ids[d] for d in p.depends_on}}}
        for p in plans if p.depends_on
    ]
    if updates:
        t = Job.__table__
        conn.execute(
            sa.update(t).where(t.c.id == sa.bindparam("_id"))
            .values(depends_on=sa.bindparam("_deps", type_=t.c.depends_on.type),
                    spec=sa.bindparam("_spec", type_=t.c.spec.type)),
            updates,
        )
    return ids


def create_campaign(
    config: Mapping[str, Any] | CampaignConfig, *, owner: str = "local", engine: Engine | None = None
) -> int:
    """Validate `config`, store the campaign and its jobs (PENDING, desired HOLD) with their DAG
    edges, all in one transaction; returns the campaign id. Nothing is written if the config
    is invalid (`CampaignConfigError`) or any insert fails."""
    cfg = validate_config(config)
    plans = expand(cfg)
    estimate = estimate_campaign(cfg)
    now = utcnow()
    backend = cfg.backend
    with session_scope(engine) as session:
        camp = Campaign(
            name=cfg.name, description=cfg.data.get("description", ""), config=cfg.data,
            config_hash=cfg.config_hash, code_version=cfg.data.get("code_version") or _code_version(),
            owner=owner, status=CampaignStatus.CREATED, launcher=backend["launcher"],
            budget_usd=backend["budget_usd"], max_concurrency=backend["max_concurrency"],
            retry_limit=backend["retry_limit"], estimate_gpu_hours=estimate.gpu_hours,
            estimate_cost_usd=estimate.cost, created_at=now, updated_at=now,
        )
        session.add(camp)
        session.flush()
        _insert_plans(session, camp.id, plans, backend, {j.name: j.hours for j in estimate.per_job},
                      DesiredState.HOLD.value, now)
        session.add(Event(campaign_id=camp.id, time=now, from_state=None, to_state=CampaignStatus.CREATED,
                          reason=f"created with {len(plans)} jobs", actor=owner,
                          detail={"config_hash": cfg.config_hash}))
        return camp.id


# --------------------------------------------------------------------------- analysis campaigns


def create_campaign_from_analysis(
    config: Mapping[str, Any] | CampaignConfig, *, analysis: Mapping[str, Any] | None = None,
    owner: str = "local", reuse: bool = True, engine: Engine | None = None,
) -> int:
    """Create a campaign from an analysis file's campaign config, reusing earlier results.

    Like `create_campaign`, plus: every job gets a content key (`backend.analysis.cache`) in
    ``spec["cache_key"]`` and the analysis provenance (``analysis``: name, path, file_hash) in
    ``spec["analysis"]``; with ``reuse`` each job whose key matches a SUCCEEDED job whose
    artifacts still exist is created SUCCEEDED with that job's result (``spec["cached_from"]``,
    an Event 'cached'), so only the rest runs. The creation Event's detail records the
    analysis provenance and which jobs were reused. The cost estimate counts only jobs that
    will run. One transaction: nothing is written if anything fails.
    """
    from backend.analysis import cache

    cfg = validate_config(config)
    plans = expand(cfg)
    keys = cache.plan_keys(plans)
    prov = {k: v for k, v in dict(analysis or {}).items() if isinstance(v, (str, int, float, bool)) or v is None}
    plans = [dataclasses.replace(p, spec={**p.spec, "cache_key": keys[p.name],
                                          **({"analysis": prov} if prov else {})}) for p in plans]
    estimate = estimate_campaign(cfg)
    hours = {j.name: j.hours for j in estimate.per_job}
    now = utcnow()
    backend = cfg.backend
    with session_scope(engine) as session:
        sources = cache.find_sources(session, keys.values()) if reuse else {}
        reused = {p.name for p in plans if keys[p.name] in sources}
        cost = sum(j.cost for j in estimate.per_job if j.name not in reused)
        gpu_h = sum(j.gpu_hours for j in estimate.per_job if j.name not in reused)
        camp = Campaign(
            name=cfg.name, description=cfg.data.get("description", ""), config=cfg.data,
            config_hash=cfg.config_hash, code_version=cfg.data.get("code_version") or _code_version(),
            owner=owner, status=CampaignStatus.CREATED, launcher=backend["launcher"],
            budget_usd=backend["budget_usd"], max_concurrency=backend["max_concurrency"],
            retry_limit=backend["retry_limit"], estimate_gpu_hours=gpu_h, estimate_cost_usd=cost,
            created_at=now, updated_at=now,
        )
        session.add(camp)
        session.flush()
        ids = _insert_plans(session, camp.id, plans, backend, hours, DesiredState.HOLD.value, now)
        session.add(Event(campaign_id=camp.id, time=now, from_state=None, to_state=CampaignStatus.CREATED,
                          reason=f"created from analysis with {len(plans)} jobs, {len(reused)} reused",
                          actor=owner, detail={"config_hash": cfg.config_hash, "analysis": prov,
                                               "engine_version": cache.engine_version(),
                                               "reused": sorted(reused)}))
        session.flush()
        cache.mark_cached(session, ids, keys, sources, actor=owner, now=now)
        return camp.id


def analysis_plan(config: Mapping[str, Any] | CampaignConfig, engine: Engine | None = None) -> dict[str, Any]:
    """What creating this analysis campaign would do, without writing anything: n_jobs, jobs
    per kind, and the names of the jobs an earlier SUCCEEDED job would stand in for
    ("reused"; None when the database is not set up yet)."""
    from backend.analysis import cache
    from backend.db.migrate import current_revision, head_revision

    cfg = validate_config(config)
    plans = expand(cfg)
    kinds: dict[str, int] = {}
    for p in plans:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    keys = cache.plan_keys(plans)
    reused = None
    if engine is None:  # do not create an empty SQLite file just to find nothing in it
        from sqlalchemy.engine import make_url

        from backend.settings import get_settings

        u = make_url(get_settings().database_url)
        if u.get_backend_name() == "sqlite" and u.database and not Path(u.database).expanduser().exists():
            return {"n_jobs": len(plans), "kinds": kinds, "reused": None}
    try:
        if current_revision(engine) == head_revision():
            with session_scope(engine) as session:
                sources = cache.find_sources(session, keys.values())
            reused = sorted(p.name for p in plans if keys[p.name] in sources)
    except sa.exc.SQLAlchemyError:
        reused = None
    return {"n_jobs": len(plans), "kinds": kinds, "reused": reused}


def analysis_file_problems(path: str | Path) -> list[str]:
    """Every problem of an analysis file, as 'FILE:LINE: key: message' (static checks: the
    samples are not read, so no JAX is imported; `nsbi analysis validate` reads them too)."""
    from backend.analysis import validate_analysis

    return [str(p) for p in validate_analysis(path, check_data=False)]


def create_campaign_from_analysis_file(path: str | Path, *, owner: str = "dashboard", launch: bool = False,
                                       reuse: bool = True, engine: Engine | None = None) -> int:
    """Validate an analysis file (static checks) and create its campaign, reusing earlier
    results; optionally request the launch. Raises `AnalysisError` (with `.problems`) and
    writes nothing when the file has problems. The controller carries the campaign; the
    report folder is what `nsbi analysis run` writes, not this."""
    from backend.analysis import load_analysis

    a = load_analysis(path, check_data=False)
    cid = create_campaign_from_analysis(a.campaign_config(), owner=owner, reuse=reuse, engine=engine,
                                        analysis={"name": a.name, "path": str(a.path), "file_hash": a.file_hash})
    if launch:
        request_launch(cid, engine=engine, actor=owner)
    return cid


def campaign_analysis(campaign_id: int, engine: Engine | None = None) -> dict[str, Any]:
    """The analysis provenance of a campaign made by `create_campaign_from_analysis` ({} if
    it was not): {"analysis": {name, path, file_hash}, "config_hash", "engine_version", "reused"}."""
    with session_scope(engine) as session:
        _campaign_or_raise(session, campaign_id)
        ev = session.exec(select(Event).where(Event.campaign_id == campaign_id, Event.job_id.is_(None),
                                              Event.from_state.is_(None)).order_by(Event.id).limit(1)).first()
        detail = dict(ev.detail or {}) if ev is not None else {}
        return detail if "analysis" in detail else {}


def campaign_progress(campaign_id: int, engine: Engine | None = None) -> dict[str, Any]:
    """A cheap progress snapshot for command-line bars: campaign status; per kind the jobs
    total / done (SUCCEEDED) / running / failed / reused (SUCCEEDED without an attempt); and
    the newest ``train_loss`` of each running train job (one index seek per running job)."""
    with session_scope(engine) as session:
        c = _campaign_or_raise(session, campaign_id)
        ran = sa.select(Attempt.job_id).where(Attempt.job_id == Job.id).exists()
        kinds: dict[str, dict[str, int]] = defaultdict(lambda: {"total": 0, "done": 0, "running": 0,
                                                               "failed": 0, "cancelled": 0, "reused": 0})
        q = (sa.select(Job.kind, Job.status, ran, sa.func.count())
             .where(Job.campaign_id == campaign_id).group_by(Job.kind, Job.status, ran))
        for kind, status, has_attempt, n in session.execute(q):
            k = kinds[kind]
            k["total"] += n
            if status == JobStatus.SUCCEEDED:
                k["done"] += n
                k["reused"] += 0 if has_attempt else n
            elif status in (JobStatus.LAUNCHING, JobStatus.RUNNING):
                k["running"] += n
            elif status == JobStatus.FAILED:
                k["failed"] += n
            elif status == JobStatus.CANCELLED:
                k["cancelled"] += n
        running = list(session.execute(sa.select(Job.id).where(
            Job.campaign_id == campaign_id, Job.kind == "train", Job.status == JobStatus.RUNNING)).scalars())
        losses = {}
        mp = MetricPoint.__table__.c
        for jid in running:
            v = session.execute(sa.select(mp.value).where(mp.job_id == jid, mp.name == "train_loss")
                                .order_by(mp.step.desc()).limit(1)).scalar()
            if v is not None:
                losses[jid] = float(v)
        order = {k: i for i, k in enumerate(("train", *FIT_KINDS))}
        return {"status": c.status, "kinds": dict(sorted(kinds.items(), key=lambda kv: order.get(kv[0], 99))),
                "train_loss": losses}


def campaign_job_records(campaign_id: int, engine: Engine | None = None) -> list[dict[str, Any]]:
    """Every job of a campaign with what a report's provenance needs, in id order: id, name,
    kind, task, status, uri, attempt (current), attempts (rows: 0 for a reused job), spec,
    cache_key, cached_from, started_at, finished_at and run_seconds (summed over attempts)."""
    with session_scope(engine) as session:
        _campaign_or_raise(session, campaign_id)
        agg = dict((jid, (n, secs)) for jid, n, secs in session.execute(
            sa.select(Attempt.job_id, sa.func.count(), sa.func.sum(Attempt.gpu_hours))
            .join(Job, Job.id == Attempt.job_id).where(Job.campaign_id == campaign_id).group_by(Attempt.job_id)))
        spans: dict[int, float] = defaultdict(float)
        for jid, launched, ended in session.execute(
                sa.select(Attempt.job_id, Attempt.launched_at, Attempt.ended_at)
                .join(Job, Job.id == Attempt.job_id).where(Job.campaign_id == campaign_id)):
            if launched is not None and ended is not None:
                spans[jid] += (ended - launched).total_seconds()
        out = []
        for j in session.exec(select(Job).where(Job.campaign_id == campaign_id).order_by(Job.id)):
            spec = dict(j.spec or {})
            out.append({"id": j.id, "name": j.name, "kind": j.kind, "task": j.task, "status": j.status,
                        "uri": j.uri, "attempt": j.current_attempt, "attempts": agg.get(j.id, (0, 0))[0],
                        "spec": spec, "cache_key": spec.get("cache_key"), "cached_from": spec.get("cached_from"),
                        "started_at": j.started_at, "finished_at": j.finished_at, "run_seconds": spans.get(j.id, 0.0)})
        return out


FIT_KINDS = ("fit", "impacts", "scan", "toys")


def start_fit(campaign_id: int, request: Mapping[str, Any], engine: Engine | None = None, *,
              actor: str = "user") -> list[int]:
    """Add a new fit run (a fit job plus optional impacts / scan / toys jobs) on the campaign's
    trained ensembles; returns the new job ids.

    request keys (all optional): steps (subset of fit, impacts, scan, toys; a fit is always
    included because the others start from it), data ("asimov", "observed" or a sample spec),
    mu_true, scan {"low", "high", "points"} or poi_values, points_per_job, toys (count),
    toys_per_job, nps_per_job. The new fit waits for every training job; the new jobs launch
    once the campaign is launched (a finished campaign is reopened as ACTIVE).
    """
    steps = set(request.get("steps") or FIT_KINDS) | {"fit"}
    bad = sorted(steps - set(FIT_KINDS))
    if bad:
        raise ValueError(f"start_fit: steps: unknown {bad}; allowed: {', '.join(FIT_KINDS)}")
    now = utcnow()
    with session_scope(engine) as session:
        c = _campaign_or_raise(session, campaign_id)
        if c.status in (CampaignStatus.CANCELLING, CampaignStatus.CANCELLED):
            raise IntentError(f"campaign {campaign_id} is {c.status}; a new fit needs a campaign that is not cancelled")
        raw = json.loads(json.dumps(c.config))
        mu_true = float(request.get("mu_true", raw["fit"].get("mu_true", 1.0)))
        data = request.get("data", "asimov")
        if data == "observed":
            data = raw["fit"].get("data")
            if not isinstance(data, Mapping):
                if all("demo" in spec for spec in raw["processes"].values()):
                    data = {"demo": {"mu": mu_true, "seed": 20_000 + len(FIT_KINDS) * campaign_id, "poisson": True}}
                else:
                    raise ValueError("start_fit: data 'observed': the campaign config has no observed sample "
                                     "(set fit.data to a sample spec)")
        raw["fit"].update(enabled=True, data=data, mu_true=mu_true)
        raw["impacts"].update(enabled="impacts" in steps)
        if "nps_per_job" in request:
            raw["impacts"]["nps_per_job"] = int(request["nps_per_job"])
        raw["scan"].update(enabled="scan" in steps)
        scan = request.get("scan")
        if isinstance(scan, Mapping):
            n = max(int(scan.get("points", 11)), 2)
            lo, hi = float(scan.get("low", 0.0)), float(scan.get("high", 2.0))
            raw["scan"]["poi_values"] = [lo + (hi - lo) * i / (n - 1) for i in range(n)]
        if "poi_values" in request:
            raw["scan"]["poi_values"] = [float(v) for v in request["poi_values"]]
        if "points_per_job" in request:
            raw["scan"]["points_per_job"] = int(request["points_per_job"])
        raw["toys"].update(enabled="toys" in steps)
        if "toys" in request:
            raw["toys"]["n_toys"] = int(request["toys"])
        if "toys_per_job" in request:
            raw["toys"]["toys_per_job"] = int(request["toys_per_job"])
        cfg = validate_config(raw, source=f"start_fit on campaign {campaign_id}")
        existing = dict(session.execute(sa.select(Job.name, Job.kind).where(Job.campaign_id == campaign_id)).all())
        run = 1 + sum(1 for k in existing.values() if k == "fit")
        train_names = tuple(n for n, k in existing.items() if k == "train")
        if not train_names:
            raise IntentError(f"campaign {campaign_id} has no training jobs to fit with")
        suffix = f"-r{run}"
        rename = {"fit": f"fit{suffix}"}
        plans = []
        for p in expand(cfg):
            if p.kind == "train":
                continue
            name = rename.get(p.name) or p.name.replace(p.kind + "-", f"{p.kind}{suffix}-", 1)
            rename[p.name] = name
            deps = train_names if p.kind == "fit" else tuple(rename[d] for d in p.depends_on)
            spec = {**p.spec, "name": name, "fit_job": rename["fit"], "run": run}
            plans.append(dataclasses.replace(p, name=name, depends_on=deps, spec=spec))
        catalogue = load_catalogue()
        region = cfg.region
        est = {p.name: p.est_hours for p in plans}
        desired = DesiredState.RUN.value if c.launch_requested_at is not None else DesiredState.HOLD.value
        ids = _insert_plans(session, campaign_id, plans, cfg.backend, est, desired, now)
        added_cost = sum(p.est_hours * catalogue.price_per_hour(p.machine_type, p.gpu_type, p.gpu_count, p.spot, region)
                         for p in plans)
        c.estimate_cost_usd += added_cost
        c.estimate_gpu_hours += sum(p.est_hours * p.gpu_count for p in plans)
        detail = {"run": run, "jobs": [p.name for p in plans], "data": "asimov" if data == "asimov" else "sample"}
        if c.status in (CampaignStatus.SUCCEEDED, CampaignStatus.FAILED) and desired == DesiredState.RUN.value:
            _add_campaign_event(session, c, CampaignStatus.ACTIVE, f"fit run {run} added", actor, now, detail)
            c.status = CampaignStatus.ACTIVE
        else:
            _add_campaign_event(session, c, c.status, f"fit run {run} added", actor, now, detail)
        c.updated_at = now
        session.add(c)
        return [ids[p.name] for p in plans]


def request_launch(campaign_id: int, engine: Engine | None = None, *, actor: str = "user") -> int:
    """Intent: let the controller launch this campaign's jobs. Marks PENDING jobs desired RUN
    and the campaign ACTIVE; returns how many jobs were marked."""
    now = utcnow()
    with session_scope(engine) as session:
        c = _campaign_or_raise(session, campaign_id)
        if c.status not in (CampaignStatus.CREATED, CampaignStatus.ACTIVE):
            raise IntentError(f"campaign {campaign_id} is {c.status}; only CREATED or ACTIVE campaigns can be launched")
        n = session.execute(
            sa.update(Job).where(Job.campaign_id == campaign_id, Job.status == JobStatus.PENDING,
                                 Job.cancel_requested.is_(False))
            .values(desired_state=DesiredState.RUN, updated_at=now)
        ).rowcount
        _add_campaign_event(session, c, CampaignStatus.ACTIVE, "launch requested", actor, now, {"jobs": n})
        c.status = CampaignStatus.ACTIVE
        c.launch_requested_at = c.launch_requested_at or now
        c.updated_at = now
        session.add(c)
        return int(n)


def _select_jobs(campaign_id: int | None, job_ids: Iterable[int] | None):
    if campaign_id is None and job_ids is None:
        raise ValueError("give campaign_id or job_ids")
    conds = []
    if campaign_id is not None:
        conds.append(Job.campaign_id == campaign_id)
    if job_ids is not None:
        conds.append(Job.id.in_(list(job_ids)))
    return conds


def request_cancel(campaign_id: int | None = None, job_ids: Iterable[int] | None = None,
                   engine: Engine | None = None, *, actor: str = "user") -> int:
    """Intent: stop these jobs (all of a campaign's, or the given ones). Sets cancel_requested
    on jobs not yet final; the controller stops machines and marks them CANCELLED."""
    now = utcnow()
    with session_scope(engine) as session:
        if campaign_id is not None:
            c = _campaign_or_raise(session, campaign_id)
        conds = _select_jobs(campaign_id, job_ids)
        final = [JobStatus.SUCCEEDED, JobStatus.CANCELLED]
        ids = list(session.execute(sa.select(Job.id).where(*conds, Job.status.not_in(final))).scalars())
        if ids:
            session.execute(sa.update(Job).where(Job.id.in_(ids))
                            .values(cancel_requested=True, retry_requested=False, updated_at=now))
            session.execute(sa.insert(Event.__table__), [
                {"campaign_id": cid, "job_id": jid, "time": now, "to_state": "CANCEL_REQUESTED",
                 "reason": "cancel requested", "actor": actor, "detail": {}}
                for jid, cid in session.execute(sa.select(Job.id, Job.campaign_id).where(Job.id.in_(ids)))
            ])
        if campaign_id is not None and c.status not in (CampaignStatus.SUCCEEDED, CampaignStatus.CANCELLED):
            _add_campaign_event(session, c, CampaignStatus.CANCELLING, "cancel requested", actor, now, {"jobs": len(ids)})
            c.status = CampaignStatus.CANCELLING
            c.cancel_requested_at = now
            c.updated_at = now
            session.add(c)
        return len(ids)


def request_retry(campaign_id: int | None = None, job_ids: Iterable[int] | None = None,
                  engine: Engine | None = None, *, actor: str = "user") -> int:
    """Intent: retry FAILED jobs (beyond the automatic retry limit if need be). Sets
    retry_requested and desired RUN; reopens a FAILED campaign as ACTIVE."""
    now = utcnow()
    with session_scope(engine) as session:
        if campaign_id is not None:
            c = _campaign_or_raise(session, campaign_id)
        conds = _select_jobs(campaign_id, job_ids)
        ids = list(session.execute(sa.select(Job.id).where(*conds, Job.status == JobStatus.FAILED)).scalars())
        if ids:
            session.execute(sa.update(Job).where(Job.id.in_(ids))
                            .values(retry_requested=True, desired_state=DesiredState.RUN,
                                    cancel_requested=False, updated_at=now))
            rows = list(session.execute(sa.select(Job.id, Job.campaign_id).where(Job.id.in_(ids))))
            session.execute(sa.insert(Event.__table__), [
                {"campaign_id": cid, "job_id": jid, "time": now, "to_state": "RETRY_REQUESTED",
                 "reason": "retry requested", "actor": actor, "detail": {}} for jid, cid in rows
            ])
            for cid in {cid for _, cid in rows}:
                camp = session.get(Campaign, cid)
                if camp.status in (CampaignStatus.FAILED, CampaignStatus.CANCELLED, CampaignStatus.CANCELLING):
                    _add_campaign_event(session, camp, CampaignStatus.ACTIVE, "retry requested", actor, now)
                    camp.status = CampaignStatus.ACTIVE
                    camp.updated_at = now
                    session.add(camp)
        return len(ids)


# --------------------------------------------------------------------------- reads


def campaign_ids(engine: Engine | None = None) -> list[int]:
    with session_scope(engine) as session:
        return list(session.execute(sa.select(Campaign.id).order_by(Campaign.id.desc())).scalars())


def list_campaigns(engine: Engine | None = None) -> list[CampaignSummary]:
    """Every campaign, newest first, with job counts, progress, cost so far and estimate."""
    with session_scope(engine) as session:
        camps = list(session.exec(select(Campaign).order_by(Campaign.id.desc())))
        return _summaries(session, camps)


def budget_allows_launch(
    campaign_id: int,
    next_job_cost: float | None = None,
    *,
    session: Session | None = None,
    engine: Engine | None = None,
    now: datetime | None = None,
    spent: float | None = None,
) -> BudgetDecision:
    """May the controller launch one more job of this campaign without exceeding its budget?

    Compares spent (accrued, live attempts up to now) + the estimated remaining cost of running
    attempts + `next_job_cost` (default: the costliest pending job's estimate) with the budget.
    """
    if session is None:
        with session_scope(engine) as s:
            return budget_allows_launch(campaign_id, next_job_cost, session=s, now=now, spent=spent)
    now = now or utcnow()
    c = _campaign_or_raise(session, campaign_id)
    if c.budget_usd is None:
        return BudgetDecision(True, "no budget set", None, spent or 0.0, 0.0, next_job_cost or 0.0)
    if spent is None:
        spent, _ = _campaign_costs(session, [campaign_id], now).get(campaign_id, (0.0, 0.0))
    running = 0.0
    q = (sa.select(Job.est_hours, Attempt.launched_at, Attempt.price_per_hour)
         .join(Attempt, sa.and_(Attempt.job_id == Job.id, Attempt.attempt_no == Job.current_attempt))
         .where(Job.campaign_id == campaign_id, Job.status.in_([JobStatus.LAUNCHING, JobStatus.RUNNING])))
    for est_h, launched, price in session.execute(q):
        running += max(est_h - hours_between(launched, now), 0.0) * price
    if next_job_cost is None:
        catalogue = load_catalogue()
        region = config_region(c.config)
        q = (sa.select(Job.machine_type, Job.gpu_type, Job.gpu_count, Job.spot, sa.func.max(Job.est_hours))
             .where(Job.campaign_id == campaign_id, Job.status == JobStatus.PENDING)
             .group_by(Job.machine_type, Job.gpu_type, Job.gpu_count, Job.spot))
        next_job_cost = max((h * catalogue.price_per_hour(m, g, n, s, region) for m, g, n, s, h in session.execute(q)),
                            default=0.0)
    total = spent + running + next_job_cost
    txt = (f"spent {spent:.2f} + running {running:.2f} + next job {next_job_cost:.2f} = {total:.2f} USD "
           f"of budget {c.budget_usd:.2f} USD")
    if total > c.budget_usd + 1e-12:
        return BudgetDecision(False, f"over budget: {txt}", c.budget_usd, spent, running, next_job_cost)
    return BudgetDecision(True, f"within budget: {txt}", c.budget_usd, spent, running, next_job_cost)


def get_campaign(campaign_id: int, engine: Engine | None = None) -> CampaignDetail:
    """One campaign in full: summary, config, counts per kind, budget decision, recent events."""
    with session_scope(engine) as session:
        c = _campaign_or_raise(session, campaign_id)
        now = utcnow()
        by_kind: dict[str, dict[str, int]] = defaultdict(dict)
        counts = {s.value: 0 for s in JobStatus}
        q = sa.select(Job.kind, Job.status, sa.func.count()).where(Job.campaign_id == campaign_id).group_by(Job.kind, Job.status)
        for kind, status, n in session.execute(q):
            by_kind[kind][status] = n
            counts[status] += n
        n_jobs = sum(counts.values())
        cost, gh = _campaign_costs(session, [campaign_id], now).get(campaign_id, (0.0, 0.0))
        summary = CampaignSummary(
            id=c.id, name=c.name, status=c.status, owner=c.owner, launcher=c.launcher, created_at=c.created_at,
            n_jobs=n_jobs, counts=counts, progress=(counts[JobStatus.SUCCEEDED] / n_jobs) if n_jobs else 0.0,
            cost_usd=cost, gpu_hours=gh, budget_usd=c.budget_usd, estimate_cost_usd=c.estimate_cost_usd,
            estimate_gpu_hours=c.estimate_gpu_hours,
        )
        events = [_event_dict(e) for e in session.exec(
            select(Event).where(Event.campaign_id == campaign_id, Event.job_id.is_(None))
            .order_by(Event.time.desc(), Event.id.desc()).limit(50))]
        budget = budget_allows_launch(campaign_id, session=session, now=now, spent=cost)
        return CampaignDetail(
            summary=summary, description=c.description, config=dict(c.config), config_hash=c.config_hash,
            code_version=c.code_version, max_concurrency=c.max_concurrency, retry_limit=c.retry_limit,
            counts_by_kind=dict(by_kind), launch_requested_at=c.launch_requested_at,
            cancel_requested_at=c.cancel_requested_at, budget=budget, events=events,
        )


_JOB_ROW_COLS = tuple(getattr(Job, c) for c in (
    "id", "campaign_id", "name", "kind", "task", "status", "status_reason", "desired_state", "cancel_requested",
    "retry_requested", "members", "np_subset", "seeds", "depends_on", "current_attempt", "retries", "recoveries",
    "max_retries", "machine_type", "gpu_type", "gpu_count", "spot", "last_heartbeat", "created_at", "started_at",
    "finished_at"))


def _job_rows(session: Session, jobs: Sequence[Any]) -> list[JobRow]:
    """JobRows for `jobs`, with attempt counts and costs aggregated over their attempts."""
    now = utcnow()
    ids = [j.id for j in jobs]
    agg: dict[int, list[Any]] = {i: [0, 0.0, 0.0, None] for i in ids}
    if ids:
        q = (sa.select(Attempt.job_id, Attempt.launched_at, Attempt.ended_at, Attempt.price_per_hour,
                       Attempt.cost_usd, Attempt.gpu_hours, Attempt.gpu_count, Attempt.instance_id)
             .where(Attempt.job_id.in_(ids)).order_by(Attempt.job_id, Attempt.attempt_no))
        for jid, launched, ended, price, cost, gh, gpus, inst in session.execute(q):
            a = agg[jid]
            a[0] += 1
            if launched is not None and ended is None:
                a[1] += accrued_cost(price, launched, now)
                a[2] += hours_between(launched, now) * gpus
            else:
                a[1] += cost
                a[2] += gh
            a[3] = inst
    return [
        JobRow(
            id=j.id, campaign_id=j.campaign_id, name=j.name, kind=j.kind, task=j.task, status=j.status,
            status_reason=j.status_reason, desired_state=j.desired_state,
            cancel_requested=j.cancel_requested, retry_requested=j.retry_requested,
            members=list(j.members), np_subset=list(j.np_subset), seeds=list(j.seeds),
            depends_on=list(j.depends_on), attempts=agg[j.id][0], current_attempt=j.current_attempt,
            retries=j.retries, recoveries=j.recoveries, max_retries=j.max_retries,
            machine_type=j.machine_type, gpu_type=j.gpu_type, gpu_count=j.gpu_count, spot=j.spot,
            last_heartbeat=j.last_heartbeat, created_at=j.created_at, started_at=j.started_at,
            finished_at=j.finished_at, cost_usd=agg[j.id][1], gpu_hours=agg[j.id][2], instance_id=agg[j.id][3],
        )
        for j in jobs
    ]


def list_jobs(
    campaign_id: int | None = None,
    states: Iterable[str] | None = None,
    kind: str | None = None,
    offset: int = 0,
    limit: int = 50,
    engine: Engine | None = None,
) -> tuple[list[JobRow], int]:
    """One page of the job table (ordered by id) and the total number of matching jobs."""
    conds = []
    if campaign_id is not None:
        conds.append(Job.campaign_id == campaign_id)
    if states:
        conds.append(Job.status.in_([JobStatus(s).value for s in states]))
    if kind is not None:
        conds.append(Job.kind == kind)
    with session_scope(engine) as session:
        total = session.execute(sa.select(sa.func.count()).select_from(Job).where(*conds)).scalar_one()
        jobs = list(session.execute(sa.select(*_JOB_ROW_COLS).where(*conds).order_by(Job.id).offset(offset).limit(limit)))
        return _job_rows(session, jobs), int(total)


def get_job(job_id: int, engine: Engine | None = None) -> JobRow:
    """One job as a `JobRow` (raises NotFound)."""
    with session_scope(engine) as session:
        job = session.execute(sa.select(*_JOB_ROW_COLS).where(Job.id == job_id)).first()
        if job is None:
            raise NotFound(f"no job with id {job_id}")
        return _job_rows(session, [job])[0]


def metric_names(job_id: int | None = None, campaign_id: int | None = None, engine: Engine | None = None) -> list[str]:
    """Distinct metric names of a job or campaign (for the dashboard's selector)."""
    q = sa.select(MetricPoint.name).distinct()
    if job_id is not None:
        q = q.where(MetricPoint.job_id == job_id)
    elif campaign_id is not None:
        q = q.where(MetricPoint.job_id.in_(sa.select(Job.id).where(Job.campaign_id == campaign_id)))
    with session_scope(engine) as session:
        return sorted(session.execute(q).scalars())


def _series_stats(session: Session, conds: list) -> list[tuple[int, str, int, int, int, int]]:
    mp = MetricPoint.__table__.c
    q = (sa.select(mp.job_id, mp.name, mp.member, sa.func.count(), sa.func.min(mp.step), sa.func.max(mp.step))
         .where(*conds).group_by(mp.job_id, mp.name, mp.member))
    return [tuple(r) for r in session.execute(q)]


def _job_series(session: Session, job_id: int, names: list[str] | None) -> list[tuple[str, int]]:
    """The (name, member) series of one job by index seeks (a loose index scan), so finding them
    costs one short query per series instead of a scan over every point of the job."""
    mp = MetricPoint.__table__.c
    found: list[tuple[str, int]] = []
    while True:
        q = sa.select(mp.name, mp.member).where(mp.job_id == job_id)
        if names is not None:
            q = q.where(mp.name.in_(names))
        if found:
            name, member = found[-1]
            # a row-value comparison is an index condition on both SQLite and PostgreSQL
            q = q.where(sa.tuple_(mp.name, mp.member) > sa.tuple_(sa.literal(name), sa.literal(member)))
        row = session.execute(q.order_by(mp.name, mp.member).limit(1)).first()
        if row is None:
            return found
        found.append((row[0], row[1]))


def _trailing_zeros(n: int) -> int:
    return (n & -n).bit_length() - 1 if n > 0 else MAX_STEP_LEVEL


def _series_level(session: Session, key: tuple, max_points: int) -> int | tuple[int, int, int] | None:
    """How to thin one series: None when it fits whole; else the smallest k such that at most
    max_points of its points have level >= k (steps divisible by 2**k); or, when that keeps
    fewer than max_points / 4 (the steps share an odd offset, e.g. 1, 11, 21, ...), a
    (lo, hi, stride) for "every stride-th step from the first one".

    A first guess from the series' first steps (typical spacing) and last step, both index
    seeks; then exact counts of `level >= k`, each an index range of at most ~2 * max_points.
    """
    mp = MetricPoint.__table__.c
    head = list(session.execute(sa.select(mp.step).where(*key).distinct().order_by(mp.step).limit(8)).scalars())
    hi = session.execute(sa.select(mp.step).where(*key).order_by(mp.step.desc()).limit(1)).scalar_one()
    gaps = [b - a for a, b in zip(head, head[1:])]
    spacing = max(1, min(gaps)) if gaps else 1
    n_est = (hi - head[0]) // spacing + 1

    counts: dict[int, int] = {}

    def count(k: int) -> int:
        if k not in counts:
            counts[k] = session.execute(sa.select(sa.func.count()).where(*key, mp.level >= k)).scalar_one()
        return counts[k]

    if n_est <= max_points:  # probably fits: confirm with an exact count (a short range)
        n_est = count(0)
        if n_est <= max_points:
            return None
    k = min(MAX_STEP_LEVEL, _trailing_zeros(spacing) + max(0, math.ceil(math.log2(n_est / max_points))))
    while k < MAX_STEP_LEVEL and count(k) > max_points:
        k += 1
    # one level down keeps about twice as many points: only worth a look if that could fit
    while k > 0 and count(k) <= max_points // 2 and count(k - 1) <= max_points:
        k -= 1
    if count(k) < max_points // 4:
        return head[0], hi, spacing * math.ceil(n_est / max_points)
    return k


def metric_series(
    job_id: int | None = None,
    campaign_id: int | None = None,
    names: Iterable[str] | None = None,
    max_points: int = 2000,
    engine: Engine | None = None,
) -> list[dict[str, Any]]:
    """Metric curves as rows {job_id, attempt_no, member, step, epoch, name, value}, ordered by
    (job, name, member, step, attempt).

    Downsampled in the database, per (job, name, member) series: a series with at most
    max_points points is returned whole; a longer one keeps the points whose step is divisible
    by 2**k, for the smallest k that leaves at most max_points of them (exact index counts; with
    irregular steps it may stay one level coarser), plus its last step. For evenly logged steps that is every 2**j-th point, between max_points / 2 and
    max_points + 1 per curve. Where that would keep fewer than max_points / 4 (steps that
    share an odd offset, such as 1, 11, 21, ...) it keeps every ceil(n / max_points)-th
    logged step from the first instead (a range scan of the series).

    For one job the work is index seeks and ranges over the generated `level` column (trailing
    zero bits of step), so the time grows with the points returned, not with the points stored.
    For a whole campaign, k comes from one aggregate per series (count, first and last step).
    """
    if job_id is None and campaign_id is None:
        raise ValueError("give job_id or campaign_id")
    mp = MetricPoint.__table__.c
    names_l = list(names) if names is not None else None
    max_points = max(int(max_points), 1)
    cols = (mp.job_id, mp.attempt_no, mp.member, mp.step, mp.epoch, mp.name, mp.value)
    keys = [c.name for c in cols]
    order = (mp.step, mp.attempt_no)
    out: list[dict[str, Any]] = []
    with session_scope(engine) as session:
        if job_id is not None:
            for name, member in _job_series(session, job_id, names_l):
                key = (mp.job_id == job_id, mp.name == name, mp.member == member)
                k = _series_level(session, key, max_points)
                q = sa.select(*cols).where(*key)
                if k is None:
                    out += [dict(zip(keys, r)) for r in session.execute(q.order_by(*order)).all()]
                    continue
                if isinstance(k, tuple):
                    lo, hi, stride = k
                    rows = session.execute(
                        q.where(mp.step.between(lo, hi), (mp.step - lo) % stride == 0).order_by(*order)).all()
                else:
                    # read through the level index (SQLite would otherwise walk the primary key to
                    # save a sort, evaluating level on every point); sort the few rows here
                    lq = q.where(mp.level >= k).with_hint(
                        MetricPoint.__table__, "INDEXED BY ix_metric_point_job_id_name_member_level", "sqlite")
                    rows = sorted(session.execute(lq).all(), key=lambda r: (r.step, r.attempt_no))
                last = session.execute(q.order_by(mp.step.desc(), mp.attempt_no.desc()).limit(1)).first()
                if rows and last is not None and last.step > rows[-1].step:
                    rows.append(last)
                out += [dict(zip(keys, r)) for r in rows]
            return out
        conds = [mp.job_id.in_(sa.select(Job.id).where(Job.campaign_id == campaign_id))]
        if names_l is not None:
            conds.append(mp.name.in_(names_l))
        full_order = (mp.job_id, mp.name, mp.member, mp.step, mp.attempt_no)
        stats = _series_stats(session, conds)
        if all(n <= max_points for *_k, n, _lo, _hi in stats):
            return [dict(zip(keys, r)) for r in session.execute(sa.select(*cols).where(*conds).order_by(*full_order)).all()]
        by_job: dict[int, list] = defaultdict(list)
        for jid, name, member, n, lo, hi in stats:
            key = sa.and_(mp.name == name, mp.member == member)
            if n <= max_points:
                by_job[jid].append(key)
                continue
            spacing = max(1, (hi - lo) // max(n - 1, 1))
            k = min(MAX_STEP_LEVEL, _trailing_zeros(spacing) + math.ceil(math.log2(n / max_points)))
            by_job[jid].append(sa.and_(key, sa.or_(mp.level >= k, mp.step == hi)))
        for jid in sorted(by_job):  # one primary-key range per job: job_id = ? AND (series ...)
            q = sa.select(*cols).where(mp.job_id == jid, sa.or_(*by_job[jid])).order_by(*full_order)
            out += [dict(zip(keys, r)) for r in session.execute(q).all()]
    return out


def resource_series(
    job_id: int | None = None,
    campaign_id: int | None = None,
    max_points: int = 2000,
    engine: Engine | None = None,
) -> list[dict[str, Any]]:
    """Resource samples as rows {job_id, attempt_no, time, cpu_percent, rss_bytes, gpus,
    gpu_util_mean, gpu_memory_bytes, gpu_power_w}, time-ordered, thinned to ~max_points per job."""
    if job_id is None and campaign_id is None:
        raise ValueError("give job_id or campaign_id")
    rs = ResourceSample.__table__.c
    cond = rs.job_id == job_id if job_id is not None else rs.job_id.in_(
        sa.select(Job.id).where(Job.campaign_id == campaign_id))
    rn = sa.func.row_number().over(partition_by=rs.job_id, order_by=(rs.time, rs.attempt_no)).label("rn")
    cnt = sa.func.count().over(partition_by=rs.job_id).label("cnt")
    inner = sa.select(rs.job_id, rs.attempt_no, rs.time, rs.cpu_percent, rs.rss_bytes, rs.gpus, rn, cnt).where(cond).subquery()
    max_points = max(int(max_points), 1)
    stride = (inner.c.cnt + (max_points - 1)) // max_points
    q = (sa.select(inner.c.job_id, inner.c.attempt_no, inner.c.time, inner.c.cpu_percent, inner.c.rss_bytes, inner.c.gpus)
         .where(sa.or_(inner.c.cnt <= max_points, (inner.c.rn - 1) % stride == 0, inner.c.rn == inner.c.cnt))
         .order_by(inner.c.job_id, inner.c.time))
    out = []
    with session_scope(engine) as session:
        for r in session.execute(q):
            d = dict(r._mapping)
            gpus = list(d["gpus"] or [])
            utils = [g.get("util_percent") for g in gpus if g.get("util_percent") is not None]
            d["gpu_util_mean"] = sum(utils) / len(utils) if utils else None
            d["gpu_memory_bytes"] = sum(g.get("memory_bytes") or 0 for g in gpus) if gpus else None
            d["gpu_power_w"] = sum(g.get("power_w") or 0.0 for g in gpus) if gpus else None
            out.append(d)
    return out


_GROUP_KEYS = ("campaign", "day", "machine", "gpu", "spot", "kind", "job")


def cost_summary(group_by: Sequence[str] = ("campaign",), engine: Engine | None = None,
                 campaign_id: int | None = None) -> list[dict[str, Any]]:
    """GPU-hours and cost over attempts, grouped by any of campaign, day (launch date, UTC),
    machine, gpu, spot, kind, job. Closed attempts are summed in SQL; open ones accrue to now.

    Each row: the group keys (campaign also gives campaign_name), attempts, hours, gpu_hours, cost.
    """
    bad = [g for g in group_by if g not in _GROUP_KEYS]
    if bad:
        raise ValueError(f"unknown group_by key(s) {bad}; allowed: {', '.join(_GROUP_KEYS)}")
    a, j, c = Attempt.__table__.c, Job.__table__.c, Campaign.__table__.c
    cols = {
        "campaign": [j.campaign_id.label("campaign"), c.name.label("campaign_name")],
        "day": [sa.func.date(a.launched_at).label("day")],
        "machine": [a.machine_type.label("machine")],
        "gpu": [a.gpu_type.label("gpu")],
        "spot": [a.spot.label("spot")],
        "kind": [j.kind.label("kind")],
        "job": [a.job_id.label("job")],
    }
    keys = [col for g in group_by for col in cols[g]]
    src = sa.join(Attempt.__table__, Job.__table__, j.id == a.job_id).join(Campaign.__table__, c.id == j.campaign_id)
    base_cond = [a.launched_at.is_not(None)]
    if campaign_id is not None:
        base_cond.append(j.campaign_id == campaign_id)
    now = utcnow()
    out: dict[tuple, dict[str, Any]] = {}

    def slot(mapping: Mapping[str, Any]) -> dict[str, Any]:
        key = tuple(str(mapping[k.name]) if k.name == "day" and mapping[k.name] is not None else mapping[k.name] for k in keys)
        if key not in out:
            out[key] = {**{k.name: v for k, v in zip(keys, key)}, "attempts": 0, "hours": 0.0, "gpu_hours": 0.0, "cost": 0.0}
        return out[key]

    closed = (sa.select(*keys, sa.func.count().label("n"), sa.func.sum(a.cost_usd).label("cost"),
                        sa.func.sum(a.gpu_hours).label("gh"),
                        sa.func.sum(sa.case((a.price_per_hour > 0, a.cost_usd / a.price_per_hour), else_=0.0)).label("h"))
              .select_from(src).where(*base_cond, a.ended_at.is_not(None)))
    if keys:
        closed = closed.group_by(*keys)
    with session_scope(engine) as session:
        for r in session.execute(closed):
            m = r._mapping
            if not m["n"]:
                continue
            s = slot(m)
            s["attempts"] += m["n"]
            s["cost"] += m["cost"] or 0.0
            s["gpu_hours"] += m["gh"] or 0.0
            s["hours"] += m["h"] or 0.0
        live = sa.select(*keys, a.launched_at, a.price_per_hour, a.gpu_count, a.ended_at).select_from(src).where(
            *base_cond, a.ended_at.is_(None))
        for r in session.execute(live):
            m = r._mapping
            s = slot(m)
            h = hours_between(m["launched_at"], now)
            s["attempts"] += 1
            s["hours"] += h
            s["gpu_hours"] += h * m["gpu_count"]
            s["cost"] += h * m["price_per_hour"]
    return sorted(out.values(), key=lambda d: tuple((v is None, str(v)) for v in list(d.values())[: len(keys)]))


def fit_results(campaign_id: int, engine: Engine | None = None) -> list[dict[str, Any]]:
    """Results of the campaign's fit / impacts / scan / toys jobs: {job_id, job_name, kind,
    mu_hat, sigma, payload, created_at}, in job order."""
    q = (select(FitResult, Job.name).join(Job, Job.id == FitResult.job_id)
         .where(FitResult.campaign_id == campaign_id, FitResult.kind.in_(FIT_KINDS)).order_by(FitResult.job_id))
    with session_scope(engine) as session:
        return [
            {"job_id": f.job_id, "job_name": name, "kind": f.kind, "mu_hat": f.mu_hat, "sigma": f.sigma,
             "payload": dict(f.payload), "created_at": f.created_at}
            for f, name in session.exec(q)
        ]


def campaign_diagnostics(campaign_id: int, engine: Engine | None = None) -> dict[str, dict[str, Any]]:
    """{ratio task: diagnostics} from the recorded results of the campaign's train jobs.

    Each task maps to the "diagnostics" of its first finished job that reported some (lowest
    grid index, then lowest members), plus "jobs": every job id of the task with a result.
    Empty until train results are recorded (`jobs_repo.record_job_result`).
    """
    q = (sa.select(Job.id, Job.task, Job.members, Job.spec, FitResult.payload)
         .join(FitResult, FitResult.job_id == Job.id)
         .where(Job.campaign_id == campaign_id, Job.kind == "train").order_by(Job.id))
    out: dict[str, dict[str, Any]] = {}
    with session_scope(engine) as session:
        rows = session.execute(q).all()
    rows.sort(key=lambda r: ((r.spec or {}).get("params", {}).get("grid_index", 0), list(r.members or []), r.id))
    have_diag: set[str] = set()
    for r in rows:
        task = r.task or f"job {r.id}"
        entry = out.setdefault(task, {"jobs": []})
        entry["jobs"].append(r.id)
        diag = (r.payload or {}).get("diagnostics")
        if isinstance(diag, Mapping) and task not in have_diag:
            entry.update({k: v for k, v in diag.items() if k != "jobs"})
            have_diag.add(task)
    return out


def job_events(job_id: int, engine: Engine | None = None) -> list[dict[str, Any]]:
    """The audit trail of one job, oldest first."""
    with session_scope(engine) as session:
        return [_event_dict(e) for e in session.exec(
            select(Event).where(Event.job_id == job_id).order_by(Event.time, Event.id))]
