"""New fit runs on a campaign's trained ensembles: `start_fit` adds a fit job (and optional
impacts / scan / toys jobs) that waits for every training job."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import pydantic
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col

from backend.analysis.spec_check import fit_job_stage_settings
from backend.analysis.spec_models import IN_FIT_JOB
from backend.campaign_create import insert_plans
from backend.campaign_rows import IntentError, add_campaign_event, campaign_or_raise
from backend.campaigns import expand, validate_config
from backend.cost_view import estimate_plans
from backend.db.engine import session_scope
from backend.db.models import FIT_KINDS, Job
from backend.states import CampaignStatus, DesiredState, utcnow


def _fit_job_stage(stage: str, block: Any, raw: Mapping[str, Any]) -> dict[str, Any]:
    """A request's ``limits`` / ``expected`` settings, resolved as an analysis file's are
    (`spec_check.fit_job_stage_settings`); a problem is a ValueError naming the key."""
    if block is True:
        block = {}
    if not isinstance(block, Mapping):
        raise ValueError(f"start_fit: {stage}: expected true/false or a mapping, got {block!r}")
    fit = raw.get("fit") or {}
    pois = fit.get("pois") or ({"mu": fit["poi"]} if fit.get("poi") else {})
    first = next(iter(pois.values()), None) or {}
    ends = first.get("bounds")
    bounds = (float(ends[0]), float(ends[1])) if ends else None
    try:
        settings, problems = fit_job_stage_settings(stage, {"enabled": True, **block}, bounds)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ValueError(f"start_fit: {stage}.{key}: {err['msg']}") from None
    if problems:
        key, message = problems[0]
        raise ValueError(f"start_fit: {stage}.{key}: {message}")
    return settings


def start_fit(
    campaign_id: int,
    request: Mapping[str, Any],
    engine: Engine | None = None,
    *,
    actor: str = "user",
) -> list[int]:
    """Add a new fit run (a fit job plus optional impacts / scan / toys jobs) on the campaign's
    trained ensembles; returns the new job ids.

    request keys (all optional): steps (subset of fit, impacts, scan, toys; a fit is always
    included because the others start from it), data ("asimov", "observed" or a sample spec),
    mu_true, scan {"low", "high", "points"} or poi_values, points_per_job, toys (count),
    toys_per_job, nps_per_job, limits {cl, method, toys, seed} and expected {mu} (computed in
    the fit job, as compute.limits / compute.expected of an analysis file; a false value turns
    off what the campaign config asks). The new fit waits for every training job; the new jobs
    launch once the campaign is launched (a finished campaign is reopened as ACTIVE).
    """
    steps = set(request.get("steps") or FIT_KINDS) | {"fit"}
    bad = sorted(steps - set(FIT_KINDS))
    if bad:
        raise ValueError(f"start_fit: steps: unknown {bad}; allowed: {', '.join(FIT_KINDS)}")
    now = utcnow()
    with session_scope(engine) as session:
        c = campaign_or_raise(session, campaign_id)
        if c.status in (CampaignStatus.CANCELLING, CampaignStatus.CANCELLED):
            raise IntentError(
                f"campaign {campaign_id} is {c.status}; a new fit needs a campaign that is not cancelled"
            )
        raw = json.loads(json.dumps(c.config))
        mu_true = float(request.get("mu_true", raw["fit"].get("mu_true", 1.0)))
        data = request.get("data", "asimov")
        if data == "observed":
            data = raw["fit"].get("data")
            if not isinstance(data, Mapping):
                if all("demo" in spec for spec in raw["processes"].values()):
                    data = {
                        "demo": {
                            "mu": mu_true,
                            "seed": 20_000 + len(FIT_KINDS) * campaign_id,
                            "poisson": True,
                        }
                    }
                else:
                    raise ValueError(
                        "start_fit: data 'observed': the campaign config has no observed sample "
                        "(set fit.data to a sample spec)"
                    )
        raw["fit"].update(enabled=True, data=data, mu_true=mu_true)
        options = dict(raw["fit"].get("options") or {})
        for stage in IN_FIT_JOB:
            if stage in request:
                options.pop(stage, None)
                if request[stage]:
                    options[stage] = _fit_job_stage(stage, request[stage], raw)
        raw["fit"]["options"] = options
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
        existing = dict(
            session.execute(
                sa.select(col(Job.name), col(Job.kind)).where(col(Job.campaign_id) == campaign_id)
            ).all()
        )
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
        est = {p.name: p.est_hours for p in plans}
        desired = (
            DesiredState.RUN.value if c.launch_requested_at is not None else DesiredState.HOLD.value
        )
        ids = insert_plans(session, campaign_id, plans, cfg.backend, est, desired, now)
        added = estimate_plans(plans, cfg.region)
        c.estimate_cost_usd += added.cost
        c.estimate_gpu_hours += added.gpu_hours
        detail = {
            "run": run,
            "jobs": [p.name for p in plans],
            "data": "asimov" if data == "asimov" else "sample",
        }
        if (
            c.status in (CampaignStatus.SUCCEEDED, CampaignStatus.FAILED)
            and desired == DesiredState.RUN.value
        ):
            add_campaign_event(
                session, c, CampaignStatus.ACTIVE, f"fit run {run} added", actor, now, detail
            )
            c.status = CampaignStatus.ACTIVE
        else:
            add_campaign_event(session, c, c.status, f"fit run {run} added", actor, now, detail)
        c.updated_at = now
        session.add(c)
        return [ids[p.name] for p in plans]
