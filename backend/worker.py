"""The worker runtime: runs one attempt of one job from its spec in the artifact store.

``nsbi worker <job-uri> --attempt N`` needs only the job URI (and store credentials): it reads
``spec.json``, runs the job kind, and writes everything the controller needs back into the
store under ``attempts/<N>/`` (see :mod:`backend.stores.layout`): heartbeats, metric and
resource segments, checkpoints, ``result.json`` and always ``exit.json``. It never touches the
database, which is what lets the same worker run as a local process or on a cloud VM.

On SIGTERM (or a ``cancel.json`` in the job folder) the job is asked to stop; training writes
a checkpoint and the worker exits with :data:`EXIT_PREEMPTED` and ``{"status": "preempted"}``.

Job kinds come from :data:`backend.jobkinds.KINDS` plus, when ``NSBI_JOB_KIND_MODULES`` is set,
the ``KINDS`` dict of each module it names (comma-separated importable module names, e.g.
``nsbi_testing.jobkinds`` for the tests' "noop" kind; the module must be importable by the
worker, so set PYTHONPATH too where it is not installed). A module that cannot be loaded fails
the attempt for good, with the reason in ``exit.json``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from backend.jobkinds import JobContext, JobKind, JobSpecError, Preempted, StopFlag, load_kinds
from backend.settings import get_settings
from backend.stores import ArtifactStore, ObjectNotFound, StoreError, layout, open_store
from backend.stores.base import append_segment, encode_jsonl, get_json, list_segments, put_json
from backend.worker_output import OutputBuffer, captured_output, write_output_segment

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_BAD_SPEC = 2
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again later", resumable from the last checkpoint

# Metrics reported by the job (one batch per evaluation) are written as a segment within about
# this many seconds, not only at the heartbeat interval: the curves then grow point by point on
# the dashboard while a job trains. At most one metric segment per this interval (cheap on GCS).
METRICS_FLUSH_S = 1.0

# A stop request (SIGTERM, cancel.json) must end the attempt within 25 s. Kinds that poll the
# stop flag get `NSBI_WORKER_STOP_GRACE_S` (default 15 s) to write a checkpoint and return; after
# that (or at once for kinds that cannot stop cooperatively) the main thread is interrupted.


def job_kinds() -> dict[str, JobKind]:
    """The built-in kinds plus those of the modules named in ``NSBI_JOB_KIND_MODULES``."""
    return load_kinds(list(get_settings().worker.job_kind_modules))


# ---------------------------------------------------------------------- store-backed pieces


class StoreCheckpointer:
    """The engine's ``Checkpointer`` over the store: saves into this attempt, loads the newest
    checkpoint of *any* attempt of the job, so a retry resumes where the last one stopped."""

    def __init__(
        self,
        job_store: ArtifactStore,
        attempt: int,
        *,
        keep: int = 2,
        before_save: Callable[[], Any] | None = None,
    ) -> None:
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

    Thread-safe: the job thread calls ``add_metrics`` (it never waits on the store); the
    background ticker writes buffered metrics within ``METRICS_FLUSH_S`` of their arrival
    (``flush_due``) and calls ``tick`` (metrics, a resource sample, a heartbeat) every
    interval; the worker's final ``tick`` flushes what is left.
    """

    store: ArtifactStore
    attempt: int
    sampler: Any = None
    output: OutputBuffer | None = None  # the attempt's stdout/stderr, copied to the store
    _metrics: list[dict] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seq: dict[str, int] = field(default_factory=dict)
    progress: dict[str, Any] = field(default_factory=dict)
    _last_flush: float = 0.0
    # one segment write at a time: the job thread (the flush before a checkpoint) and the
    # ticker would otherwise race for the same sequence number, and a store whose exclusive
    # create is not enforced (the GCS emulator ignores preconditions) let the second upload
    # replace the first; a store outage made both wait on the same key (points were lost)
    _write_lock: threading.Lock = field(default_factory=threading.Lock)

    def _next(self, prefix: str, data: bytes, suffix: str) -> None:
        with self._write_lock:
            seq, _ = append_segment(
                self.store, prefix, data, suffix=suffix, start=self._seq.get(prefix, 1)
            )
            self._seq[prefix] = seq + 1

    def add_metrics(self, records: list[dict]) -> None:
        with self._lock:
            self._metrics.extend(records)

    def flush_metrics(self) -> int:
        # a batch the store refuses (an outage, a full disk) goes back to the front of the
        # buffer for the next flush: a store failure delays metric points, never drops them
        with self._lock:
            batch, self._metrics = self._metrics, []
            self._last_flush = time.monotonic()
        if batch:
            try:
                self._next(layout.metrics_prefix(self.attempt), encode_jsonl(batch), ".jsonl")
            except BaseException:
                with self._lock:
                    self._metrics[:0] = batch
                raise
        return len(batch)

    def flush_due(self, min_interval_s: float = METRICS_FLUSH_S) -> int:
        """Flush buffered metrics if there are any and the last flush is `min_interval_s` old."""
        with self._lock:
            due = bool(self._metrics) and time.monotonic() - self._last_flush >= min_interval_s
        return self.flush_metrics() if due else 0

    def heartbeat(self) -> None:
        beat = {"t": time.time(), "pid": os.getpid(), "host": socket.gethostname(), **self.progress}
        self._next(layout.heartbeat_prefix(self.attempt), json.dumps(beat).encode(), ".json")

    def sample_resources(self) -> None:
        if self.sampler is not None:
            self._next(
                layout.resources_prefix(self.attempt),
                encode_jsonl([self.sampler.sample()]),
                ".jsonl",
            )

    def flush_output(self) -> int:
        if self.output is None:
            return 0
        return write_output_segment(self.attempt, self.output, self._next)

    def tick(self) -> None:
        self.flush_metrics()
        self.flush_output()
        self.sample_resources()
        self.heartbeat()


