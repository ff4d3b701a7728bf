"""The budget rule: may the controller launch one more job of a campaign?

Used by the controller's launch pass (`backend.controller`) and shown to users with the
campaign (`backend.listings.get_campaign`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from backend.campaign_rows import campaign_or_raise
from backend.campaigns import config_region
from backend.cost_view import campaign_costs
from backend.costs import hours_between, load_catalogue
from backend.db.engine import session_scope
from backend.db.models import Attempt, Job
from backend.states import JobStatus, utcnow


@dataclass(frozen=True)
class BudgetDecision:
    """Whether the controller may launch one more job of a campaign, and why (shown to users)."""

    allowed: bool
    reason: str
    budget_usd: float | None
    spent_usd: float
    running_usd: float  # estimated remaining cost of attempts now running
    next_usd: float  # estimated cost of the job about to launch


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
    c = campaign_or_raise(session, campaign_id)
    if c.budget_usd is None:
        return BudgetDecision(True, "no budget set", None, spent or 0.0, 0.0, next_job_cost or 0.0)
    if spent is None:
        spent, _ = campaign_costs(session, [campaign_id], now).get(campaign_id, (0.0, 0.0))
    running = 0.0
    q = (
        sa.select(col(Job.est_hours), col(Attempt.launched_at), col(Attempt.price_per_hour))
        .join(
            Attempt,
            sa.and_(col(Attempt.job_id) == Job.id, col(Attempt.attempt_no) == Job.current_attempt),
        )
        .where(
            col(Job.campaign_id) == campaign_id,
            col(Job.status).in_([JobStatus.LAUNCHING, JobStatus.RUNNING]),
        )
    )
    for est_h, launched, price in session.execute(q):
        running += max(est_h - hours_between(launched, now), 0.0) * price
    if next_job_cost is None:
        catalogue = load_catalogue()
        region = config_region(c.config)
        pending = (
            sa.select(
                col(Job.machine_type),
                col(Job.gpu_type),
                col(Job.gpu_count),
                col(Job.spot),
                sa.func.max(col(Job.est_hours)),
            )
            .where(col(Job.campaign_id) == campaign_id, col(Job.status) == JobStatus.PENDING)
            .group_by(col(Job.machine_type), col(Job.gpu_type), col(Job.gpu_count), col(Job.spot))
        )
        next_job_cost = max(
            (
                h * catalogue.price_per_hour(m, g, n, s, region)
                for m, g, n, s, h in session.execute(pending)
            ),
            default=0.0,
        )
    total = spent + running + next_job_cost
    txt = (
        f"spent {spent:.2f} + running {running:.2f} + next job {next_job_cost:.2f} = {total:.2f} USD "
        f"of budget {c.budget_usd:.2f} USD"
    )
    if total > c.budget_usd + 1e-12:
        return BudgetDecision(
            False, f"over budget: {txt}", c.budget_usd, spent, running, next_job_cost
        )
    return BudgetDecision(
        True, f"within budget: {txt}", c.budget_usd, spent, running, next_job_cost
    )
