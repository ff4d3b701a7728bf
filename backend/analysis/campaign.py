"""An analysis file's campaign: its jobs keyed by content, created reusing earlier results.

The steps, each a function here, in order:

    expand_jobs(cfg)           the job plans of the validated campaign config
    key_jobs(jobs, analysis)   every job's content key (`backend.analysis.cache`) and the
                               analysis provenance, written into its spec
    insert_campaign(jobs)      the campaign and its jobs in one transaction; a job whose key
                               matches an earlier SUCCEEDED job (artifacts still there) is
                               created SUCCEEDED with that job's result, so only the rest runs

`create_campaign_from_analysis` is the three in a row; `backend.analysis.run.run_analysis`
calls them one by one between loading the file and driving the campaign. The rest reads or
previews such campaigns (`analysis_plan`, `campaign_analysis`) or starts from a file path
(`create_campaign_from_analysis_file`, `analysis_file_problems`: the dashboard's calls).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlmodel import col, select

from backend.analysis import cache
from backend.analysis.spec import load_analysis, validate_analysis
from backend.campaign_create import add_campaign, insert_plans
from backend.campaign_rows import campaign_or_raise
from backend.campaigns import CampaignConfig, JobPlan, expand, validate_config
from backend.cost_view import estimate_plans
from backend.db.engine import session_scope
from backend.db.migrate import current_revision, head_revision
from backend.db.models import Event, saved_id
from backend.intents import request_launch
from backend.settings import get_settings
from backend.states import CampaignStatus, DesiredState, utcnow


@dataclass(frozen=True)
class AnalysisJobs:
    """An analysis campaign's jobs between the steps: the validated config, its job plans
    (every job after the jobs it depends on) and, once keyed, each job's content key and the
    analysis provenance (name, path, file_hash; plain values only)."""

    config: CampaignConfig
    plans: tuple[JobPlan, ...]
    keys: Mapping[str, str] | None = None  # job name -> content key; None until key_jobs
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class CreatedCampaign:
    """What `insert_campaign` made: the campaign and the jobs that reuse earlier results."""

    campaign_id: int
    reused: tuple[str, ...]  # names of the jobs created SUCCEEDED from an earlier job, sorted


def expand_jobs(cfg: CampaignConfig) -> AnalysisJobs:
    """The job plans of a validated campaign config (`backend.campaigns.expand`)."""
    return AnalysisJobs(cfg, tuple(expand(cfg)))


def key_jobs(jobs: AnalysisJobs, analysis: Mapping[str, Any] | None = None) -> AnalysisJobs:
    """Each job's content key in ``spec["cache_key"]`` and the analysis provenance in
    ``spec["analysis"]``. Reads every sample file a job names (its checksum is part of the
    key); raises `CacheKeyError` naming a file that cannot be read."""
    keys = cache.plan_keys(jobs.plans)
    prov = {
        k: v
        for k, v in dict(analysis or {}).items()
        if isinstance(v, (str, int, float, bool)) or v is None
    }
    plans = tuple(
        dataclasses.replace(
            p, spec={**p.spec, "cache_key": keys[p.name], **({"analysis": prov} if prov else {})}
        )
        for p in jobs.plans
    )
    return dataclasses.replace(jobs, plans=plans, keys=keys, provenance=prov)


def insert_campaign(
    jobs: AnalysisJobs, *, owner: str = "local", reuse: bool = True, engine: Engine | None = None
) -> CreatedCampaign:
    """Store the campaign of keyed `jobs` (`key_jobs`), reusing earlier results.

    Like `backend.campaign_create.create_campaign`, plus: with ``reuse`` each job whose key
    matches a SUCCEEDED job whose artifacts still exist is created SUCCEEDED with that job's
    result (``spec["cached_from"]``, an Event 'cached'). The creation Event's detail records
    the analysis provenance and which jobs were reused. The cost estimate counts only jobs
    that will run. One transaction: nothing is written if anything fails.
    """
    if jobs.keys is None:
        raise ValueError("insert_campaign: the jobs have no content keys yet (call key_jobs first)")
    cfg, keys = jobs.config, jobs.keys
    estimate = estimate_plans(jobs.plans, cfg.region)
    hours = {j.name: j.hours for j in estimate.per_job}
    now = utcnow()
    with session_scope(engine) as session:
        sources = cache.find_sources(session, keys.values()) if reuse else {}
        reused = {p.name for p in jobs.plans if keys[p.name] in sources}
        cost = sum(j.cost for j in estimate.per_job if j.name not in reused)
        gpu_h = sum(j.gpu_hours for j in estimate.per_job if j.name not in reused)
        camp = add_campaign(
            session, cfg, owner=owner, estimate_gpu_hours=gpu_h, estimate_cost_usd=cost, now=now
        )
        camp_id = saved_id(camp)
        ids = insert_plans(
            session, camp_id, jobs.plans, cfg.backend, hours, DesiredState.HOLD.value, now
        )
        session.add(
            Event(
                campaign_id=camp_id,
                time=now,
                from_state=None,
                to_state=CampaignStatus.CREATED,
                reason=f"created from analysis with {len(jobs.plans)} jobs, {len(reused)} reused",
                actor=owner,
                detail={
                    "config_hash": cfg.config_hash,
                    "analysis": dict(jobs.provenance),
                    "engine_version": cache.engine_version(),
                    "reused": sorted(reused),
                },
            )
        )
        session.flush()
        cache.mark_cached(session, ids, keys, sources, actor=owner, now=now)
        return CreatedCampaign(camp_id, tuple(sorted(reused)))


def create_campaign_from_analysis(
    config: Mapping[str, Any] | CampaignConfig,
    *,
    analysis: Mapping[str, Any] | None = None,
    owner: str = "local",
    reuse: bool = True,
    engine: Engine | None = None,
) -> int:
    """Create a campaign from an analysis file's campaign config, reusing earlier results:
    `expand_jobs`, `key_jobs` (``analysis``: name, path, file_hash) and `insert_campaign`;
    returns the campaign id."""
    jobs = key_jobs(expand_jobs(validate_config(config)), analysis)
    return insert_campaign(jobs, owner=owner, reuse=reuse, engine=engine).campaign_id


def analysis_plan(
    config: Mapping[str, Any] | CampaignConfig, engine: Engine | None = None
) -> dict[str, Any]:
    """What creating this analysis campaign would do, without writing anything: n_jobs, jobs
    per kind, and the names of the jobs an earlier SUCCEEDED job would stand in for
    ("reused"; None when the database is not set up yet)."""
    jobs = key_jobs(expand_jobs(validate_config(config)))
    plans, keys = jobs.plans, jobs.keys or {}
    kinds: dict[str, int] = {}
    for p in plans:
        kinds[p.kind] = kinds.get(p.kind, 0) + 1
    reused = None
    if engine is None:  # do not create an empty SQLite file just to find nothing in it
        u = make_url(get_settings().database_url)
        if (
            u.get_backend_name() == "sqlite"
            and u.database
            and not Path(u.database).expanduser().exists()
        ):
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
    return [str(p) for p in validate_analysis(path, check_data=False)]


def create_campaign_from_analysis_file(
    path: str | Path,
    *,
    owner: str = "dashboard",
    launch: bool = False,
    reuse: bool = True,
    engine: Engine | None = None,
) -> int:
    """Validate an analysis file (static checks) and create its campaign, reusing earlier
    results; optionally request the launch. Raises `AnalysisError` (with `.problems`) and
    writes nothing when the file has problems. The controller carries the campaign; the
    report folder is what `nsbi analysis run` writes, not this."""
    a = load_analysis(path, check_data=False)
    cid = create_campaign_from_analysis(
        a.campaign_config(),
        owner=owner,
        reuse=reuse,
        engine=engine,
        analysis={"name": a.name, "path": str(a.path), "file_hash": a.file_hash},
    )
    if launch:
        request_launch(cid, engine=engine, actor=owner)
    return cid


def campaign_analysis(campaign_id: int, engine: Engine | None = None) -> dict[str, Any]:
    """The analysis provenance of a campaign made by `create_campaign_from_analysis` ({} if
    it was not): {"analysis": {name, path, file_hash}, "config_hash", "engine_version", "reused"}."""
    with session_scope(engine) as session:
        campaign_or_raise(session, campaign_id)
        ev = session.exec(
            select(Event)
            .where(
                Event.campaign_id == campaign_id,
                col(Event.job_id).is_(None),
                col(Event.from_state).is_(None),
            )
            .order_by(col(Event.id))
            .limit(1)
        ).first()
        detail = dict(ev.detail or {}) if ev is not None else {}
        return detail if "analysis" in detail else {}
