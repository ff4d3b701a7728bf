"""Job kinds: what a worker runs for each ``spec.json["kind"]``.

Each kind is a function ``(JobContext) -> {"artifacts": {name: uri}, "summary": {...}, ...}``
registered in :data:`KINDS`; the worker runtime (:mod:`backend.worker`) handles everything
around it (heartbeats, segments, signals, exit records). Science stays in ``sbi_engine``:
"train" calls ``train_ensemble``, the fit-stage kinds call ``sbi_engine.fit_jobs``. "noop" is
a test-only kind that exercises the control plane in about a second without JAX.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend.stores import ArtifactStore, open_store
from backend.stores import layout

if TYPE_CHECKING:  # pragma: no cover
    from backend.worker import AttemptWriter, StopFlag, StoreCheckpointer


class JobSpecError(Exception):
    """The job spec is missing, unreadable or lacks a field the job kind needs."""


class Preempted(Exception):
    """Raised inside a job when a stop was requested; the worker exits as preempted."""


@dataclass
class JobContext:
    """What a job-kind function gets: its spec, the store, and the hooks into the runtime."""

    spec: dict[str, Any]
    job_store: ArtifactStore
    attempt: int
    writer: "AttemptWriter"
    checkpointer: "StoreCheckpointer"
    stop: "StopFlag"

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
    """Train a ratio ensemble: numerator/denominator sample specs + a TrainConfig dict.

    The networks train on the "train" part of each sample (`sbi_engine.sample_specs.sample_parts`);
    the diagnostics run on the "eval" part, which they never saw, and the summary records how
    each sample was split (``summary["split"]``).
    """
    from sbi_engine.sample_specs import sample_parts
    from sbi_engine.ratio import TrainConfig, train_ensemble

    p = ctx.params
    num_parts = sample_parts(_require(p, "numerator", "train"))
    den_parts = sample_parts(_require(p, "denominator", "train"))
    numerator, denominator = num_parts.train, den_parts.train
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
        "split": {"numerator": num_parts.record, "denominator": den_parts.record},
        "diagnostics": ensemble_diagnostics(result.ensemble, p, numerator, denominator,
                                            held_out=(num_parts.eval, den_parts.eval)),
    }
    return {"artifacts": {"ensemble": uri}, "summary": summary}


def ensemble_diagnostics(ensemble: Any, params: dict, numerator: Any, denominator: Any,
                         held_out: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """Calibration, closure, normalisation, AUC and overtraining of a freshly trained ensemble.

    The checks run on the evaluation ("eval") part of both samples -- events the networks never
    saw: a fresh draw for demo samples, the hashed-out share (or the ``eval_sample``) for file
    samples (`sbi_engine.sample_specs.load_sample_spec`). ``numerator``/``denominator`` are the training
    samples (for the overtraining comparison); ``held_out`` passes the evaluation samples when
    the caller has them already, otherwise they are loaded from ``params``. A failure is
    reported, never fatal: the trained ensemble is what the job is for.
    """
    from sbi_engine.sample_specs import load_sample_spec
    from sbi_engine.ratio import diagnostics

    try:
        if held_out is None:
            held_out = (load_sample_spec(params["numerator"], role="eval"),
                        load_sample_spec(params["denominator"], role="eval"))
        num_h, den_h = held_out
        out = diagnostics(ensemble, num_h, den_h, train_numerator=numerator, train_reference=denominator).to_dict()
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
    artifacts.update({k: v for k, v in (out.pop("artifacts", None) or {}).items() if isinstance(v, str)})
    return {"artifacts": artifacts, "summary": out, "ensembles": uris}


# kinds that poll ``ctx.stop`` and checkpoint before returning
COOPERATIVE = frozenset({"noop", "train"})

KINDS: dict[str, Callable[[JobContext], dict[str, Any]]] = {
    "noop": run_noop,
    "train": run_train,
    "fit": run_fit_like,
    "impacts": run_fit_like,
    "scan": run_fit_like,
    "toys": run_fit_like,
}
