"""The worker runtime: runs one attempt of one job from its spec in the artifact store.

``nsbi worker <job-uri> --attempt N`` needs only the job URI (and store credentials): it reads
``spec.json``, runs the job kind, and writes everything the controller needs back into the
store under ``attempts/<N>/`` (see :mod:`backend.stores.layout`): heartbeats, metric and
resource segments, checkpoints, ``result.json`` and always ``exit.json``. It never touches the
database, which is what lets the same worker run as a local process or on a cloud VM.

On SIGTERM (or a ``cancel.json`` in the job folder) the job is asked to stop; training writes
a checkpoint and the worker exits with :data:`EXIT_PREEMPTED` and ``{"status": "preempted"}``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.stores import ArtifactStore, ObjectNotFound, StoreError, open_store
from backend.stores import layout
from backend.stores.base import append_segment, encode_jsonl, get_json, list_segments, put_json

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_BAD_SPEC = 2
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again later", resumable from the last checkpoint

STATUS_BY_CODE = {EXIT_SUCCEEDED: "succeeded", EXIT_FAILED: "failed", EXIT_BAD_SPEC: "failed",
                  EXIT_PREEMPTED: "preempted"}


class JobSpecError(Exception):
    """The job spec is missing, unreadable or lacks a field the job kind needs."""


class Preempted(Exception):
    """Raised inside a job when a stop was requested; the worker exits as preempted."""


def _interval() -> float:
    return float(os.environ.get("NSBI_WORKER_INTERVAL_S", "5"))


# ---------------------------------------------------------------------- store-backed pieces


class StoreCheckpointer:
    """The engine's ``Checkpointer`` over the store: saves into this attempt, loads the newest
    checkpoint of *any* attempt of the job, so a retry resumes where the last one stopped."""

    def __init__(self, job_store: ArtifactStore, attempt: int, *, keep: int = 2,
                 before_save: Callable[[], Any] | None = None) -> None:
        self.store = job_store
        self.attempt = int(attempt)
        self.keep = keep
        self.before_save = before_save
        self.saved_steps: list[int] = []

    def save(self, step: int, payload: bytes) -> None:
        if self.before_save is not None:
            # metrics up to this step reach the store before the checkpoint that covers them,
            # so a retry resuming from it never leaves a gap in the curves
            self.before_save()
        self.store.put_bytes(layout.checkpoint_key(self.attempt, step), bytes(payload))
        self.saved_steps.append(int(step))
        for old in sorted(set(self.saved_steps))[: -self.keep]:
            self.store.delete(layout.checkpoint_key(self.attempt, old))
            self.saved_steps.remove(old)

    def latest_key(self) -> tuple[int, str] | None:
        best: tuple[int, int, str] | None = None
        for n in range(1, self.attempt + 1):
            for step, key in list_segments(self.store, layout.checkpoints_prefix(n)):
                if best is None or (step, n) > best[:2]:
                    best = (step, n, key)
        return None if best is None else (best[0], best[2])

    def load_latest(self) -> tuple[int, bytes] | None:
        found = self.latest_key()
        if found is None:
            return None
        step, key = found
        return step, self.store.get_bytes(key)


@dataclass
class AttemptWriter:
    """Buffers metrics and writes heartbeat/metric/resource segments for one attempt.

    Thread-safe: the job thread calls ``add_metrics``; a background thread calls ``tick``
    every few seconds; ``close`` flushes what is left.
    """

    store: ArtifactStore
    attempt: int
    sampler: Any = None
    _metrics: list[dict] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seq: dict[str, int] = field(default_factory=dict)
    progress: dict[str, Any] = field(default_factory=dict)

    def _next(self, prefix: str, data: bytes, suffix: str) -> None:
        seq, _ = append_segment(self.store, prefix, data, suffix=suffix, start=self._seq.get(prefix, 1))
        self._seq[prefix] = seq + 1

    def add_metrics(self, records: list[dict]) -> None:
        with self._lock:
            self._metrics.extend(records)

    def flush_metrics(self) -> int:
        with self._lock:
            batch, self._metrics = self._metrics, []
        if batch:
            self._next(layout.metrics_prefix(self.attempt), encode_jsonl(batch), ".jsonl")
        return len(batch)

    def heartbeat(self) -> None:
        beat = {"t": time.time(), "pid": os.getpid(), "host": socket.gethostname(), **self.progress}
        self._next(layout.heartbeat_prefix(self.attempt), json.dumps(beat).encode(), ".json")

    def sample_resources(self) -> None:
        if self.sampler is not None:
            self._next(layout.resources_prefix(self.attempt), encode_jsonl([self.sampler.sample()]), ".jsonl")

    def tick(self) -> None:
        self.flush_metrics()
        self.sample_resources()
        self.heartbeat()


class StopFlag:
    """Set by SIGTERM/SIGINT or by a ``cancel.json`` in the job folder."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()

    def __bool__(self) -> bool:
        return self.event.is_set()


