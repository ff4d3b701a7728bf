"""Store -> database: copy what a worker wrote for one attempt into the tables.

Idempotent by construction: each stream (metrics, resources, heartbeat) keeps a cursor on the
attempt row (the last segment number ingested), rows are inserted with ON CONFLICT DO NOTHING
on their natural keys (``backend.jobs_repo``), and the cursor moves in the same transaction as
the rows. A controller killed mid-ingest therefore re-reads at most the segments of the
rolled-back transaction and inserts nothing twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlmodel import Session, select

from backend import jobs_repo
from backend.db.models import Attempt, Job
from backend.stores import ArtifactStore, ObjectNotFound, StoreError, layout
from backend.stores.base import decode_jsonl, get_json, list_segments

FIT_KINDS = ("fit", "impacts", "scan", "toys")


@dataclass(frozen=True)
class IngestReport:
    metrics: int = 0  # metric points inserted (new rows)
    resources: int = 0  # resource samples inserted
    heartbeats: int = 0  # new heartbeat segments seen
    skipped: int = 0  # records dropped (non-finite value, malformed)
    last_beat: dict | None = None  # content of the newest new heartbeat


def _new_segments(store: ArtifactStore, prefix: str, after: int) -> list[tuple[int, str]]:
    return [(s, k) for s, k in list_segments(store, prefix) if s > after]


def clean_metrics(records: list[dict]) -> tuple[list[dict], int]:
    """Drop malformed and non-finite records (SQLite cannot store NaN in a NOT NULL column);
    keep the last of repeated (name, member, step) keys. Returns (records, dropped)."""
    out: dict[tuple, dict] = {}
    dropped = 0
    for r in records:
        try:
            value = float(r["value"])
            key = (str(r["name"]), r.get("member"), int(r["step"]))
        except (KeyError, TypeError, ValueError):
            dropped += 1
            continue
        if not math.isfinite(value):
            dropped += 1
            continue
        if key in out:
            dropped += 1
        out[key] = r
    return list(out.values()), dropped


def ingest_attempt(
    session: Session,
    job: Job,
    attempt: Attempt,
    job_store: ArtifactStore,
    *,
    now: datetime | None = None,
) -> IngestReport:
    """Ingest every segment of ``attempt`` newer than its cursors (the caller commits)."""
    cursor = dict(attempt.ingest_cursor or {})
    n = attempt.attempt_no
    job_id = cast(int, job.id)  # the job was read from the database, so it has its primary key
    metrics = resources = skipped = 0

    for seq, key in _new_segments(
        job_store, layout.metrics_prefix(n), int(cursor.get("metrics", 0))
    ):
        records, dropped = clean_metrics(
            decode_jsonl(job_store.get_bytes(key), where=job_store.uri_for(key))
        )
        metrics += jobs_repo.ingest_metrics(session, job, n, records)
        skipped += dropped
        jobs_repo.set_ingest_cursor(session, attempt, "metrics", seq)

    for seq, key in _new_segments(
        job_store, layout.resources_prefix(n), int(cursor.get("resources", 0))
    ):
        samples = [
            r
            for r in decode_jsonl(job_store.get_bytes(key), where=job_store.uri_for(key))
            if "time" in r
        ]
        resources += jobs_repo.ingest_resources(session, job_id, n, samples)
        jobs_repo.set_ingest_cursor(session, attempt, "resources", seq)

    beats = _new_segments(job_store, layout.heartbeat_prefix(n), int(cursor.get("heartbeat", 0)))
    last_beat = None
    if beats:
        seq, key = beats[-1]
        try:
            last_beat = get_json(job_store, key)
        except StoreError:
            last_beat = {}
        jobs_repo.set_ingest_cursor(session, attempt, "heartbeat", seq)
        # liveness is judged on the controller's clock (when a new beat was seen), not the
        # worker's, so clock skew between machines cannot fake or hide a lost heartbeat
        jobs_repo.record_heartbeat(session, job, attempt, now or datetime.now(UTC))
    return IngestReport(metrics, resources, len(beats), skipped, last_beat)


def read_exit(job_store: ArtifactStore, attempt_no: int) -> dict | None:
    """The attempt's exit.json, or None when the worker never wrote one."""
    try:
        data = get_json(job_store, layout.exit_key(attempt_no))
    except ObjectNotFound:
        return None
    return data if isinstance(data, dict) else None