class _Ticker(threading.Thread):
    """Background duties: heartbeat, resource sample, metric flush, cancel check, stop deadline."""

    def __init__(
        self,
        writer: AttemptWriter,
        stop: StopFlag,
        job_store: ArtifactStore,
        interval: float,
        grace_s: float,
        on_deadline: Callable[[], None],
    ):
        super().__init__(name="nsbi-worker-ticker", daemon=True)
        self.writer, self.stop_flag, self.job_store, self.interval = (
            writer,
            stop,
            job_store,
            interval,
        )
        self.grace_s = grace_s
        self.on_deadline = on_deadline
        self.done = threading.Event()
        self.interrupted = False
        self.errors: list[str] = []

    def run(self) -> None:
        # resource samples and heartbeats at a steady rate: each tick is due `interval` after
        # the previous one was due (not after it ended), so a slow store write does not stretch
        # the spacing of the samples
        due = time.monotonic()  # the first resource sample right at the start
        while not self.done.wait(max(0.0, min(due - time.monotonic(), 0.25))):
            now = time.monotonic()
            try:
                if now >= due:
                    due += self.interval
                    if due <= now:  # more than a whole interval late: skip, do not catch up
                        due = now + self.interval
                    self.writer.tick()
                    if not self.stop_flag and self.job_store.exists(layout.CANCEL):
                        self.stop_flag.set("cancel requested (cancel.json)")
                else:
                    self.writer.flush_due()  # each evaluation's points as they come
            except Exception as exc:  # a flaky store must not kill the job; report at the end
                self.errors.append(f"{type(exc).__name__}: {exc}")
            set_at = self.stop_flag.set_at
            if set_at is not None and not self.interrupted and now - set_at >= self.grace_s:
                self.interrupted = True  # the job did not stop in time
                self.on_deadline()


def _interrupt_main_thread() -> None:
    """Deliver SIGINT to the main thread itself, so a blocking sleep/wait there wakes up too."""
    ident = threading.main_thread().ident
    assert ident is not None  # only a thread not yet started has no ident
    signal.pthread_kill(ident, signal.SIGINT)


