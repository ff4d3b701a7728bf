"""`nsbi analysis run`: analysis file -> campaign (reusing earlier results) -> report folder.

Why a driver here rather than "create, then start a controller": a physicist runs one command
and gets a result. `run_analysis` validates the file (nothing is created if it has problems),
creates the campaign through `backend.service.create_campaign_from_analysis` (jobs whose
content key matches an earlier SUCCEEDED job are created already SUCCEEDED), requests its
launch, then drives it with an in-process `Controller` -- unless a controller already runs
for this NSBI_HOME (`nsbi up`), in which case it only watches -- and writes the report.

Checks gate the result: the report opens with the campaign's result status ("checks passed"
or "needs review" with the failed checks, `backend.result_status`) and `RunSummary.exit_code`
is 0 only when the campaign succeeded and its checks passed (3: needs review, 1: failed).

The campaign is an ordinary one: the dashboard shows it live, `nsbi campaign status` lists
it, and an interrupted run is carried on by any later controller.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from backend import service
from backend.analysis.report import ReportFiles, write_report
from backend.campaigns import LAUNCHERS
from backend.result_status import EXIT_NEEDS_REVIEW, NEEDS_REVIEW, campaign_result_status

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
GCE_DEFAULT_MACHINE = "g2-standard-4"  # one L4: the smallest catalogue machine with a GPU


@dataclass(frozen=True)
class AnalysisMeta:
    """What identifies an analysis file in provenance records."""

    name: str
    path: str
    file_hash: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "path": self.path, "file_hash": self.file_hash}


@dataclass(frozen=True)
class RunSummary:
    """The outcome of one `run_analysis` call."""

    campaign_id: int
    status: str  # the campaign's final status, or its status when not waited for
    mu_hat: float | None
    sigma: float | None
    ran: list[str]  # jobs that had at least one attempt in this campaign
    reused: dict[str, int]  # job name -> id of the earlier job whose result it reuses
    report: ReportFiles | None
    seconds: float
    result: dict[str, Any] = field(repr=False, default_factory=dict)
    result_status: dict[str, Any] = field(default_factory=dict)  # backend.result_status; {} when not waited for

    @property
    def needs_review(self) -> bool:
        return self.result_status.get("state") == NEEDS_REVIEW

    @property
    def exit_code(self) -> int:
        """`nsbi analysis run`'s exit status: 0 the campaign succeeded and its checks passed,
        3 (`EXIT_NEEDS_REVIEW`) it succeeded but its result needs review, 1 it failed or was
        cancelled (2, an invalid file, never gets this far)."""
        if self.status != "SUCCEEDED":
            return 1
        return EXIT_NEEDS_REVIEW if self.needs_review else 0


def campaign_config_for(config: Mapping[str, Any], backend: str | None) -> dict[str, Any]:
    """The analysis's campaign config with the launcher chosen on the command line.

    A gce run of an analysis that names no cloud machine gets `GCE_DEFAULT_MACHINE` (the
    local launcher's 'local' machine type means nothing to Compute Engine).
    """
    cfg = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in config.items()}
    if backend is None:
        return cfg
    if backend not in LAUNCHERS:
        raise ValueError(f"--backend: {backend!r} is not a launcher; allowed: {', '.join(LAUNCHERS)}")
    b = dict(cfg.get("backend") or {})
    b["launcher"] = backend
    if backend == "gce" and b.get("machine_type", "local") == "local":
        b["machine_type"] = GCE_DEFAULT_MACHINE
    if backend == "local":
        b["machine_type"] = "local"
        b.update(gpu_type=None, gpu_count=0, spot=False)
    cfg["backend"] = b
    return cfg


class Progress:
    """One command-line bar: jobs finished of all, per stage done/total, the current train loss."""

    def __init__(self, enabled: bool, campaign_id: int) -> None:
        self.bar = None
        self.campaign_id = campaign_id
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=1, desc=f"campaign {campaign_id}", unit="job", file=sys.stderr,
                            dynamic_ncols=True, leave=True)

    def update(self, snap: Mapping[str, Any]) -> None:
        if self.bar is None:
            return
        kinds = snap["kinds"]
        total = sum(k["total"] for k in kinds.values())
        final = sum(k["done"] + k["failed"] + k["cancelled"] for k in kinds.values())
        parts = [f"{kind} {k['done']}/{k['total']}" for kind, k in kinds.items()]
        reused = sum(k["reused"] for k in kinds.values())
        if reused:
            parts.append(f"reused {reused}")
        failed = sum(k["failed"] for k in kinds.values())
        if failed:
            parts.append(f"failed {failed}")
        losses = list(snap.get("train_loss", {}).values())
        if losses:
            parts.append(f"train loss {sum(losses) / len(losses):.4f}")
        self.bar.total = max(total, 1)
        self.bar.n = final
        self.bar.set_postfix_str(", ".join(parts), refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def drive(campaign_id: int, *, engine: Engine, settings: Any, progress: bool = True, poll_s: float = 0.5,
          timeout_s: float | None = None, launchers: Any = None,
          on_tick: Callable[[Mapping[str, Any]], None] | None = None) -> str:
    """Run the controller in this process until the campaign is final; return its status.

    If another controller holds this NSBI_HOME's lock (e.g. `nsbi up`), only watch it.
    """
    from backend.commands.controller import _single_instance_lock
    from backend.controller import Controller, ControllerConfig
    from backend.launchers import get_launcher
    from backend.stores import open_store

    lock = _single_instance_lock(settings.home / "controller.lock")
    controller = None
    if lock is not None:
        store = open_store(settings.store_uri, create=settings.store_uri.startswith("file://"))
        controller = Controller(engine, store, launchers or (lambda name: get_launcher(name, settings)),
                                ControllerConfig(tick_interval_s=poll_s))
    elif progress:
        print(f"nsbi analysis: a controller already runs for {settings.home}; watching campaign {campaign_id}",
              file=sys.stderr)
    bar = Progress(progress, campaign_id)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while True:
            t0 = time.monotonic()
            if controller is not None:
                controller.tick()
            snap = service.campaign_progress(campaign_id, engine=engine)
            bar.update(snap)
            if on_tick is not None:
                on_tick(snap)
            if snap["status"] in TERMINAL:
                return str(snap["status"])
            if deadline is not None and time.monotonic() > deadline:
                return str(snap["status"])
            time.sleep(max(0.0, poll_s - (time.monotonic() - t0)))
    finally:
        bar.close()
        if lock is not None:
            lock.close()


def run_campaign(config: Mapping[str, Any], meta: AnalysisMeta, *, backend: str | None = "local",
                 report_dir: str | Path | None = None, progress: bool = True, engine: Engine | None = None,
                 fit_settings: Mapping[str, Any] | None = None, wait: bool = True, reuse: bool = True,
                 owner: str = "local", timeout_s: float | None = None, static_plots: bool = True) -> RunSummary:
    """Create the campaign of an (already validated) analysis, drive it, write the report."""
    from backend.analysis.collect import collect_result
    from backend.db import get_engine, init_db
    from backend.settings import get_settings

    t0 = time.monotonic()
    settings = get_settings()
    engine = init_db(engine or get_engine(settings.database_url))
    cid = service.create_campaign_from_analysis(campaign_config_for(config, backend), analysis=meta.as_dict(),
                                                owner=owner, reuse=reuse, engine=engine)
    service.request_launch(cid, engine=engine, actor=owner)
    if progress:
        reused = service.campaign_analysis(cid, engine=engine).get("reused", [])
        print(f"nsbi analysis: campaign {cid} ({meta.name}): {len(reused)} job(s) reused from earlier runs",
              file=sys.stderr)
    if not wait:
        status = service.get_campaign(cid, engine=engine).summary.status
        return RunSummary(cid, status, None, None, [], {}, None, time.monotonic() - t0)
    status = drive(cid, engine=engine, settings=settings, progress=progress, timeout_s=timeout_s)
    result = collect_result(cid, analysis=meta.as_dict(), fit_settings=fit_settings,
                            wall_s=time.monotonic() - t0, engine=engine)
    checked = campaign_result_status(cid, engine=engine)  # stored when the campaign settled
    result["result_status"] = checked.to_dict() if checked is not None else {}
    folder = Path(report_dir) if report_dir is not None else settings.home / "reports" / f"{_slug(meta.name)}-{cid}"
    files = write_report(folder, result, static=static_plots)
    fit = result["fit"]
    return RunSummary(cid, status, fit.get("mu_hat"), fit.get("sigma"), list(result["jobs"]["ran"]),
                      dict(result["jobs"]["reused"]), files, time.monotonic() - t0, result,
                      dict(result["result_status"]))


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "analysis"


def run_analysis(path: str | Path, backend: str = "local", report_dir: str | Path | None = None,
                 progress: bool = True, engine: Engine | None = None, **kw: Any) -> RunSummary:
    """Validate the analysis file, run its campaign to the end, write its report.

    Raises `AnalysisError` (every problem, with file and line) before anything is created.
    The report goes to `report_dir`, else the file's own report directory, else
    `<NSBI_HOME>/reports/<name>-<campaign id>`.
    """
    from backend.analysis.spec import load_analysis

    analysis = load_analysis(path)
    meta = AnalysisMeta(analysis.name, str(Path(path).resolve()), analysis.file_hash)
    folder = report_dir if report_dir is not None else getattr(analysis, "report_dir", None)
    return run_campaign(analysis.campaign_config(), meta, backend=backend, report_dir=folder, progress=progress,
                        engine=engine, fit_settings=getattr(analysis, "fit_settings", None), **kw)