def read_result(job_store: ArtifactStore, attempt_no: int) -> dict | None:
    try:
        data = get_json(job_store, layout.result_key(attempt_no))
    except ObjectNotFound:
        return None
    return data if isinstance(data, dict) else None


def ingest_result(
    session: Session, job: Job, attempt: Attempt, job_store: ArtifactStore
) -> dict | None:
    """Record result.json: an Artifact row per listed URI and, for fit-like jobs, a FitResult."""
    result = read_result(job_store, attempt.attempt_no)
    if result is None:
        return None
    artifacts = dict(result.get("artifacts") or {})
    artifacts.setdefault("result", job_store.uri_for(layout.result_key(attempt.attempt_no)))
    job_id = cast(int, job.id)  # the job was read from the database, so it has its primary key
    for kind, uri in sorted(artifacts.items()):
        if isinstance(uri, str):
            jobs_repo.record_artifact(
                session,
                job_id,
                str(kind)[:32],
                uri,
                attempt_no=attempt.attempt_no,
                size_bytes=_size(job_store, uri),
            )
    summary = result.get("summary") or {}
    prov = provenance(job, result)
    if prov:
        summary = {**summary, "provenance": prov}
    if job.kind in FIT_KINDS:
        mu_hat, sigma = _mu_sigma(summary)
        jobs_repo.record_fit_result(session, job, summary, mu_hat=mu_hat, sigma=sigma)
    elif job.kind == "train":  # its diagnostics feed the dashboard's Diagnostics page
        jobs_repo.record_fit_result(session, job, summary)
    return result


def provenance(job: Job, result: dict) -> dict[str, Any]:
    """Where a recorded result comes from, for jobs created from an analysis file: the
    analysis (name, path, file sha256), the job's content key, its training seed, and the
    ensemble URIs it used (fit-stage jobs) or wrote (train jobs). {} for other jobs."""
    spec = job.spec or {}
    if "analysis" not in spec and "cache_key" not in spec:
        return {}
    out: dict[str, Any] = {
        "analysis": dict(spec.get("analysis") or {}),
        "cache_key": spec.get("cache_key"),
    }
    seed = ((spec.get("params") or {}).get("train") or {}).get("seed")
    if seed is not None:
        out["seed"] = seed
    if result.get("ensembles"):
        out["ensembles"] = {k: list(v) for k, v in result["ensembles"].items()}
    elif (result.get("artifacts") or {}).get("ensemble"):
        out["ensembles"] = {str(job.task or job.name): [result["artifacts"]["ensemble"]]}
    return out


def _size(job_store: ArtifactStore, uri: str) -> int | None:
    path_for = getattr(job_store, "path_for", None)
    if path_for is None or not uri.startswith(job_store.uri + "/"):
        return None
    try:
        return path_for(uri[len(job_store.uri) + 1 :]).stat().st_size
    except OSError:
        return None


def _mu_sigma(summary: dict) -> tuple[float | None, float | None]:
    """Best-effort POI value and error from a fit summary (several shapes are accepted)."""

    def num(x: Any) -> float | None:
        try:
            v = float(x)
        except (TypeError, ValueError):
            return None
        return v if math.isfinite(v) else None

    mu = num(summary.get("mu_hat", summary.get("mu")))
    sigma = num(summary.get("sigma", summary.get("mu_err", summary.get("sigma_mu"))))
    poi = summary.get("poi")
    if mu is None and isinstance(poi, dict):
        mu, sigma = (
            num(poi.get("value", poi.get("mu_hat"))),
            num(poi.get("error", poi.get("sigma"))),
        )
    return mu, sigma


def count_rows(session: Session, table: Any, job_id: int) -> int:
    """Rows of ``table`` for one job (used by tests and reports)."""
    return int(
        session.exec(select(sa.func.count()).select_from(table).where(table.job_id == job_id)).one()
    )
