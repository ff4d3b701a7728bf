"""Job kinds: what a worker runs for each ``spec.json["kind"]``.

Each kind is a function ``(JobContext) -> {"artifacts": {name: uri}, "summary": {...}, ...}``
wrapped in a :class:`JobKind` and registered in :data:`KINDS`; the worker runtime
(:mod:`backend.worker`) handles everything around it (heartbeats, segments, signals, exit
records). Science stays in ``sbi_engine``: "train" calls ``train_ensemble``, the fit-stage
kinds call ``sbi_engine.fit_jobs``.

The registry is extended explicitly, never by import side effects: :func:`load_kinds` adds the
``KINDS`` dict of each named module (the worker names them in ``NSBI_JOB_KIND_MODULES``,
comma-separated importable modules). That is how the tests' fast, fault-injecting "noop" kind
(``nsbi_testing.jobkinds``, not installed by the wheel) reaches a worker.

This module does not import the worker: the runtime pieces a kind uses are described by the
protocols below, so the dependency runs one way (worker -> jobkinds).
"""

from __future__ import annotations

import importlib
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from backend.signal_safe import set_event_soon
from backend.stores import ArtifactStore, layout, open_store

if TYPE_CHECKING:
    from sbi_engine.ratio import TrainCallbacks


class JobSpecError(Exception):
    """The job spec is missing, unreadable or lacks a field the job kind needs."""


class Preempted(Exception):
    """Raised inside a job when a stop was requested; the worker exits as preempted."""


class StopFlag:
    """Set by SIGTERM/SIGINT or by a ``cancel.json`` in the job folder; kinds poll or wait on it."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""
        self.set_at: float | None = None

    def set(self, reason: str, *, from_signal: bool = False) -> None:
        """Set the flag; ``from_signal`` in a signal handler (`backend.signal_safe`: a job
        that waits on the event would otherwise deadlock its own main thread)."""
        if not self.event.is_set():
            self.reason = reason
            self.set_at = time.monotonic()
            if from_signal:
                set_event_soon(self.event)
            else:
                self.event.set()

    def __bool__(self) -> bool:
        return self.event.is_set()


class MetricsWriter(Protocol):
    """The part of the worker's attempt writer a kind uses (``backend.worker.AttemptWriter``)."""

    progress: dict[str, Any]

    def add_metrics(self, records: list[dict]) -> None: ...


class JobCheckpointer(Protocol):
    """Checkpoints of the job across attempts (``backend.worker.StoreCheckpointer``)."""

    def save(self, step: int, payload: bytes) -> None: ...

    def load_latest(self) -> tuple[int, bytes] | None: ...


@dataclass
class JobContext:
    """What a job-kind function gets: its spec, the store, and the hooks into the runtime."""

    spec: dict[str, Any]
    job_store: ArtifactStore
    attempt: int
    writer: MetricsWriter
    checkpointer: JobCheckpointer
    stop: StopFlag

    @property
    def params(self) -> dict[str, Any]:
        p = self.spec.get("params")
        return p if isinstance(p, dict) else self.spec

    def put_artifact(self, name: str, data: bytes) -> str:
        return self.job_store.put_bytes(f"{layout.artifacts_prefix(self.attempt)}/{name}", data)

    def set_progress(self, **kw: Any) -> None:
        self.writer.progress.update(kw)


@dataclass(frozen=True)
class JobKind:
    """A registered kind. ``cooperative`` kinds poll ``ctx.stop`` and checkpoint before
    returning, so the worker gives them a grace period instead of interrupting them at once."""

    run: Callable[[JobContext], dict[str, Any]]
    cooperative: bool = False


def _train_hooks(ctx: JobContext) -> TrainCallbacks:
    """The engine's ``TrainCallbacks``: metrics into the writer, stop from the flag.

    The subclass is made here, not at module level, so that importing this module does not
    import the engine (and JAX)."""
    from sbi_engine.ratio import TrainCallbacks

    class _TrainHooks(TrainCallbacks):
        def on_metrics(self, step: int, records: list[dict]) -> None:
            ctx.writer.add_metrics([dict(r) for r in records])
            ctx.set_progress(step=int(step))

        def should_stop(self) -> bool:
            return bool(ctx.stop)

    return _TrainHooks()


def _require(spec: dict, key: str, kind: str) -> Any:
    if key not in spec:
        raise JobSpecError(
            f"spec.json of a {kind!r} job lacks the key {key!r} (has: {sorted(spec)})"
        )
    return spec[key]


