"""Intents on a campaign's jobs: launch, cancel, retry.

Writes here are *intents* only (launch requested, cancel requested, retry requested), each
with its Event rows; the controller acts on them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import col

from backend.campaign_rows import IntentError, add_campaign_event, campaign_or_raise
from backend.db.engine import session_scope
from backend.db.models import Campaign, Event, Job
from backend.states import CampaignStatus, DesiredState, JobStatus, utcnow


def request_launch(campaign_id: int, engine: Engine | None = None, *, actor: str = "user") -> int:
    """Intent: let the controller launch this campaign's jobs. Marks PENDING jobs desired RUN
    and the campaign ACTIVE; returns how many jobs were marked."""
    now = utcnow()
    with session_scope(engine) as session:
        c = campaign_or_raise(session, campaign_id)
        if c.status not in (CampaignStatus.CREATED, CampaignStatus.ACTIVE):
            raise IntentError(
                f"campaign {campaign_id} is {c.status}; only CREATED or ACTIVE campaigns can be launched"
            )
        # (an UPDATE's result is a CursorResult; sqlmodel's Session.execute is typed Result)
        n = cast(
            sa.CursorResult,
            session.execute(
                sa.update(Job)
                .where(
                    col(Job.campaign_id) == campaign_id,
                    col(Job.status) == JobStatus.PENDING,
                    col(Job.cancel_requested).is_(False),
                )
                .values(desired_state=DesiredState.RUN, updated_at=now)
            ),
        ).rowcount
        add_campaign_event(
            session, c, CampaignStatus.ACTIVE, "launch requested", actor, now, {"jobs": n}
        )
        c.status = CampaignStatus.ACTIVE
        c.launch_requested_at = c.launch_requested_at or now
        c.updated_at = now
        session.add(c)
        return int(n)


def _select_jobs(
    campaign_id: int | None, job_ids: Iterable[int] | None
) -> list[sa.ColumnElement[bool]]:
    if campaign_id is None and job_ids is None:
        raise ValueError("give campaign_id or job_ids")
    conds = []
    if campaign_id is not None:
        conds.append(col(Job.campaign_id) == campaign_id)
    if job_ids is not None:
        conds.append(col(Job.id).in_(list(job_ids)))
    return conds


def request_cancel(
    campaign_id: int | None = None,
    job_ids: Iterable[int] | None = None,
    engine: Engine | None = None,
    *,
    actor: str = "user",
) -> int:
    """Intent: stop these jobs (all of a campaign's, or the given ones). Sets cancel_requested
    on jobs not yet final; the controller stops machines and marks them CANCELLED."""
    now = utcnow()
    with session_scope(engine) as session:
        if campaign_id is not None:
            c = campaign_or_raise(session, campaign_id)
        conds = _select_jobs(campaign_id, job_ids)
        final = [JobStatus.SUCCEEDED, JobStatus.CANCELLED]
        ids = list(
            session.execute(
                sa.select(col(Job.id)).where(*conds, col(Job.status).not_in(final))
            ).scalars()
        )
        if ids:
            session.execute(
                sa.update(Job)
                .where(col(Job.id).in_(ids))
                .values(cancel_requested=True, retry_requested=False, updated_at=now)
            )
            session.execute(
                sa.insert(Event.__table__),
                [
                    {
                        "campaign_id": cid,
                        "job_id": jid,
                        "time": now,
                        "to_state": "CANCEL_REQUESTED",
                        "reason": "cancel requested",
                        "actor": actor,
                        "detail": {},
                    }
                    for jid, cid in session.execute(
                        sa.select(col(Job.id), col(Job.campaign_id)).where(col(Job.id).in_(ids))
                    )
                ],
            )
        if campaign_id is not None and c.status not in (
            CampaignStatus.SUCCEEDED,
            CampaignStatus.CANCELLED,
        ):
            add_campaign_event(
                session,
                c,
                CampaignStatus.CANCELLING,
                "cancel requested",
                actor,
                now,
                {"jobs": len(ids)},
            )
            c.status = CampaignStatus.CANCELLING
            c.cancel_requested_at = now
            c.updated_at = now
            session.add(c)
        return len(ids)


def request_retry(
    campaign_id: int | None = None,
    job_ids: Iterable[int] | None = None,
    engine: Engine | None = None,
    *,
    actor: str = "user",
) -> int:
    """Intent: retry FAILED jobs (beyond the automatic retry limit if need be). Sets
    retry_requested and desired RUN; reopens a FAILED campaign as ACTIVE."""
    now = utcnow()
    with session_scope(engine) as session:
        if campaign_id is not None:
            campaign_or_raise(session, campaign_id)  # NotFound for an unknown campaign
        conds = _select_jobs(campaign_id, job_ids)
        ids = list(
            session.execute(
                sa.select(col(Job.id)).where(*conds, col(Job.status) == JobStatus.FAILED)
            ).scalars()
        )
        if ids:
            session.execute(
                sa.update(Job)
                .where(col(Job.id).in_(ids))
                .values(
                    retry_requested=True,
                    desired_state=DesiredState.RUN,
                    cancel_requested=False,
                    updated_at=now,
                )
            )
            rows = list(
                session.execute(
                    sa.select(col(Job.id), col(Job.campaign_id)).where(col(Job.id).in_(ids))
                )
            )
            session.execute(
                sa.insert(Event.__table__),
                [
                    {
                        "campaign_id": cid,
                        "job_id": jid,
                        "time": now,
                        "to_state": "RETRY_REQUESTED",
                        "reason": "retry requested",
                        "actor": actor,
                        "detail": {},
                    }
                    for jid, cid in rows
                ],
            )
            for cid in {cid for _, cid in rows}:
                camp = session.get_one(Campaign, cid)  # (the job's campaign)
                if camp.status in (
                    CampaignStatus.FAILED,
                    CampaignStatus.CANCELLED,
                    CampaignStatus.CANCELLING,
                ):
                    add_campaign_event(
                        session, camp, CampaignStatus.ACTIVE, "retry requested", actor, now
                    )
                    camp.status = CampaignStatus.ACTIVE
                    camp.updated_at = now
                    session.add(camp)
        return len(ids)