# ---------------------------------------------------------------------- the attempt itself


@dataclass(frozen=True)
class WorkerOutcome:
    status: str  # succeeded | failed | preempted
    exit_code: int
    error: str | None = None
    # False when another attempt of the same spec must fail the same way (a bad spec): the
    # controller then fails the job for good instead of retrying it
    retryable: bool = True
    # why it failed, for the controller and the exit record: "spec_error" (the job spec or
    # the inputs it names cannot be used: a missing sample file, a bad column, a workspace
    # the engine refuses; never retried), "bad_spec" (spec.json itself), "environment",
    # "error" (anything else: retried within the job's limit), None when it did not fail
    failure_kind: str | None = None


# Engine exceptions that mean "these inputs cannot be used": deterministic, so another attempt
# of the same spec fails the same way. Looked up in sys.modules (a class not imported yet cannot
# have been raised), so the worker imports no engine module for this.
SPEC_ERROR_TYPES: tuple[tuple[str, str], ...] = (
    ("sbi_engine.sample", "DataError"),  # sample files: missing, bad column, NaN, empty
    ("sbi_engine.fit.workspace", "WorkspaceError"),
    ("sbi_engine.fit_jobs", "FitJobError"),
)


def is_spec_error(exc: BaseException) -> bool:
    """True for `JobSpecError` and the engine's input errors (`SPEC_ERROR_TYPES`)."""
    if isinstance(exc, JobSpecError):
        return True
    for module, name in SPEC_ERROR_TYPES:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and isinstance(exc, cls):
            return True
    return False


def _write_exit(
    job_store: ArtifactStore, attempt: int, outcome: WorkerOutcome, started: float
) -> None:
    put_json(
        job_store,
        layout.exit_key(attempt),
        {
            "status": outcome.status,
            "exit_code": outcome.exit_code,
            "error": outcome.error,
            "retryable": outcome.retryable,
            "failure_kind": outcome.failure_kind,
            "attempt": attempt,
            "started_at": started,
            "finished_at": time.time(),
            "pid": os.getpid(),
            "host": socket.gethostname(),
        },
    )


