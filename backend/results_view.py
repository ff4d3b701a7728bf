"""The recorded results of a campaign's jobs: fit-stage results (fit, impacts, scan, toys)
and the train jobs' ensemble diagnostics per ratio task, as plain dicts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from backend.db.engine import session_scope
from backend.db.models import FIT_KINDS, FitResult, Job


def fit_results(campaign_id: int, engine: Engine | None = None) -> list[dict[str, Any]]:
    """Results of the campaign's fit / impacts / scan / toys jobs: {job_id, job_name, kind,
    mu_hat, sigma, payload, created_at}, in job order."""
    q = (
        select(FitResult, Job.name)
        .join(Job, col(Job.id) == FitResult.job_id)
        .where(FitResult.campaign_id == campaign_id, col(FitResult.kind).in_(FIT_KINDS))
        .order_by(col(FitResult.job_id))
    )
    with session_scope(engine) as session:
        return [
            {
                "job_id": f.job_id,
                "job_name": name,
                "kind": f.kind,
                "mu_hat": f.mu_hat,
                "sigma": f.sigma,
                "payload": dict(f.payload),
                "created_at": f.created_at,
            }
            for f, name in session.exec(q)
        ]


def campaign_diagnostics(
    campaign_id: int, engine: Engine | None = None
) -> dict[str, dict[str, Any]]:
    """{ratio task: diagnostics} from the recorded results of the campaign's train jobs.

    Each task maps to the "diagnostics" of its first finished job that reported some (lowest
    grid index, then lowest members), plus "jobs": every job id of the task with a result.
    Empty until train results are recorded (`jobs_repo.record_job_result`).
    """
    q = (
        sa.select(
            col(Job.id), col(Job.task), col(Job.members), col(Job.spec), col(FitResult.payload)
        )
        .join(FitResult, col(FitResult.job_id) == Job.id)
        .where(col(Job.campaign_id) == campaign_id, col(Job.kind) == "train")
        .order_by(col(Job.id))
    )
    out: dict[str, dict[str, Any]] = {}
    with session_scope(engine) as session:
        rows = session.execute(q).all()
    rows = sorted(
        rows,
        key=lambda r: (
            (r.spec or {}).get("params", {}).get("grid_index", 0),
            list(r.members or []),
            r.id,
        ),
    )
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