class _Ticker(threading.Thread):
    def __init__(self, writer: AttemptWriter, stop: StopFlag, job_store: ArtifactStore, interval: float):
        super().__init__(name="nsbi-worker-ticker", daemon=True)
        self.writer, self.stop_flag, self.job_store, self.interval = writer, stop, job_store, interval
        self.done = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.done.wait(self.interval):
            try:
                self.writer.tick()
                if self.job_store.exists(layout.CANCEL):
                    self.stop_flag.set("cancel requested (cancel.json)")
            except Exception as exc:  # a flaky store must not kill the job; report at the end
                self.errors.append(f"{type(exc).__name__}: {exc}")


# ---------------------------------------------------------------------- job context + kinds


@dataclass
class JobContext:
    """What a job-kind function gets: its spec, the store, and the hooks into the runtime."""

    spec: dict[str, Any]
    job_store: ArtifactStore
    attempt: int
    writer: AttemptWriter
    checkpointer: StoreCheckpointer
    stop: StopFlag

    @property
    def params(self) -> dict[str, Any]:
        p = self.spec.get("params")
        return p if isinstance(p, dict) else self.spec

    def put_artifact(self, name: str, data: bytes) -> str:
        return self.job_store.put_bytes(f"{layout.artifacts_prefix(self.attempt)}/{name}", data)

    def set_progress(self, **kw: Any) -> None:
        self.writer.progress.update(kw)

    def check_stop(self) -> None:
        if self.stop:
            raise Preempted(self.stop.reason)