def run_train(ctx: JobContext) -> dict[str, Any]:
    """Train a ratio ensemble: numerator/denominator sample specs + a TrainConfig dict.

    The networks train on the "train" part of each sample (`sbi_engine.sample_specs.sample_parts`);
    the diagnostics run on the "eval" part, which they never saw, and the summary records how
    each sample was split (``summary["split"]``).
    """
    from sbi_engine.ratio import TrainConfig, train_ensemble
    from sbi_engine.sample_specs import sample_parts, shared_events_split_apart

    p = ctx.params
    parts = {}
    for role in ("numerator", "denominator"):
        spec = _require(p, role, "train")
        try:
            parts[role] = sample_parts(spec)
        except ValueError as exc:  # DataError and kin: a missing file, a bad column, ...
            # the same spec fails every attempt alike: a spec error, never retried
            raise JobSpecError(f"params.{role}: {exc}") from exc
    num_parts, den_parts = parts["numerator"], parts["denominator"]
    leak = shared_events_split_apart(num_parts, den_parts)
    if leak:
        raise JobSpecError(f"params.numerator/denominator: {leak}")
    numerator, denominator = num_parts.train, den_parts.train
    config = TrainConfig.from_dict(dict(p.get("train") or p.get("config") or {}))
    result = train_ensemble(
        numerator, denominator, config, checkpointer=ctx.checkpointer, callbacks=_train_hooks(ctx)
    )
    if result.stopped_early and ctx.stop:
        raise Preempted(ctx.stop.reason)  # a checkpoint was saved; the retry resumes from it
    uri = ctx.put_artifact("ensemble.npz", result.ensemble.to_bytes())
    resumed = result.resumed_from
    paired = bool(result.ensemble.metadata["split"].get("paired", False))
    finals: dict[str, dict[int, float]] = {}  # {metric: {member: last value}}
    for rec in result.history:  # last value of each metric, averaged over members
        finals.setdefault(rec["name"], {})[rec["member"]] = float(rec["value"])
    summary = {
        "task": p.get("task"),
        "members": list(p.get("members") or []),
        "steps_total": int(result.steps_run),  # all attempts together
        "resumed_from": resumed,  # checkpoint step this attempt started at
        "steps_run": int(result.steps_run) - int(resumed or 0),  # steps executed by this attempt
        "seconds": float(result.seconds),
        "final": {k: sum(v.values()) / len(v) for k, v in finals.items()},
        "split": {"numerator": num_parts.record, "denominator": den_parts.record},
        # the same events with two weightings, one row each (sbi_engine.ratio.prepare)
        "paired": paired,
        "diagnostics": {
            **ensemble_diagnostics(
                result.ensemble,
                p,
                numerator,
                denominator,
                held_out=(num_parts.eval, den_parts.eval),
            ),
            "paired": paired,
        },
    }
    return {"artifacts": {"ensemble": uri}, "summary": summary}


def ensemble_diagnostics(
    ensemble: Any,
    params: dict,
    numerator: Any,
    denominator: Any,
    held_out: tuple[Any, Any] | None = None,
) -> dict[str, Any]:
    """Calibration, closure, normalisation, AUC and overtraining of a freshly trained ensemble.

    The checks run on the evaluation ("eval") part of both samples -- events the networks never
    saw: a fresh draw for demo samples, the hashed-out share (or the ``eval_sample``) for file
    samples (`sbi_engine.sample_specs.load_sample_spec`). ``numerator``/``denominator`` are the training
    samples (for the overtraining comparison); ``held_out`` passes the evaluation samples when
    the caller has them already, otherwise they are loaded from ``params``. A failure is
    reported, never fatal: the trained ensemble is what the job is for.
    """
    from sbi_engine.ratio import diagnostics
    from sbi_engine.sample_specs import load_sample_spec

    try:
        if held_out is None:
            held_out = (
                load_sample_spec(params["numerator"], role="eval"),
                load_sample_spec(params["denominator"], role="eval"),
            )
        num_h, den_h = held_out
        out = diagnostics(
            ensemble, num_h, den_h, train_numerator=numerator, train_reference=denominator
        ).to_dict()
        out["held_out"] = True
        out["n_eval"] = {"numerator": len(num_h), "denominator": len(den_h)}
        return out
    except Exception as exc:  # noqa: BLE001 - reported in the result, shown by the dashboard
        return {"error": f"{type(exc).__name__}: {exc}"}


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


def run_fit_like(ctx: JobContext) -> dict[str, Any]:
    """fit / impacts / scan / toys: fetch the ensembles the job depends on, hand the spec and
    local ensemble paths to the engine (``sbi_engine.fit_jobs.run_fit_job``: the science stays
    in the engine), and store what it returns."""
    from sbi_engine.fit_jobs import run_fit_job

    if not isinstance(ctx.spec.get("params"), dict):
        raise JobSpecError(f"spec.json of a {ctx.spec.get('kind')!r} job lacks the 'params' object")
    uris = collect_ensembles(ctx.spec.get("inputs") or {})
    with tempfile.TemporaryDirectory() as tmp:
        paths = {task: [str(local_path(u, Path(tmp))) for u in us] for task, us in uris.items()}
        out = run_fit_job(dict(ctx.spec), paths)
        out = dict(out) if isinstance(out, dict) else {"result": out}
        artifacts = {}
        for name, item in sorted((out.pop("files", None) or {}).items()):
            data = item if isinstance(item, bytes) else Path(item).read_bytes()
            artifacts[name] = ctx.put_artifact(name, data)
    artifacts.update(
        {k: v for k, v in (out.pop("artifacts", None) or {}).items() if isinstance(v, str)}
    )
    return {"artifacts": artifacts, "summary": out, "ensembles": uris}


KINDS: dict[str, JobKind] = {
    "train": JobKind(run_train, cooperative=True),
    "fit": JobKind(run_fit_like),
    "impacts": JobKind(run_fit_like),
    "scan": JobKind(run_fit_like),
    "toys": JobKind(run_fit_like),
}


def load_kinds(modules: Iterable[str] = ()) -> dict[str, JobKind]:
    """:data:`KINDS` plus the ``KINDS`` dict of each named module (values: a :class:`JobKind`
    or a bare function, taken as non-cooperative). A module may add kinds, not replace the
    built-in ones. Raises ``ImportError`` or ``ValueError`` for a module that cannot serve."""
    kinds = dict(KINDS)
    for name in (m.strip() for m in modules):
        if not name:
            continue
        extra = getattr(importlib.import_module(name), "KINDS", None)
        if not isinstance(extra, Mapping):
            raise ValueError(f"job kind module {name!r} has no KINDS dict")
        for kind, entry in extra.items():
            if kind in KINDS:
                raise ValueError(f"job kind module {name!r} redefines the built-in kind {kind!r}")
            kinds[str(kind)] = entry if isinstance(entry, JobKind) else JobKind(entry)
    return kinds