def run_attempt(
    job_uri: str,
    attempt: int,
    *,
    install_signals: bool = True,
    interval: float | None = None,
    capture_output: bool = False,
) -> WorkerOutcome:
    """Run one attempt end to end and return how it ended (exit.json is written unless the
    store itself is unreachable). With ``capture_output`` (the ``nsbi worker`` command) what
    the job writes to stdout and stderr is also copied into the store (`worker_output`)."""
    started = time.time()
    try:
        job_store = open_store(job_uri)
    except StoreError as exc:
        return WorkerOutcome("failed", EXIT_BAD_SPEC, f"cannot open job store: {exc}")
    stop = StopFlag()
    in_job = {"now": False, "cooperative": True, "force": False}
    if install_signals:

        def on_signal(signum, _frame):
            stop.set(f"received {signal.Signals(signum).name}", from_signal=True)
            if in_job["now"] and (in_job["force"] or not in_job["cooperative"]):
                raise Preempted(stop.reason)  # cannot (or did not) stop by itself: stop right away

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    try:
        kinds = job_kinds()
    except Exception as exc:  # the worker's environment (a module failed to import): final
        outcome = WorkerOutcome(
            "failed",
            EXIT_FAILED,
            f"NSBI_JOB_KIND_MODULES: {type(exc).__name__}: {exc}",
            retryable=False,
            failure_kind="environment",
        )
        _safe_exit(job_store, attempt, outcome, started)
        return outcome
    try:
        spec = get_json(job_store, layout.SPEC)
        if not isinstance(spec, dict):
            raise JobSpecError(f"{job_store.uri_for(layout.SPEC)}: expected a JSON object")
        kind = spec.get("kind")
        if kind not in kinds:
            raise JobSpecError(
                f"{job_store.uri_for(layout.SPEC)}: unknown job kind {kind!r} (known: {sorted(kinds)})"
            )
    except (ObjectNotFound, StoreError, JobSpecError) as exc:
        # a spec that is there but unusable fails every attempt alike; a missing or unreadable
        # one may be the store's passing trouble (the controller rewrites spec.json per launch)
        bad = isinstance(exc, JobSpecError) or isinstance(exc.__cause__, json.JSONDecodeError)
        outcome = WorkerOutcome(
            "failed",
            EXIT_BAD_SPEC,
            str(exc),
            retryable=not bad,
            failure_kind="bad_spec" if bad else "error",
        )
        _safe_exit(job_store, attempt, outcome, started)
        return outcome

    from backend.resources import ResourceSampler

    output = OutputBuffer() if capture_output else None
    writer = AttemptWriter(job_store, attempt, sampler=ResourceSampler(), output=output)
    checkpointer = StoreCheckpointer(job_store, attempt, before_save=writer.flush_metrics)
    ctx = JobContext(spec, job_store, attempt, writer, checkpointer, stop)
    try:
        writer.heartbeat()
    except StoreError as exc:  # the store takes no writes (a full disk, an outage past retries)
        outcome = WorkerOutcome(
            "failed", EXIT_FAILED, f"first heartbeat: {exc}", failure_kind="error"
        )
        _safe_exit(job_store, attempt, outcome, started)
        return outcome
    in_job["cooperative"] = kinds[kind].cooperative

    def deadline() -> None:
        in_job["force"] = True
        if in_job["now"]:
            _interrupt_main_thread()

    worker_settings = get_settings().worker
    ticker = _Ticker(
        writer,
        stop,
        job_store,
        interval if interval is not None else worker_settings.interval_s,
        worker_settings.stop_grace_s if in_job["cooperative"] else 0.0,
        deadline,
    )
    capture = ExitStack()
    if output is not None:
        capture.enter_context(captured_output(output))
    ticker.start()
    try:
        in_job["now"] = True
        try:
            result = kinds[kind].run(ctx)
        finally:
            in_job["now"] = False
        put_json(
            job_store,
            layout.result_key(attempt),
            {"status": "succeeded", "kind": kind, "attempt": attempt, **result},
        )
        outcome = WorkerOutcome("succeeded", EXIT_SUCCEEDED)
    except (Preempted, KeyboardInterrupt) as exc:
        why = str(exc) or stop.reason or "interrupted"
        if ticker.interrupted:
            why = f"{stop.reason}; did not stop within {ticker.grace_s:.0f} s, interrupted (last checkpoint stands)"
        outcome = WorkerOutcome("preempted", EXIT_PREEMPTED, why)
    except Exception as exc:
        if is_spec_error(exc):  # the spec or its inputs: every attempt would fail alike
            outcome = WorkerOutcome(
                "failed", EXIT_BAD_SPEC, str(exc), retryable=False, failure_kind="spec_error"
            )
        else:
            tb = traceback.format_exc(limit=8)
            if output is not None:  # the stored output ends with the traceback, as a log would
                print(tb, file=sys.stderr, end="", flush=True)
            outcome = WorkerOutcome(
                "failed",
                EXIT_FAILED,
                f"{type(exc).__name__}: {exc}\n{tb[-3000:]}",
                failure_kind="error",
            )
    finally:
        ticker.done.set()
        ticker.join(timeout=10)
        capture.close()
    try:
        writer.tick()  # last metrics and output, a final resource sample and heartbeat
    except Exception as exc:
        if outcome.exit_code == EXIT_SUCCEEDED:
            outcome = WorkerOutcome(
                "failed",
                EXIT_FAILED,
                f"could not flush final segments: {exc}",
                failure_kind="error",
            )
    _safe_exit(job_store, attempt, outcome, started)
    return outcome


def _safe_exit(
    job_store: ArtifactStore, attempt: int, outcome: WorkerOutcome, started: float
) -> None:
    try:
        _write_exit(job_store, attempt, outcome, started)
    except Exception as exc:  # nothing more we can do; the exit code still tells the launcher
        print(f"nsbi worker: could not write exit.json: {exc}", flush=True)
