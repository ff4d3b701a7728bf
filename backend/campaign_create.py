"""Creating a campaign: its row, its jobs and their DAG edges, in one transaction.

`create_campaign` is the whole step for a campaign config; `add_campaign` and `insert_plans`
are its parts, shared with the analysis campaigns (`backend.analysis.campaign`) and new fit
runs (`backend.fit_starts`).
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from backend.campaigns import CampaignConfig, JobPlan, expand, validate_config
from backend.cost_view import estimate_plans
from backend.db.engine import session_scope
from backend.db.models import Campaign, Event, Job, JobDependency, saved_id
from backend.states import CampaignStatus, DesiredState, JobStatus, utcnow


def code_version() -> str:
    """git describe of the checkout if there is one, else the package version."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
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


def add_campaign(
    session: Session,
    cfg: CampaignConfig,
    *,
    owner: str,
    estimate_gpu_hours: float,
    estimate_cost_usd: float,
    now: datetime,
) -> Campaign:
    """Add the CREATED campaign row of `cfg` and flush it (so it has its id)."""
    backend = cfg.backend
    camp = Campaign(
        name=cfg.name,
        description=cfg.data.get("description", ""),
        config=cfg.data,
        config_hash=cfg.config_hash,
        code_version=cfg.data.get("code_version") or code_version(),
        owner=owner,
        status=CampaignStatus.CREATED,
        launcher=backend["launcher"],
        budget_usd=backend["budget_usd"],
        max_concurrency=backend["max_concurrency"],
        retry_limit=backend["retry_limit"],
        estimate_gpu_hours=estimate_gpu_hours,
        estimate_cost_usd=estimate_cost_usd,
        created_at=now,
        updated_at=now,
    )
    session.add(camp)
    session.flush()
    return camp


def _job_row_values(
    camp_id: int, p: Any, backend: Mapping[str, Any], est_hours: float, desired: str, now: datetime
) -> dict[str, Any]:
    return {
        "campaign_id": camp_id,
        "name": p.name,
        "kind": p.kind,
        "task": p.task,
        "members": list(p.members),
        "np_subset": list(p.np_subset),
        "seeds": list(p.seeds),
        "depends_on": [],
        "spec": p.spec,
        "uri": None,
        "status": JobStatus.PENDING.value,
        "status_reason": "created",
        "desired_state": desired,
        "cancel_requested": False,
        "retry_requested": False,
        "current_attempt": 0,
        "retries": 0,
        "recoveries": 0,
        "max_retries": backend["retry_limit"],
        "priority": p.priority,
        "launcher": backend["launcher"],
        "machine_type": p.machine_type,
        "gpu_type": p.gpu_type,
        "gpu_count": p.gpu_count,
        "spot": p.spot,
        "zones": list(backend["zones"]),
        "est_hours": est_hours,
        "created_at": now,
        "updated_at": now,
        "started_at": None,
        "finished_at": None,
        "last_heartbeat": None,
    }


def insert_plans(
    session: Session,
    camp_id: int,
    plans: Sequence[JobPlan],
    backend: Mapping[str, Any],
    est_hours: Mapping[str, float],
    desired: str,
    now: datetime,
) -> dict[str, int]:
    """Bulk-insert job plans and their DAG edges; `depends_on` names may also name jobs that
    already exist in the campaign. Returns name -> id for every job of the campaign."""
    conn = session.connection()
    if plans:
        conn.execute(
            sa.insert(Job.__table__),
            [_job_row_values(camp_id, p, backend, est_hours[p.name], desired, now) for p in plans],
        )
    rows = conn.execute(
        sa.select(col(Job.name), col(Job.id)).where(col(Job.campaign_id) == camp_id)
    ).all()
    ids = cast(dict[str, int], dict(rows))  # (ids of stored rows: never NULL)
    edges = [{"job_id": ids[p.name], "depends_on_id": ids[d]} for p in plans for d in p.depends_on]
    if edges:
        conn.execute(sa.insert(JobDependency.__table__), edges)
    updates = [
        {
            "_id": ids[p.name],
            "_deps": [ids[d] for d in p.depends_on],
            "_spec": {
                **p.spec,
                "job_id": ids[p.name],
                "depends_on": {d: ids[d] for d in p.depends_on},
            },
        }
        for p in plans
        if p.depends_on
    ]
    if updates:
        t = Job.__table__
        conn.execute(
            sa.update(t)
            .where(t.c.id == sa.bindparam("_id"))
            .values(
                depends_on=sa.bindparam("_deps", type_=t.c.depends_on.type),
                spec=sa.bindparam("_spec", type_=t.c.spec.type),
            ),
            updates,
        )
    return ids


def create_campaign(
    config: Mapping[str, Any] | CampaignConfig,
    *,
    owner: str = "local",
    engine: Engine | None = None,
) -> int:
    """Validate `config`, store the campaign and its jobs (PENDING, desired HOLD) with their DAG
    edges, all in one transaction; returns the campaign id. Nothing is written if the config
    is invalid (`CampaignConfigError`) or any insert fails."""
    cfg = validate_config(config)
    plans = expand(cfg)
    estimate = estimate_plans(plans, cfg.region)
    now = utcnow()
    with session_scope(engine) as session:
        camp = add_campaign(
            session,
            cfg,
            owner=owner,
            estimate_gpu_hours=estimate.gpu_hours,
            estimate_cost_usd=estimate.cost,
            now=now,
        )
        camp_id = saved_id(camp)
        insert_plans(
            session,
            camp_id,
            plans,
            cfg.backend,
            {j.name: j.hours for j in estimate.per_job},
            DesiredState.HOLD.value,
            now,
        )
        session.add(
            Event(
                campaign_id=camp_id,
                time=now,
                from_state=None,
                to_state=CampaignStatus.CREATED,
                reason=f"created with {len(plans)} jobs",
                actor=owner,
                detail={"config_hash": cfg.config_hash},
            )
        )
        return camp_id
