"""Read models for comparing runs: the ensembles of every campaign (the train jobs of one ratio
task at one grid point), their settings, their loss curves averaged over members in the
database, and their recorded diagnostics.

An ensemble is what the campaign expansion makes of one (task, grid point): jobs named
``train-<task>-g<grid>-m<first>-<last>`` with ``spec.params.grid_index``; a train job that
follows neither is an ensemble of its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from backend.db.engine import session_scope
from backend.db.models import Campaign, FitResult, Job, MetricPoint
from backend.metrics_view import _job_series, _series_level

# train settings that differ between the jobs of one ensemble by construction
_PER_JOB_KEYS = ("seed", "members")
_GRID = re.compile(r"-g(\d+)-m\d+")


def _flat(prefix: str, obj: Any, out: dict[str, Any]) -> None:
    if isinstance(obj, Mapping):
        for k in sorted(obj):
            _flat(f"{prefix}.{k}" if prefix else str(k), obj[k], out)
    elif isinstance(obj, list):
        out[prefix] = ", ".join(map(str, obj))
    else:
        out[prefix] = obj


def _grid_index(name: str, params: Mapping[str, Any]) -> int | None:
    gi = params.get("grid_index")
    if isinstance(gi, int):
        return gi
    m = _GRID.search(name)
    return int(m.group(1)) if m else None


def ensembles(
    campaign_ids: Sequence[int] | None = None, engine: Engine | None = None
) -> list[dict[str, Any]]:
    """Every ensemble of the given campaigns (all when None), in campaign, task, grid order:
    {key, campaign_id, campaign, task, grid_index, grid_point, job_ids, members, states,
    settings}. `settings` is flat ({"train.width": 64, "grid.width": 64, "machine_type": ..}):
    what the comparison table lines up, with the per-job seed and member list left out."""
    j, c = Job.__table__.c, Campaign.__table__.c
    q = (
        sa.select(
            j.id,
            j.campaign_id,
            c.name.label("campaign"),
            j.name,
            j.task,
            j.status,
            j.members,
            j.spec,
            j.machine_type,
            j.gpu_type,
            j.gpu_count,
            j.spot,
        )
        .join(Campaign.__table__, c.id == j.campaign_id)
        .where(j.kind == "train")
        .order_by(j.campaign_id, j.id)
    )
    if campaign_ids is not None:
        q = q.where(j.campaign_id.in_(list(campaign_ids)))
    groups: dict[tuple, dict[str, Any]] = {}
    with session_scope(engine) as session:
        rows = session.execute(q).all()
    for r in rows:
        params = (r.spec or {}).get("params") or {}
        params = params if isinstance(params, Mapping) else {}
        task = r.task or params.get("task") or "task"
        gi = _grid_index(r.name, params)
        ident = (r.campaign_id, task, gi if gi is not None else f"job {r.id}")
        g = groups.get(ident)
        if g is None:
            settings: dict[str, Any] = {"campaign": f"{r.campaign_id} · {r.campaign}", "task": task}
            settings["grid point"] = gi if gi is not None else ""
            raw_train = params.get("train")
            train: Mapping[str, Any] = raw_train if isinstance(raw_train, Mapping) else {}
            _flat("train", {k: v for k, v in train.items() if k not in _PER_JOB_KEYS}, settings)
            raw_point = params.get("grid_point")
            point: Mapping[str, Any] = raw_point if isinstance(raw_point, Mapping) else {}
            _flat("grid", {k: v for k, v in point.items() if k not in train}, settings)
            settings.update(
                machine_type=r.machine_type,
                gpu=f"{r.gpu_count} x {r.gpu_type}" if r.gpu_type and r.gpu_count else "none",
                spot=bool(r.spot),
            )
            label = (
                f"{r.campaign_id} · {task} g{gi}"
                if gi is not None
                else f"{r.campaign_id} · {task} ({r.name})"
            )
            g = groups[ident] = {
                "key": label,
                "campaign_id": r.campaign_id,
                "campaign": r.campaign,
                "task": task,
                "grid_index": gi,
                "grid_point": dict(params.get("grid_point") or {}),
                "job_ids": [],
                "members": 0,
                "states": {},
                "settings": settings,
            }
        g["job_ids"].append(r.id)
        g["members"] += len(r.members or [])
        g["states"][r.status] = g["states"].get(r.status, 0) + 1
    out = list(groups.values())
    for g in out:
        g["settings"]["members"] = g["members"]
        g["settings"]["jobs"] = len(g["job_ids"])
    return out


def ensemble_curves(
    job_ids: Sequence[int],
    names: Sequence[str] = ("train_loss", "val_loss"),
    max_points: int = 400,
    engine: Engine | None = None,
) -> list[dict[str, Any]]:
    """One ensemble's curves: {name, step, mean, min, max, n} per logged step, averaged over
    every member of `job_ids` in the database (GROUP BY name, step).

    Long curves are thinned in the database the way `metrics_view.metric_series` thins one
    series (steps divisible by 2**k, read through the level index), with k chosen from the
    first series found (the members of an ensemble log the same steps); the work grows with the
    points returned, not with the points stored."""
    mp = MetricPoint.__table__.c
    names = list(names)
    max_points = max(int(max_points), 2)
    with session_scope(engine) as session:
        series: list[tuple[int, str, int]] = []
        for jid in job_ids:
            series += [(jid, n, m) for n, m in _job_series(session, jid, names)]
        if not series:
            return []
        jid, name, member = series[0]
        key = (mp.job_id == jid, mp.name == name, mp.member == member)
        thin = _series_level(session, key, max_points)
        conds: list[Any] = [
            mp.job_id.in_(sorted({s[0] for s in series})),
            mp.name.in_(sorted({s[1] for s in series})),
            mp.member.in_(sorted({s[2] for s in series})),
        ]
        last: list[Any] | None = None
        if isinstance(thin, tuple):
            lo, hi, stride = thin
            conds.append(sa.or_((mp.step - lo) % stride == 0, mp.step == hi))
        elif thin is not None:
            hi = session.execute(
                sa.select(mp.step).where(*key).order_by(mp.step.desc()).limit(1)
            ).scalar_one()
            last = [*conds, mp.step == hi]  # the newest point, by the primary key
            conds.append(mp.level >= thin)  # an index range per series
        cols = (
            mp.name,
            mp.step,
            sa.func.avg(mp.value),
            sa.func.min(mp.value),
            sa.func.max(mp.value),
            sa.func.count(),
        )
        q = sa.select(*cols).where(*conds).group_by(mp.name, mp.step)
        if last is not None:
            q = q.with_hint(
                MetricPoint.__table__,
                "INDEXED BY ix_metric_point_job_id_name_member_level",
                "sqlite",
            )
        rows = {(r[0], r[1]): r for r in session.execute(q)}
        if last is not None:
            for r in session.execute(sa.select(*cols).where(*last).group_by(mp.name, mp.step)):
                rows[(r[0], r[1])] = r
        return [
            {"name": n, "step": s, "mean": a, "min": lo_, "max": hi_, "n": k}
            for (n, s, a, lo_, hi_, k) in (rows[key] for key in sorted(rows))
        ]


def ensemble_diagnostics(
    job_ids: Sequence[int], engine: Engine | None = None
) -> dict[str, Any] | None:
    """The recorded diagnostics of an ensemble: those of its first job that reported some."""
    fr = FitResult.__table__.c
    q = (
        sa.select(fr.job_id, fr.payload)
        .where(fr.job_id.in_(list(job_ids)), fr.kind == "train")
        .order_by(fr.job_id)
    )
    with session_scope(engine) as session:
        for _jid, payload in session.execute(q):
            diag = (payload or {}).get("diagnostics")
            if isinstance(diag, Mapping):
                return dict(diag)
    return None
