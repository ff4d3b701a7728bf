"""A campaign's row as the service modules use it: the lookup that raises `NotFound`, the
`IntentError` of an intent that does not apply, and campaign-level `Event` rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from backend.db.models import Campaign, Event


class NotFound(LookupError):
    """No campaign / job with the given id."""


class IntentError(ValueError):
    """An intent that does not apply to the campaign's current status."""


def campaign_or_raise(session: Session, campaign_id: int) -> Campaign:
    c = session.get(Campaign, campaign_id)
    if c is None:
        raise NotFound(f"no campaign with id {campaign_id}")
    return c


def add_campaign_event(
    session: Session,
    c: Campaign,
    to_state: str,
    reason: str,
    actor: str,
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> None:
    """Queue the campaign-level Event of `c` moving from its current status to `to_state`
    (call before changing `c.status`)."""
    session.add(
        Event(
            campaign_id=c.id,
            time=now,
            from_state=c.status,
            to_state=to_state,
            reason=reason,
            actor=actor,
            detail=detail or {},
        )
    )


def event_dict(e: Event) -> dict[str, Any]:
    """An Event row as a plain dict (safe to keep after the session closes)."""
    return {
        "id": e.id,
        "campaign_id": e.campaign_id,
        "job_id": e.job_id,
        "attempt_no": e.attempt_no,
        "time": e.time,
        "from_state": e.from_state,
        "to_state": e.to_state,
        "reason": e.reason,
        "actor": e.actor,
        "detail": dict(e.detail or {}),
    }