def run_noop(ctx: JobContext) -> dict[str, Any]:
    """Test-only job: ``steps`` steps of ``step_s`` seconds, a metric per step, checkpoints.

    Resumes from the newest checkpoint of any attempt, so a retry runs fewer steps. Params:
    steps (10), step_s (0.05), checkpoint_every (1), fail_on_attempts ([]), fail_at_step,
    ignore_stop (False: a stop request is honoured within one step).
    """
    p = ctx.params
    steps = int(p.get("steps", 10))
    step_s = float(p.get("step_s", 0.05))
    every = max(1, int(p.get("checkpoint_every", 1)))
    fail_on = {int(a) for a in p.get("fail_on_attempts", [])}
    fail_at = int(p.get("fail_at_step", steps // 2))
    latest = ctx.checkpointer.load_latest()
    start = json.loads(latest[1])["step"] if latest else 0
    steps_run = 0
    ignore_stop = bool(p.get("ignore_stop", False))  # simulates a hung worker (SIGKILL tests)
    for step in range(start + 1, steps + 1):
        if ignore_stop:
            time.sleep(step_s)
        elif ctx.stop.event.wait(step_s):
            raise Preempted(ctx.stop.reason)
        ctx.writer.add_metrics([
            {"member": -1, "step": step, "epoch": None, "name": "loss", "value": 1.0 / step},
            {"member": 0, "step": step, "epoch": None, "name": "train_loss", "value": 2.0 / step},
        ])
        steps_run += 1
        ctx.set_progress(step=step)
        if step % every == 0 or step == steps:
            ctx.checkpointer.save(step, json.dumps({"step": step}).encode())
        if ctx.attempt in fail_on and step >= fail_at:
            raise RuntimeError(f"noop job: deliberate failure at step {step} on attempt {ctx.attempt}")
    uri = ctx.put_artifact("noop.json", json.dumps({"steps": steps}).encode())
    return {"artifacts": {"noop": uri}, "summary": {"steps": steps, "steps_run": steps_run,
                                                    "resumed_from": start or None}}


class _TrainHooks:
    """The engine's ``TrainCallbacks``: metrics into the writer, stop from the flag."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx

    def on_metrics(self, step: int, records: list[dict]) -> None:
        self.ctx.writer.add_metrics([dict(r) for r in records])
        self.ctx.set_progress(step=int(step))

    def should_stop(self) -> bool:
        return bool(self.ctx.stop)


def _require(spec: dict, key: str, kind: str) -> Any:
    if key not in spec:
        raise JobSpecError(f"spec.json of a {kind!r} job lacks the key {key!r} (has: {sorted(spec)})")
    return spec[key]


def run_train(ctx: JobContext) -> dict[str, Any]:
    """Train a ratio ensemble: numerator/denominator sample specs + a TrainConfig dict."""
    from sbi_engine.data import load_sample_spec
    from sbi_engine.ratio import TrainConfig, train_ensemble

    p = ctx.params
    numerator = load_sample_spec(_require(p, "numerator", "train"))
    denominator = load_sample_spec(_require(p, "denominator", "train"))
    config = TrainConfig.from_dict(dict(p.get("train") or p.get("config") or {}))
    result = train_ensemble(numerator, denominator, config, checkpointer=ctx.checkpointer,
                            callbacks=_TrainHooks(ctx))
    if result.stopped_early and ctx.stop:
        raise Preempted(ctx.stop.reason)  # a checkpoint was saved; the retry resumes from it
    uri = ctx.put_artifact("ensemble.npz", result.ensemble.to_bytes())
    resumed = result.resumed_from
    finals: dict[str, float] = {}
    for rec in result.history:  # last value of each metric, averaged over members
        finals.setdefault(rec["name"], {})[rec["member"]] = float(rec["value"])  # type: ignore[index]
    summary = {
        "task": p.get("task"),
        "members": list(p.get("members") or []),
        "steps_total": int(result.steps_run),          # all attempts together
        "resumed_from": resumed,                         # checkpoint step this attempt started at
        "steps_run": int(result.steps_run) - int(resumed or 0),  # steps executed by this attempt
        "seconds": float(result.seconds),
        "final": {k: sum(v.values()) / len(v) for k, v in finals.items()},  # type: ignore[union-attr]
    }
    return {"artifacts": {"ensemble": uri}, "summary": summary}


def local_path(uri: str, tmpdir: Path) -> Path:
    """A local file for ``uri``: the file itself for file:// URIs, a download otherwise."""
    if uri.startswith("file://") or uri.startswith("/"):
        from backend.stores.local import path_from_uri

        return path_from_uri(uri)
    parent, _, name = uri.rpartition("/")
    dest = tmpdir / name
    dest.write_bytes(open_store(parent).get_bytes(name))
    return dest


def collect_ensembles(inputs: dict[str, Any]) -> dict[str, list[str]]:
    """Ensemble URIs per ratio task from the dependencies' results: a train job's
    ``artifacts.ensemble`` (task from its summary) and a fit job's pass-through ``ensembles``."""
    out: dict[str, list[str]] = {}
    for dep_name, dep in sorted(inputs.items()):
        uri = (dep.get("artifacts") or {}).get("ensemble")
        if uri:
            task = (dep.get("summary") or {}).get("task") or dep_name
            out.setdefault(task, []).append(uri)
        for task, uris in (dep.get("ensembles") or {}).items():
            out.setdefault(task, []).extend(u for u in uris if u not in out.get(task, []))
    return out


def _fit_entry(kind: str) -> Callable[[dict, dict], dict]:
    """The engine's job-level function for a fit-stage kind (kept in sbi_engine: it is science)."""
    try:
        from sbi_engine import fit_jobs
    except ImportError:
        fit_jobs = None
    if fit_jobs is not None and hasattr(fit_jobs, "run_job"):
        return lambda params, ensembles: fit_jobs.run_job(kind, params, ensembles)
    from sbi_engine import pipeline

    if kind == "fit" and hasattr(pipeline, "run_demo_fit"):
        return pipeline.run_demo_fit
    raise JobSpecError(f"this build has no engine entry point for {kind!r} jobs "
                       "(expected sbi_engine.fit_jobs.run_job or sbi_engine.pipeline.run_demo_fit)")


def run_fit_like(ctx: JobContext) -> dict[str, Any]:
    """fit / impacts / scan / toys: fetch the ensembles the job depends on, hand the params and
    local ensemble paths to the engine, and store what it returns."""
    kind = str(ctx.spec.get("kind"))
    uris = collect_ensembles(ctx.spec.get("inputs") or {})
    with tempfile.TemporaryDirectory() as tmp:
        paths = {task: [str(local_path(u, Path(tmp))) for u in us] for task, us in uris.items()}
        out = _fit_entry(kind)(dict(ctx.params), paths)
        out = dict(out) if isinstance(out, dict) else {"result": out}
        artifacts = {}
        for name, item in sorted((out.pop("files", None) or {}).items()):
            data = item if isinstance(item, bytes) else Path(item).read_bytes()
            artifacts[name] = ctx.put_artifact(name, data)
    artifacts.update({k: v for k, v in (out.pop("artifacts", None) or {}).items() if isinstance(v, str)})
    return {"artifacts": artifacts, "summary": out, "ensembles": uris}


KINDS: dict[str, Callable[[JobContext], dict[str, Any]]] = {
    "noop": run_noop,
    "train": run_train,
    "fit": run_fit_like,
    "impacts": run_fit_like,
    "scan": run_fit_like,
    "toys": run_fit_like,
}


# ---------------------------------------------------------------------- the attempt itself


@dataclass(frozen=True)
class WorkerOutcome:
    status: str        # succeeded | failed | preempted
    exit_code: int
    error: str | None = None


def _write_exit(job_store: ArtifactStore, attempt: int, outcome: WorkerOutcome, started: float) -> None:
    put_json(job_store, layout.exit_key(attempt), {
        "status": outcome.status, "exit_code": outcome.exit_code, "error": outcome.error,
        "attempt": attempt, "started_at": started, "finished_at": time.time(),
        "pid": os.getpid(), "host": socket.gethostname(),
    })


def run_attempt(job_uri: str, attempt: int, *, install_signals: bool = True,
                interval: float | None = None) -> WorkerOutcome:
    """Run one attempt end to end and return how it ended (exit.json is written unless the
    store itself is unreachable)."""
    started = time.time()
    try:
        job_store = open_store(job_uri)
    except StoreError as exc:
        return WorkerOutcome("failed", EXIT_BAD_SPEC, f"cannot open job store: {exc}")
    stop = StopFlag()
    if install_signals:
        def on_signal(signum, _frame):
            stop.set(f"received {signal.Signals(signum).name}")
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    try:
        spec = get_json(job_store, layout.SPEC)
        if not isinstance(spec, dict):
            raise JobSpecError(f"{job_store.uri_for(layout.SPEC)}: expected a JSON object")
        kind = spec.get("kind")
        if kind not in KINDS:
            raise JobSpecError(f"{job_store.uri_for(layout.SPEC)}: unknown job kind {kind!r} (known: {sorted(KINDS)})")
    except (ObjectNotFound, StoreError, JobSpecError) as exc:
        outcome = WorkerOutcome("failed", EXIT_BAD_SPEC, str(exc))
        _safe_exit(job_store, attempt, outcome, started)
        return outcome

    from backend.resources import ResourceSampler

    writer = AttemptWriter(job_store, attempt, sampler=ResourceSampler())
    checkpointer = StoreCheckpointer(job_store, attempt, before_save=writer.flush_metrics)
    ctx = JobContext(spec, job_store, attempt, writer, checkpointer, stop)
    writer.heartbeat()
    ticker = _Ticker(writer, stop, job_store, interval if interval is not None else _interval())
    ticker.start()
    try:
        result = KINDS[kind](ctx)
        put_json(job_store, layout.result_key(attempt), {"status": "succeeded", "kind": kind, "attempt": attempt, **result})
        outcome = WorkerOutcome("succeeded", EXIT_SUCCEEDED)
    except Preempted as exc:
        outcome = WorkerOutcome("preempted", EXIT_PREEMPTED, str(exc) or "stop requested")
    except JobSpecError as exc:
        outcome = WorkerOutcome("failed", EXIT_BAD_SPEC, str(exc))
    except Exception as exc:
        tb = traceback.format_exc(limit=8)
        outcome = WorkerOutcome("failed", EXIT_FAILED, f"{type(exc).__name__}: {exc}\n{tb[-3000:]}")
    finally:
        ticker.done.set()
        ticker.join(timeout=10)
    try:
        writer.tick()  # last metrics, a final resource sample and heartbeat
    except Exception as exc:
        if outcome.exit_code == EXIT_SUCCEEDED:
            outcome = WorkerOutcome("failed", EXIT_FAILED, f"could not flush final segments: {exc}")
    _safe_exit(job_store, attempt, outcome, started)
    return outcome


def _safe_exit(job_store: ArtifactStore, attempt: int, outcome: WorkerOutcome, started: float) -> None:
    try:
        _write_exit(job_store, attempt, outcome, started)
    except Exception as exc:  # nothing more we can do; the exit code still tells the launcher
        print(f"nsbi worker: could not write exit.json: {exc}", flush=True)
