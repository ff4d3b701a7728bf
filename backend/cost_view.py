"""Cost figures as the service reports them: the estimate before launch, what each campaign
has accrued so far, and attempts' hours and cost grouped for the cost page.

Closed attempts are summed in SQL; open ones accrue to now at their price. The arithmetic
(prices, hours between two times) is `backend.costs`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from backend.campaigns import CampaignConfig, JobPlan, expand, validate_config
from backend.costs import Estimate, JobEstimate, accrued_cost, hours_between, load_catalogue
from backend.db.engine import session_scope
from backend.db.models import Attempt, Campaign, Job, ResourceSample
from backend.states import utcnow


def estimate_plans(plans: Iterable[JobPlan], region: str) -> Estimate:
    """GPU-hours and cost of job plans from their per-job time estimates and the price
    catalogue (no retries or preemptions counted)."""
    catalogue = load_catalogue()
    per_job = []
    prices: dict[tuple, float] = {}
    for p in plans:
        key = (p.machine_type, p.gpu_type, p.gpu_count, p.spot)
        if key not in prices:
            prices[key] = catalogue.price_per_hour(
                p.machine_type, p.gpu_type, p.gpu_count, p.spot, region
            )
        price = prices[key]
        per_job.append(
            JobEstimate(
                p.name,
                p.kind,
                p.est_hours,
                p.est_hours * p.gpu_count,
                price,
                p.est_hours * price,
                task=p.task,
            )
        )
    return Estimate(
        machine_hours=sum(j.hours for j in per_job),
        gpu_hours=sum(j.gpu_hours for j in per_job),
        cost=sum(j.cost for j in per_job),
        currency=catalogue.currency,
        catalogue_date=catalogue.date,
        per_job=tuple(per_job),
    )


def estimate_campaign(config: Mapping[str, Any] | CampaignConfig) -> Estimate:
    """GPU-hours and cost before launch, from the config's per-job time estimates and the
    price catalogue (no retries or preemptions counted)."""
    cfg = validate_config(config)
    return estimate_plans(expand(cfg), cfg.region)


def campaign_costs(
    session: Session, campaign_ids: Sequence[int] | None, now: datetime
) -> dict[int, tuple[float, float]]:
    """campaign id -> (cost, gpu_hours): closed attempts summed in SQL, open ones accrued to now."""
    base = sa.select(
        col(Job.campaign_id),
        sa.func.sum(col(Attempt.cost_usd)),
        sa.func.sum(col(Attempt.gpu_hours)),
    ).join(Job, col(Job.id) == Attempt.job_id)
    closed = base.where(
        sa.or_(col(Attempt.ended_at).is_not(None), col(Attempt.launched_at).is_(None))
    )
    if campaign_ids is not None:
        closed = closed.where(col(Job.campaign_id).in_(campaign_ids))
    out: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for cid, cost, gh in session.execute(closed.group_by(col(Job.campaign_id))):
        out[cid][0] += cost or 0.0
        out[cid][1] += gh or 0.0
    live = (
        sa.select(
            col(Job.campaign_id),
            col(Attempt.launched_at),
            col(Attempt.price_per_hour),
            col(Attempt.gpu_count),
        )
        .join(Job, col(Job.id) == Attempt.job_id)
        .where(col(Attempt.launched_at).is_not(None), col(Attempt.ended_at).is_(None))
    )
    if campaign_ids is not None:
        live = live.where(col(Job.campaign_id).in_(campaign_ids))
    for cid, launched, price, gpus in session.execute(live):
        out[cid][0] += accrued_cost(price, launched, now)
        out[cid][1] += hours_between(launched, now) * gpus
    return {k: (v[0], v[1]) for k, v in out.items()}


_GROUP_KEYS = ("campaign", "day", "machine", "gpu", "spot", "kind", "job")


def _add_wall_and_cpu(session: Session, keys, src, base_cond, now: datetime, slot) -> None:
    """Add wall_hours and cpu_hours per group: one row per attempt (its launch and end) with
    its mean cpu_percent from the resource samples (one grouped subquery)."""
    a, r = Attempt.__table__.c, ResourceSample.__table__.c
    cpu = (
        sa.select(
            r.job_id.label("job_id"),
            r.attempt_no.label("attempt_no"),
            sa.func.avg(r.cpu_percent).label("cpu"),
        )
        .group_by(r.job_id, r.attempt_no)
        .subquery()
    )
    q = (
        sa.select(*keys, a.launched_at, a.ended_at, cpu.c.cpu)
        .select_from(
            src.outerjoin(cpu, sa.and_(cpu.c.job_id == a.job_id, cpu.c.attempt_no == a.attempt_no))
        )
        .where(*base_cond)
    )
    for row in session.execute(q):
        m = row._mapping
        h = hours_between(m["launched_at"], m["ended_at"] or now)
        s = slot(m)
        s["wall_hours"] += h
        s["cpu_hours"] += h * max(float(m["cpu"] or 0.0), 0.0) / 100.0


def cost_summary(
    group_by: Sequence[str] = ("campaign",),
    engine: Engine | None = None,
    campaign_id: int | None = None,
) -> list[dict[str, Any]]:
    """GPU-hours and cost over attempts, grouped by any of campaign, day (launch date, UTC),
    machine, gpu, spot, kind, job. Closed attempts are summed in SQL; open ones accrue to now.

    Each row: the group keys (campaign also gives campaign_name), attempts, hours, gpu_hours,
    cost, and for every launcher (local runs included, whose price is 0) wall_hours -- the
    attempts' time from launch to end (or now) -- and cpu_hours -- each attempt's wall time
    times its mean CPU use in cores (the workers' resource samples, cpu_percent / 100; 0 for
    an attempt without samples).
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
    keys = [key for g in group_by for key in cols[g]]
    src = sa.join(Attempt.__table__, Job.__table__, j.id == a.job_id).join(
        Campaign.__table__, c.id == j.campaign_id
    )
    base_cond: list[sa.ColumnElement[bool]] = [a.launched_at.is_not(None)]
    if campaign_id is not None:
        base_cond.append(j.campaign_id == campaign_id)
    now = utcnow()
    out: dict[tuple, dict[str, Any]] = {}

    def slot(mapping: sa.RowMapping) -> dict[str, Any]:
        key = tuple(
            str(mapping[k.name])
            if k.name == "day" and mapping[k.name] is not None
            else mapping[k.name]
            for k in keys
        )
        if key not in out:
            out[key] = {
                **{k.name: v for k, v in zip(keys, key)},
                "attempts": 0,
                "hours": 0.0,
                "gpu_hours": 0.0,
                "cost": 0.0,
                "wall_hours": 0.0,
                "cpu_hours": 0.0,
            }
        return out[key]

    closed = (
        sa.select(
            *keys,
            sa.func.count().label("n"),
            sa.func.sum(a.cost_usd).label("cost"),
            sa.func.sum(a.gpu_hours).label("gh"),
            sa.func.sum(
                sa.case((a.price_per_hour > 0, a.cost_usd / a.price_per_hour), else_=0.0)
            ).label("h"),
        )
        .select_from(src)
        .where(*base_cond, a.ended_at.is_not(None))
    )
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
        live = (
            sa.select(*keys, a.launched_at, a.price_per_hour, a.gpu_count, a.ended_at)
            .select_from(src)
            .where(*base_cond, a.ended_at.is_(None))
        )
        for r in session.execute(live):
            m = r._mapping
            s = slot(m)
            h = hours_between(m["launched_at"], now)
            s["attempts"] += 1
            s["hours"] += h
            s["gpu_hours"] += h * m["gpu_count"]
            s["cost"] += h * m["price_per_hour"]
        _add_wall_and_cpu(session, keys, src, base_cond, now, slot)
    return sorted(
        out.values(),
        key=lambda d: tuple((v is None, str(v)) for v in list(d.values())[: len(keys)]),
    )
