"""Metric curves and resource samples for charts, thinned in the database.

`metric_series` downsamples per (job, name, member) series over the generated `level` column
(trailing zero bits of the step), so the work grows with the points returned, not with the
points stored; `resource_series` keeps every n-th sample per job.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from backend.db.engine import session_scope
from backend.db.models import MAX_STEP_LEVEL, Job, MetricPoint, ResourceSample


def metric_names(
    job_id: int | None = None, campaign_id: int | None = None, engine: Engine | None = None
) -> list[str]:
    """Distinct metric names of a job or campaign (for the dashboard's selector)."""
    q = sa.select(col(MetricPoint.name)).distinct()
    if job_id is not None:
        q = q.where(col(MetricPoint.job_id) == job_id)
    elif campaign_id is not None:
        q = q.where(
            col(MetricPoint.job_id).in_(
                sa.select(col(Job.id)).where(col(Job.campaign_id) == campaign_id)
            )
        )
    with session_scope(engine) as session:
        return sorted(session.execute(q).scalars())


def _series_stats(session: Session, conds: list) -> list[tuple[int, str, int, int, int, int]]:
    mp = MetricPoint.__table__.c
    q = (
        sa.select(
            mp.job_id,
            mp.name,
            mp.member,
            sa.func.count(),
            sa.func.min(mp.step),
            sa.func.max(mp.step),
        )
        .where(*conds)
        .group_by(mp.job_id, mp.name, mp.member)
    )
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
            q = q.where(
                sa.tuple_(mp.name, mp.member) > sa.tuple_(sa.literal(name), sa.literal(member))
            )
        row = session.execute(q.order_by(mp.name, mp.member).limit(1)).first()
        if row is None:
            return found
        found.append((row[0], row[1]))


def _trailing_zeros(n: int) -> int:
    return (n & -n).bit_length() - 1 if n > 0 else MAX_STEP_LEVEL


def _series_level(
    session: Session, key: tuple, max_points: int
) -> int | tuple[int, int, int] | None:
    """How to thin one series: None when it fits whole; else the smallest k such that at most
    max_points of its points have level >= k (steps divisible by 2**k); or, when that keeps
    fewer than max_points / 4 (the steps share an odd offset, e.g. 1, 11, 21, ...), a
    (lo, hi, stride) for "every stride-th step from the first one".

    A first guess from the series' first steps (typical spacing) and last step, both index
    seeks; then exact counts of `level >= k`, each an index range of at most ~2 * max_points.
    """
    mp = MetricPoint.__table__.c
    head = list(
        session.execute(
            sa.select(mp.step).where(*key).distinct().order_by(mp.step).limit(8)
        ).scalars()
    )
    hi = session.execute(
        sa.select(mp.step).where(*key).order_by(mp.step.desc()).limit(1)
    ).scalar_one()
    gaps = [b - a for a, b in zip(head, head[1:])]
    spacing = max(1, min(gaps)) if gaps else 1
    n_est = (hi - head[0]) // spacing + 1

    counts: dict[int, int] = {}

    def count(k: int) -> int:
        if k not in counts:
            counts[k] = session.execute(
                sa.select(sa.func.count()).where(*key, mp.level >= k)
            ).scalar_one()
        return counts[k]

    if n_est <= max_points:  # probably fits: confirm with an exact count (a short range)
        n_est = count(0)
        if n_est <= max_points:
            return None
    k = min(
        MAX_STEP_LEVEL, _trailing_zeros(spacing) + max(0, math.ceil(math.log2(n_est / max_points)))
    )
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
                    rows = list(
                        session.execute(
                            q.where(mp.step.between(lo, hi), (mp.step - lo) % stride == 0).order_by(
                                *order
                            )
                        ).all()
                    )
                else:
                    # read through the level index (SQLite would otherwise walk the primary key to
                    # save a sort, evaluating level on every point); sort the few rows here
                    lq = q.where(mp.level >= k).with_hint(
                        MetricPoint.__table__,
                        "INDEXED BY ix_metric_point_job_id_name_member_level",
                        "sqlite",
                    )
                    rows = sorted(session.execute(lq).all(), key=lambda r: (r.step, r.attempt_no))
                last = session.execute(
                    q.order_by(mp.step.desc(), mp.attempt_no.desc()).limit(1)
                ).first()
                if rows and last is not None and last.step > rows[-1].step:
                    rows.append(last)
                out += [dict(zip(keys, r)) for r in rows]
            return out
        conds = [mp.job_id.in_(sa.select(col(Job.id)).where(col(Job.campaign_id) == campaign_id))]
        if names_l is not None:
            conds.append(mp.name.in_(names_l))
        full_order = (mp.job_id, mp.name, mp.member, mp.step, mp.attempt_no)
        stats = _series_stats(session, conds)
        if all(n <= max_points for *_k, n, _lo, _hi in stats):
            return [
                dict(zip(keys, r))
                for r in session.execute(sa.select(*cols).where(*conds).order_by(*full_order)).all()
            ]
        by_job: dict[int, list] = defaultdict(list)
        for jid, name, member, n, lo, hi in stats:
            series = sa.and_(mp.name == name, mp.member == member)
            if n <= max_points:
                by_job[jid].append(series)
                continue
            spacing = max(1, (hi - lo) // max(n - 1, 1))
            k = min(MAX_STEP_LEVEL, _trailing_zeros(spacing) + math.ceil(math.log2(n / max_points)))
            by_job[jid].append(sa.and_(series, sa.or_(mp.level >= k, mp.step == hi)))
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
    cond = (
        rs.job_id == job_id
        if job_id is not None
        else rs.job_id.in_(sa.select(col(Job.id)).where(col(Job.campaign_id) == campaign_id))
    )
    rn = (
        sa.func.row_number()
        .over(partition_by=rs.job_id, order_by=(rs.time, rs.attempt_no))
        .label("rn")
    )
    cnt = sa.func.count().over(partition_by=rs.job_id).label("cnt")
    inner = (
        sa.select(rs.job_id, rs.attempt_no, rs.time, rs.cpu_percent, rs.rss_bytes, rs.gpus, rn, cnt)
        .where(cond)
        .subquery()
    )
    max_points = max(int(max_points), 1)
    stride = (inner.c.cnt + (max_points - 1)) // max_points
    q = (
        sa.select(
            inner.c.job_id,
            inner.c.attempt_no,
            inner.c.time,
            inner.c.cpu_percent,
            inner.c.rss_bytes,
            inner.c.gpus,
        )
        .where(
            sa.or_(
                inner.c.cnt <= max_points, (inner.c.rn - 1) % stride == 0, inner.c.rn == inner.c.cnt
            )
        )
        .order_by(inner.c.job_id, inner.c.time)
    )
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
