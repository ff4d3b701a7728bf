"""`nsbi analysis run`: analysis file -> campaign (reusing earlier results) -> report folder.

Why a driver here rather than "create, then start a controller": a physicist runs one command
and gets a result. `run_analysis` reads top to bottom as its stages, one function each:

    load      `load_analysis`: the file, checked; every problem at once (`AnalysisError`),
              and nothing is created if it has any
    validate  `validate_config(campaign_config_for(...))`: its campaign config, on the
              launcher chosen on the command line
    expand    `expand_jobs`: the job plans
    key       `key_jobs`: every job's content key and the analysis provenance
    insert    `insert_campaign` and `request_launch`: the campaign and its jobs (a job whose
              key matches an earlier SUCCEEDED job is created already SUCCEEDED), launched
    drive     `drive`: an in-process `Controller` until the campaign is final -- unless a
              controller already runs for this NSBI_HOME (`nsbi up`) or leads the database
              (another home's `nsbi controller`), in which case it only watches (and takes
              over should that leader stop, `backend.leader`)
    collect   `collect`: the result (result.json), its result status, the report folder

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

from backend.analysis.campaign import expand_jobs, insert_campaign, key_jobs
from backend.analysis.collect import collect_result
from backend.analysis.report import ReportFiles, write_report
from backend.analysis.spec import load_analysis
from backend.campaigns import LAUNCHERS, validate_config
from backend.db import get_engine, init_db
from backend.intents import request_launch
from backend.listings import campaign_progress, get_campaign
from backend.result_status import EXIT_NEEDS_REVIEW, NEEDS_REVIEW, campaign_result_status
from backend.settings import get_settings

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
    result_status: dict[str, Any] = field(
        default_factory=dict
    )  # backend.result_status; {} when not waited for

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
        raise ValueError(
            f"--backend: {backend!r} is not a launcher; allowed: {', '.join(LAUNCHERS)}"
        )
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

            self.bar = tqdm(
                total=1,
                desc=f"campaign {campaign_id}",
                unit="job",
                file=sys.stderr,
                dynamic_ncols=True,
                leave=True,
            )

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


def drive(
    campaign_id: int,
    *,
    engine: Engine,
    settings: Any,
    progress: bool = True,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
    launchers: Any = None,
    on_tick: Callable[[Mapping[str, Any]], None] | None = None,
) -> str:
    """Run the controller in this process until the campaign is final; return its status.

    If another controller holds this NSBI_HOME's lock (e.g. `nsbi up`), only watch it. If one
    of another home leads the database, watch it too, competing for nothing: this process is
    a standby for the database's leader lease and drives the campaign only if it takes over.
    """
    from backend.controller import Controller, ControllerConfig, single_instance_lock
    from backend.launchers import get_launcher
    from backend.leader import LeaderLease, holder_id
    from backend.stores import open_store

    lock = single_instance_lock(settings.home / "controller.lock")
    controller = None
    lease = None
    if lock is not None:
        store = open_store(settings.store_uri, create=settings.store_uri.startswith("file://"))
        lease = LeaderLease(
            engine,
            ttl_s=settings.controller.lease_ttl_s,
            renew_s=settings.controller.lease_renew_s,
            holder=holder_id(settings.home),
        ).start()
        controller = Controller(
            engine,
            store,
            launchers or (lambda name: get_launcher(name, settings)),
            ControllerConfig(tick_interval_s=poll_s),
            lease=lease,
        )
        if progress and not lease.is_leader():
            seen = lease.view()
            print(
                f"nsbi analysis: another controller ({seen.holder if seen else 'unknown'}) leads "
                f"this database; watching campaign {campaign_id}",
                file=sys.stderr,
            )
    elif progress:
        print(
            f"nsbi analysis: a controller already runs for {settings.home}; watching campaign {campaign_id}",
            file=sys.stderr,
        )
    bar = Progress(progress, campaign_id)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while True:
            t0 = time.monotonic()
            if controller is not None:
                controller.tick()
            snap = campaign_progress(campaign_id, engine=engine)
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
        if lease is not None:
            lease.stop(release=True)
        if lock is not None:
            lock.close()


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "analysis"


def collect(
    campaign_id: int,
    status: str,
    meta: AnalysisMeta,
    *,
    report_dir: str | Path | None,
    fit_settings: Mapping[str, Any] | None,
    started: float,
    settings: Any,
    engine: Engine,
    static_plots: bool = True,
) -> RunSummary:
    """The driven campaign's result (what result.json holds, `collect_result`) with its result
    status (stored when the campaign settled), written as the report folder: `report_dir`, else
    `<NSBI_HOME>/reports/<name>-<campaign id>`. `started`: `time.monotonic()` at the start."""
    result = collect_result(
        campaign_id,
        analysis=meta.as_dict(),
        fit_settings=fit_settings,
        wall_s=time.monotonic() - started,
        engine=engine,
    )
    checked = campaign_result_status(campaign_id, engine=engine)
    result["result_status"] = checked.to_dict() if checked is not None else {}
    folder = (
        Path(report_dir)
        if report_dir is not None
        else settings.home / "reports" / f"{_slug(meta.name)}-{campaign_id}"
    )
    files = write_report(folder, result, static=static_plots)
    fit = result["fit"]
    return RunSummary(
        campaign_id,
        status,
        fit.get("mu_hat"),
        fit.get("sigma"),
        list(result["jobs"]["ran"]),
        dict(result["jobs"]["reused"]),
        files,
        time.monotonic() - started,
        result,
        dict(result["result_status"]),
    )


def run_analysis(
    path: str | Path,
    backend: str | None = "local",
    report_dir: str | Path | None = None,
    progress: bool = True,
    engine: Engine | None = None,
    *,
    wait: bool = True,
    reuse: bool = True,
    owner: str = "local",
    timeout_s: float | None = None,
    static_plots: bool = True,
) -> RunSummary:
    """Validate the analysis file, run its campaign to the end, write its report.

    Raises `AnalysisError` (every problem, with file and line) before anything is created.
    The report goes to `report_dir`, else the file's own report directory, else
    `<NSBI_HOME>/reports/<name>-<campaign id>`. backend: the launcher (None: the file's own);
    reuse=False runs every job; wait=False returns once the campaign is launched (a running
    controller carries it; no report).
    """
    analysis = load_analysis(path)  # load
    meta = AnalysisMeta(analysis.name, str(Path(path).resolve()), analysis.file_hash)
    started = time.monotonic()
    settings = get_settings()
    engine = init_db(engine or get_engine(settings.database_url))
    cfg = validate_config(campaign_config_for(analysis.campaign_config(), backend))  # validate
    jobs = expand_jobs(cfg)  # expand
    jobs = key_jobs(jobs, meta.as_dict())  # key
    created = insert_campaign(jobs, owner=owner, reuse=reuse, engine=engine)  # insert
    cid = created.campaign_id
    request_launch(cid, engine=engine, actor=owner)
    if progress:
        print(
            f"nsbi analysis: campaign {cid} ({meta.name}): {len(created.reused)} job(s) reused from earlier runs",
            file=sys.stderr,
        )
    if not wait:
        status = get_campaign(cid, engine=engine).summary.status
        return RunSummary(cid, status, None, None, [], {}, None, time.monotonic() - started)
    status = drive(
        cid, engine=engine, settings=settings, progress=progress, timeout_s=timeout_s
    )  # drive
    return collect(
        cid,
        status,
        meta,
        report_dir=report_dir if report_dir is not None else analysis.report_dir,
        fit_settings=analysis.fit_settings,
        started=started,
        settings=settings,
        engine=engine,
        static_plots=static_plots,
    )  # collect
