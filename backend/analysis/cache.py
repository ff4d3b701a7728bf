"""Content keys for campaign jobs, and reuse of earlier results with the same key.

Why: an analysis is re-run after small edits (a fit option, a scan range). Every job gets a
key that is a sha256 over exactly what defines its output, so a job whose key matches a
SUCCEEDED job of any earlier campaign -- whose artifacts are still in the store -- is created
already SUCCEEDED, pointing at that job's result, and the controller never launches it.

- a train job's key covers its whole ``params``: numerator / denominator sample specs (a
  file-backed spec contributes the sha256 of the file's bytes, not its size or mtime; the
  path itself does not count, so a moved file is still a hit), feature expressions, weight,
  selection, the TrainConfig dict (with member count and seed), the member indices, the task
  name (fit jobs map ensembles to tasks through it), plus the engine version;
- a fit-stage job's key covers its params (the fit settings, its samples' contents) plus the
  keys of the jobs it depends on, so a retrained ensemble invalidates every fit built on it
  and a changed scan range re-runs only the scan jobs.

Names (job, campaign) and the analysis file's own hash are deliberately left out: renaming a
campaign or editing a comment must not retrain anything.

The key lives in the job spec (``spec["cache_key"]``; a reused job also gets
``spec["cached_from"]``), not in a column: see `find_sources` for the lookup, and the note
in docs/analysis.md for why.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col

from backend import ingest
from backend.db.models import Event, FitResult, Job
from backend.states import JobStatus
from backend.stores import StoreError, open_store

KEY_VERSION = 2  # 2: file samples are split into train / eval parts by default. Bump when the key recipe changes, so old keys stop matching

_CHECKSUMS: dict[tuple[str, int, int], str] = {}
_LOCK = threading.Lock()


class CacheKeyError(ValueError):
    """A sample file that a job needs cannot be read to compute its key (names the file)."""


def engine_version() -> str:
    """The installed nsbi-workbench version (what `sbi_engine.__version__` says), read without
    importing the engine (and so JAX): the dashboard computes keys too."""
    try:
        from importlib.metadata import version

        return version("nsbi-workbench")
    except Exception:  # noqa: BLE001 - not installed (a bare checkout): one fixed label
        return "unknown"


MEMO_FILE = "checksums.json"  # under NSBI_HOME: the memo outlives the process
_MEMO_WRITES: ContextVar[bool] = ContextVar("nsbi_checksum_memo_writes", default=True)


@contextmanager
def memo_read_only() -> Iterator[None]:
    """Within this block file checksums use the memo file but never create or update it (nor
    NSBI_HOME): what `nsbi analysis validate` needs, since validating creates nothing. The
    in-process memo still keeps what was hashed."""
    token = _MEMO_WRITES.set(False)
    try:
        yield
    finally:
        _MEMO_WRITES.reset(token)


def _memo_path() -> Path:
    from backend.settings import get_settings

    return get_settings().home / MEMO_FILE


def _load_disk_memo(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _save_disk_memo(path: Path, entries: Mapping[str, str]) -> None:
    """Merge `entries` into the memo file (atomic replace; a lost race only costs a re-hash)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        merged = {**_load_disk_memo(path), **entries}
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(merged, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: the in-process memo still works


def file_checksum(path: str | Path) -> str:
    """sha256 of a file's bytes, memoised per (absolute path, size, mtime_ns).

    The memo (in this process and in <NSBI_HOME>/checksums.json) only saves re-reading an
    unchanged multi-GB file on every run; a changed file has a new size or mtime and is hashed
    again, so the key follows the content. Inside `memo_read_only()` the file is not written.
    """
    p = Path(str(path).removeprefix("file://")).expanduser()
    p = p if p.is_absolute() else Path.cwd() / p
    try:
        st = p.stat()
    except OSError as exc:
        raise CacheKeyError(
            f"sample file {p}: cannot read it to compute the job's content key ({exc})"
        ) from None
    memo = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    text_key = f"{memo[0]}|{memo[1]}|{memo[2]}"
    with _LOCK:
        hit = _CHECKSUMS.get(memo)
    if hit is not None:
        return hit
    disk = _memo_path()
    hit = _load_disk_memo(disk).get(text_key)
    if hit is None:
        h = hashlib.sha256()
        try:
            with open(p, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        except OSError as exc:
            raise CacheKeyError(
                f"sample file {p}: cannot read it to compute the job's content key ({exc})"
            ) from None
        hit = h.hexdigest()
        if _MEMO_WRITES.get():
            _save_disk_memo(disk, {text_key: hit})
    with _LOCK:
        _CHECKSUMS[memo] = hit
    return hit


def canonical(obj: Any) -> Any:
    """`obj` with every file-backed sample spec ({"path": ..., ...}) replaced by its content:
    the path becomes {"sha256": file bytes, "suffix": extension (it selects the reader)}."""
    if isinstance(obj, Mapping):
        out = {str(k): canonical(v) for k, v in obj.items()}
        path = obj.get("path")
        if isinstance(path, str):
            out["path"] = {"sha256": file_checksum(path), "suffix": Path(path).suffix.lower()}
        return out
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    return obj


def _digest(doc: Any) -> str:
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def job_key(
    kind: str,
    params: Mapping[str, Any],
    dependency_keys: Iterable[str] = (),
    version: str | None = None,
) -> str:
    """The content key of one job: kind, canonical params, its dependencies' keys, engine version."""
    return _digest(
        {
            "key_version": KEY_VERSION,
            "engine": version if version is not None else engine_version(),
            "kind": kind,
            "params": canonical(params),
            "depends_on": sorted(dependency_keys),
        }
    )


def plan_keys(plans: Sequence[Any], version: str | None = None) -> dict[str, str]:
    """name -> key for job plans (`backend.campaigns.JobPlan`), dependencies before dependants.

    Plans come from `expand()`, which lists every job after the jobs it depends on.
    """
    version = version if version is not None else engine_version()
    keys: dict[str, str] = {}
    for p in plans:
        missing = [d for d in p.depends_on if d not in keys]
        if missing:
            raise ValueError(
                f"job {p.name!r} depends on {missing} which come later in the plan list"
            )
        params = (p.spec or {}).get("params") or {}
        keys[p.name] = job_key(p.kind, params, (keys[d] for d in p.depends_on), version)
    return keys


# --------------------------------------------------------------------------- reuse


@dataclass(frozen=True)
class Source:
    """A SUCCEEDED job whose result a new job with the same key can reuse."""

    job_id: int  # the job that actually ran (follows earlier reuse back to it)
    campaign_id: int
    uri: str
    attempt: int
    result: dict[str, Any]


def _result_uris(result: Mapping[str, Any]) -> list[str]:
    """Every store object a result points at: its artifacts and pass-through ensembles."""
    uris = [u for u in (result.get("artifacts") or {}).values() if isinstance(u, str)]
    for task_uris in (result.get("ensembles") or {}).values():
        uris += [u for u in task_uris if isinstance(u, str)]
    return uris


def _uri_exists(uri: str) -> bool:
    parent, _, name = uri.rpartition("/")
    try:
        return open_store(parent).exists(name)
    except StoreError:
        return False


def _usable(job_uri: str | None, attempt: int) -> dict[str, Any] | None:
    """The job's result.json if it and every object it references are still in the store."""
    if not job_uri or attempt < 1:
        return None
    try:
        result = ingest.read_result(open_store(job_uri), attempt)
    except StoreError:
        return None
    if result is None or not all(_uri_exists(u) for u in _result_uris(result)):
        return None
    return result


def find_sources(session: Session, keys: Iterable[str]) -> dict[str, Source]:
    """key -> the newest SUCCEEDED job with that key whose artifacts still exist.

    The key is read from the spec JSON (`json_extract` on SQLite, `->>` on PostgreSQL) among
    SUCCEEDED jobs only, newest first; a job whose result or ensembles were deleted from the
    store is skipped, so the next older one (or a fresh run) takes its place.
    """
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    spec = Job.__table__.c.spec
    key_col = spec["cache_key"].as_string()
    q = (
        sa.select(
            col(Job.id),
            col(Job.campaign_id),
            col(Job.uri),
            col(Job.current_attempt),
            key_col.label("key"),
            spec["cached_from"].as_integer().label("cached_from"),
        )
        .where(col(Job.status) == JobStatus.SUCCEEDED, key_col.in_(wanted))
        .order_by(col(Job.finished_at).desc(), col(Job.id).desc())
    )
    out: dict[str, Source] = {}
    for row in session.execute(q):
        if row.key in out:
            continue
        result = _usable(row.uri, int(row.current_attempt or 0))
        if result is not None:
            origin = int(row.cached_from) if row.cached_from is not None else int(row.id)
            out[row.key] = Source(
                origin, int(row.campaign_id), row.uri, int(row.current_attempt), result
            )
    return out


def mark_cached(
    session: Session,
    ids: Mapping[str, int],
    keys: Mapping[str, str],
    sources: Mapping[str, Source],
    *,
    actor: str,
    now: datetime,
) -> list[str]:
    """Turn the new jobs whose key has a source into SUCCEEDED jobs that reference it.

    Each gets the source's store URI and attempt number (so the controller hands its
    result.json to dependants exactly as for a job that ran), ``spec["cached_from"]``, a copy
    of the source's recorded summary (FitResult) for the dashboard, and one Event
    PENDING -> SUCCEEDED with reason 'cached'. No Attempt row: nothing ran. Returns the names.
    """
    cached: list[str] = []
    summaries: dict[int, Any] = {}
    src_ids = {s.job_id for s in sources.values()}
    if src_ids:
        for f in session.execute(
            sa.select(FitResult).where(col(FitResult.job_id).in_(src_ids))
        ).scalars():
            summaries[f.job_id] = (f.payload, f.mu_hat, f.sigma)
    for name, job_id in ids.items():
        key = keys.get(name)
        src = sources.get(key) if key else None
        if src is None:
            continue
        job = session.get(Job, job_id)
        if job is None or job.status != JobStatus.PENDING:
            continue
        job.spec = {**(job.spec or {}), "cached_from": src.job_id}
        job.uri = src.uri
        job.current_attempt = src.attempt
        job.status = JobStatus.SUCCEEDED
        job.status_reason = f"cached: result of job {src.job_id} (campaign {src.campaign_id})"
        job.finished_at = now
        job.updated_at = now
        session.add(job)
        session.add(
            Event(
                campaign_id=job.campaign_id,
                job_id=job.id,
                time=now,
                from_state=JobStatus.PENDING,
                to_state=JobStatus.SUCCEEDED,
                reason="cached",
                actor=actor,
                detail={"cached_from": src.job_id, "cache_key": key, "source_uri": src.uri},
            )
        )
        summary = summaries.get(src.job_id)
        if summary is None and isinstance(src.result.get("summary"), Mapping):
            mu, sigma = (
                ingest._mu_sigma(src.result["summary"]) if job.kind != "train" else (None, None)
            )
            summary = (src.result["summary"], mu, sigma)
        if summary is not None:
            session.add(
                FitResult(
                    job_id=job_id,
                    campaign_id=job.campaign_id,
                    kind=job.kind,
                    payload=dict(summary[0] or {}),
                    mu_hat=summary[1],
                    sigma=summary[2],
                    created_at=now,
                )
            )
        cached.append(name)
    return cached


def clear_checksum_memo() -> None:
    """Forget memoised file checksums (tests; a long-lived process that wants fresh reads)."""
    with _LOCK:
        _CHECKSUMS.clear()


__all__ = [
    "KEY_VERSION",
    "CacheKeyError",
    "Source",
    "canonical",
    "clear_checksum_memo",
    "engine_version",
    "file_checksum",
    "find_sources",
    "job_key",
    "mark_cached",
    "memo_read_only",
    "plan_keys",
]
