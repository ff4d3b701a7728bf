"""The controller: one reconcile loop that turns intents in the database into running jobs.

``Controller.tick()`` is one idempotent pass; each step commits on its own, so a controller
killed at any moment and restarted simply carries on:

1. **intents**: cancels of pending jobs, user retries, cancelling jobs whose dependencies
   can never succeed; running jobs whose cancel was requested are sent SIGTERM / stop.
2. **launch recovery**: an attempt row in LAUNCHING (written and committed *before* the
   launcher is called) is launched again; launchers are idempotent by instance name, so this
   finds the already started process/VM instead of starting a second one.
3. **poll + ingest**: running attempts are polled; new metric/resource/heartbeat segments are
   copied into the database (per-attempt cursors; ON CONFLICT DO NOTHING); ended attempts are
   finalised from ``exit.json``/``result.json``; lost heartbeats fail the attempt.
4. **retry**: FAILED jobs go back to PENDING within their retry limit (a user retry always);
   PREEMPTED jobs always. The next attempt resumes from the newest checkpoint of the job.
5. **launch**: PENDING jobs of ACTIVE campaigns whose dependencies all SUCCEEDED launch within
   the campaign's concurrency, the launcher's free slots and the budget; their spec.json gets
   the dependencies' results (e.g. the ensemble URIs a fit needs).
6. **campaign roll-up**: SUCCEEDED / FAILED / CANCELLED when nothing more can happen, and
   the accrued cost of open attempts is brought up to date.

The dashboard and the CLI only write intents (campaign status, ``desired_state``,
``cancel_requested``, ``retry_requested``); only the controller acts on them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from backend import ingest, jobs_repo
from backend.db.models import Attempt, Campaign, Job
from backend.launchers import (
    CapacityError,
    InstanceState,
    InstanceStatus,
    Launcher,
    LauncherError,
    LaunchRequest,
)
from backend.states import CampaignStatus, IllegalTransition, JobStatus, transition
from backend.stores import ArtifactStore, StoreError, join_uri, open_store
from backend.stores import layout
from backend.stores.base import put_json
from backend.worker import EXIT_PREEMPTED

log = logging.getLogger("nsbi.controller")

ACTIVE = (JobStatus.LAUNCHING, JobStatus.RUNNING)


@dataclass(frozen=True)
class ControllerConfig:
    """Timing knobs; the defaults suit real jobs, tests shrink them."""

    tick_interval_s: float = 2.0
    heartbeat_timeout_s: float = 180.0   # RUNNING with no new heartbeat for this long -> FAILED
    startup_timeout_s: float = 900.0     # launched but no first heartbeat yet (VM boot, JAX import)
    max_launches_per_tick: int = 32
    max_preemptions: int = 20            # PREEMPTED -> PENDING recoveries before giving up
    max_active_jobs: int | None = None   # quota: LAUNCHING + RUNNING jobs over all campaigns
    gpu_quota: int | None = None         # quota: GPUs of LAUNCHING + RUNNING jobs over all campaigns


@dataclass
class TickReport:
    """What one pass did (counts), for logs, the bench and tests."""

    launched: int = 0
    relaunched: int = 0
    finished: int = 0
    failed: int = 0
    retried: int = 0
    cancelled: int = 0
    metrics: int = 0
    resources: int = 0
    errors: list[str] = field(default_factory=list)

    def busy(self) -> bool:
        return any((self.launched, self.relaunched, self.finished, self.failed, self.retried, self.cancelled))


def _slug(text: str, n: int = 24) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:n].strip("-") or "c"


def campaign_key(campaign: Campaign) -> str:
    """Folder/instance prefix of a campaign: readable and unique even across database resets
    (id plus a hash of the creation time), so a new campaign never inherits old checkpoints."""
    created = campaign.created_at.isoformat() if campaign.created_at else ""
    tag = hashlib.sha256(f"{campaign.id}|{created}|{campaign.name}".encode()).hexdigest()[:6]
    return f"{_slug(campaign.name)}-{campaign.id}-{tag}"


def job_key(job: Job) -> str:
    """Folder/instance name of a job within its campaign: the readable name plus the id, so
    names that differ only in case or punctuation never share a folder or an instance."""
    return f"{_slug(job.name, 60)}-{job.id}"


def _aware(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


class Controller:
    """Reconciles the database with the launchers and the artifact store."""

    def __init__(
        self,
        engine: Engine,
        store: ArtifactStore | str,
        launchers: Mapping[str, Launcher] | Callable[[str], Launcher],
        config: ControllerConfig | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        budget_check: Callable[[Session, Campaign, Job, float], str | None] | None = None,
    ) -> None:
        self.engine = engine
        self.store = open_store(store) if isinstance(store, str) else store
        self._launchers = launchers
        self._launcher_cache: dict[str, Launcher] = {}
        self.config = config or ControllerConfig()
        self.clock = clock
        self.budget_check = budget_check or default_budget_check

    # ------------------------------------------------------------------ helpers
    def launcher(self, name: str) -> Launcher:
        if name not in self._launcher_cache:
            if callable(self._launchers) and not isinstance(self._launchers, Mapping):
                self._launcher_cache[name] = self._launchers(name)
            else:
                try:
                    self._launcher_cache[name] = self._launchers[name]
                except KeyError:
                    raise LauncherError(f"no launcher named {name!r} configured (have: {sorted(self._launchers)})") from None
        return self._launcher_cache[name]

    def job_store(self, job: Job) -> ArtifactStore:
        if not job.uri:
            raise StoreError(f"job {job.id} ({job.name}) has no store URI yet")
        if job.uri.startswith(self.store.uri + "/"):
            return self.store.child(job.uri[len(self.store.uri) + 1:])
        return open_store(job.uri, create=True)

    def _request(self, campaign: Campaign, job: Job, attempt_no: int) -> LaunchRequest:
        spec = job.spec or {}
        limit = spec.get("time_limit_s")
        return LaunchRequest(
            campaign=campaign_key(campaign), job=job_key(job), attempt=attempt_no, job_uri=job.uri or "",
            gpus=int(job.gpu_count or 0), time_limit_s=float(limit) if limit else None,
            labels={"campaign_id": str(campaign.id), "job_id": str(job.id)},
            machine_type=job.machine_type or None, gpu_type=job.gpu_type, spot=bool(job.spot),
            zones=tuple(job.zones or ()),
        )

    def _launch_failed(self, s: Session, job: Job, attempt: Any, exc: Exception, report: TickReport) -> None:
        """End an attempt whose launch the launcher refused (not a capacity wait)."""
        jobs_repo.end_attempt(s, job, attempt, JobStatus.FAILED, failure_reason=f"launch failed: {exc}",
                              now=self.clock())
        s.commit()
        report.failed += 1

    def _check_store(self) -> None:
        """Fail before touching the database when the store root has gone away."""
        root = getattr(self.store, "root", None)
        if root is not None and not root.is_dir():
            raise StoreError(f"store root {root} does not exist (URI {self.store.uri}); the controller changed nothing")

    # ------------------------------------------------------------------ the pass
    def tick(self) -> TickReport:
        """One reconcile pass (see the module docstring); safe to repeat and to interrupt."""
        self._check_store()
        report = TickReport()
        for step in (self._apply_intents, self._recover_launching, self._poll_running,
                     self._retry_failed, self._launch_ready, self._settle):
            try:
                step(report)
            except (StoreError, LauncherError) as exc:
                log.error("controller %s: %s", step.__name__, exc)
                report.errors.append(f"{step.__name__}: {exc}")
        return report

    # step 1: intents ----------------------------------------------------------
    def _apply_intents(self, report: TickReport) -> None:
        """Cancel / retry intents that need no machine; stop instances of cancelled running jobs."""
        with Session(self.engine, expire_on_commit=False) as s:
            # a campaign being cancelled cancels each of its unfinished jobs
            for job in s.exec(select(Job).join(Campaign, Campaign.id == Job.campaign_id)
                              .where(Campaign.status == CampaignStatus.CANCELLING,
                                     Job.cancel_requested.is_(False),
                                     Job.status.in_([JobStatus.PENDING, JobStatus.PREEMPTED, *ACTIVE]))).all():
                job.cancel_requested = True
                s.add(job)
            out = jobs_repo.apply_simple_intents(s, now=self.clock())
            s.commit()
            report.cancelled += len(out["cancelled"])
            report.retried += len(out["retried"])
            for job_id in out["to_stop"]:
                job = s.get(Job, job_id)
                attempt = self._current_attempt(s, job)
                if attempt is None or attempt.status != JobStatus.RUNNING or not attempt.instance_id:
                    continue  # LAUNCHING ones are handled by the launch recovery step
                try:
                    js = self.job_store(job)
                    if not js.exists(layout.CANCEL):
                        put_json(js, layout.CANCEL, {"requested_at": self.clock().isoformat()})
                    self.launcher(attempt.launcher).cancel(attempt.instance_id)
                except (LauncherError, StoreError) as exc:
                    report.errors.append(f"cancel {job.name}: {exc}")

    # step 2: half-done launches -------------------------------------------------
    def _recover_launching(self, report: TickReport) -> None:
        with Session(self.engine) as s:
            ids = [(a.id, j.id) for j, a in jobs_repo.half_done_launches(s)]
        for attempt_id, job_id in ids:
            self._launch_attempt(attempt_id, job_id, report, recovering=True)

    def _launch_attempt(self, attempt_id: int, job_id: int, report: TickReport, *, recovering: bool) -> None:
        """Call the launcher for an attempt already committed in LAUNCHING; record the outcome."""
        with Session(self.engine, expire_on_commit=False) as s:
            attempt, job = s.get(Attempt, attempt_id), s.get(Job, job_id)
            campaign = s.get(Campaign, job.campaign_id)
            if attempt.status != JobStatus.LAUNCHING or JobStatus(job.status) != JobStatus.LAUNCHING:
                return
            request = self._request(campaign, job, attempt.attempt_no)
            try:
                launcher = self.launcher(attempt.launcher)
            except LauncherError as exc:
                self._launch_failed(s, job, attempt, exc, report)
                return
            if job.cancel_requested or campaign.status == CampaignStatus.CANCELLING:
                launcher.cancel(request.instance_id)  # in case a crashed pass had started it
                st = launcher.poll([request.instance_id])[request.instance_id]
                if not st.state.is_alive():
                    jobs_repo.end_attempt(s, job, attempt, JobStatus.CANCELLED, exit_code=st.exit_code,
                                          reason="cancelled before it ran", now=self.clock())
                    s.commit()
                    report.cancelled += 1
                    return
            try:
                handle = launcher.launch(request)
            except CapacityError as exc:
                log.info("controller: %s waits for capacity: %s", request.instance_id, exc)
                return  # stays LAUNCHING; tried again next pass
            except LauncherError as exc:
                self._launch_failed(s, job, attempt, exc, report)
                return
            jobs_repo.mark_launched(s, job, attempt, handle.instance_id, now=self.clock())
            s.commit()
            if recovering:
                report.relaunched += 1
            else:
                report.launched += 1

    # step 3: poll + ingest -----------------------------------------------------
    def _poll_running(self, report: TickReport) -> None:
        with Session(self.engine) as s:
            rows = [(a.id, j.id, a.launcher, a.instance_id) for j, a in jobs_repo.open_attempts(s)
                    if a.status == JobStatus.RUNNING]
        by_launcher: dict[str, list[tuple[int, int, str]]] = {}
        for aid, jid, lname, iid in rows:
            by_launcher.setdefault(lname, []).append((aid, jid, iid))
        for lname, items in by_launcher.items():
            statuses = self.launcher(lname).poll([iid for _, _, iid in items])
            for aid, jid, iid in items:
                st = statuses.get(iid) or InstanceStatus(iid, InstanceState.GONE, None, "not reported")
                try:
                    self._reconcile_attempt(aid, jid, st, report)
                except StoreError as exc:
                    report.errors.append(f"attempt {aid}: {exc}")

    def _reconcile_attempt(self, attempt_id: int, job_id: int, st: InstanceStatus, report: TickReport) -> None:
        with Session(self.engine, expire_on_commit=False) as s:
            attempt, job = s.get(Attempt, attempt_id), s.get(Job, job_id)
            if attempt.status != JobStatus.RUNNING or JobStatus(job.status) != JobStatus.RUNNING:
                return
            js = self.job_store(job)
            now = self.clock()
            got = ingest.ingest_attempt(s, job, attempt, js, now=now)
            report.metrics += got.metrics
            report.resources += got.resources
            if st.state.is_alive():
                reason = self._lost_heartbeat(attempt, now)
                if reason:
                    launcher = self.launcher(attempt.launcher)
                    getattr(launcher, "kill", launcher.cancel)(attempt.instance_id)
                    jobs_repo.end_attempt(s, job, attempt, JobStatus.FAILED, failure_reason=reason, now=now)
                    report.failed += 1
                s.commit()
                return
            # the instance has ended: what the worker said decides, then the launcher's view
            exit_doc = ingest.read_exit(js, attempt.attempt_no)
            code = exit_doc.get("exit_code") if exit_doc else st.exit_code
            worker_status = (exit_doc or {}).get("status")
            if worker_status == "succeeded" and ingest.read_result(js, attempt.attempt_no) is not None:
                ingest.ingest_result(s, job, attempt, js)
                jobs_repo.end_attempt(s, job, attempt, JobStatus.SUCCEEDED, exit_code=code,
                                      reason="worker succeeded", now=now)
                report.finished += 1
            elif job.cancel_requested:
                jobs_repo.end_attempt(s, job, attempt, JobStatus.CANCELLED, exit_code=code,
                                      reason="cancelled on request", now=now)
                report.cancelled += 1
            elif worker_status == "preempted" or code == EXIT_PREEMPTED or st.state is InstanceState.PREEMPTED:
                why = (exit_doc or {}).get("error") or st.detail or "preempted"
                jobs_repo.end_attempt(s, job, attempt, JobStatus.PREEMPTED, exit_code=code,
                                      failure_reason=f"preempted: {why}", now=now)
                report.failed += 1
            else:
                if exit_doc and exit_doc.get("error"):
                    why = str(exit_doc["error"]).splitlines()[0]
                elif worker_status == "succeeded":
                    why = "worker reported success but wrote no result.json"
                elif st.state is InstanceState.GONE:
                    why = f"instance gone without an exit record ({st.detail})"
                else:
                    extra = f"; {st.detail}" if st.detail else ""
                    why = f"worker died without an exit record (exit code {code}{extra})"
                jobs_repo.end_attempt(s, job, attempt, JobStatus.FAILED, exit_code=code,
                                      failure_reason=why[:2000], now=now)
                report.failed += 1
            s.commit()

    def _lost_heartbeat(self, attempt: Attempt, now: datetime) -> str | None:
        beat = _aware(attempt.last_heartbeat)
        if beat is not None:
            if now - beat > timedelta(seconds=self.config.heartbeat_timeout_s):
                return f"lost heartbeat: none for {(now - beat).total_seconds():.0f} s"
            return None
        started = _aware(attempt.launched_at) or _aware(attempt.created_at)
        if started is not None and now - started > timedelta(seconds=self.config.startup_timeout_s):
            return f"no heartbeat within {self.config.startup_timeout_s:.0f} s of launch"
        return None

    def _current_attempt(self, s: Session, job: Job) -> Attempt | None:
        return s.exec(select(Attempt).where(Attempt.job_id == job.id)
                      .where(Attempt.attempt_no == job.current_attempt)).first()

    # step 4: retries -------------------------------------------------------------
    def _retry_failed(self, report: TickReport) -> None:
        with Session(self.engine, expire_on_commit=False) as s:
            preempted = s.exec(select(Job).where(Job.status == JobStatus.PREEMPTED,
                                                 Job.cancel_requested.is_(False)).order_by(Job.id)).all()
            for job in [*jobs_repo.retryable_failed_jobs(s), *preempted]:
                status = JobStatus(job.status)
                if status is JobStatus.PREEMPTED and job.recoveries - job.retries >= self.config.max_preemptions:
                    transition(s, job, JobStatus.FAILED, f"preempted {self.config.max_preemptions} times; giving up")
                    job.retries = max(job.retries, job.max_retries)  # final: no automatic retry either
                    s.add(job)
                    s.commit()
                    continue
                reason = ("recovering from preemption" if status is JobStatus.PREEMPTED
                          else f"automatic retry {job.retries + 1} of {job.max_retries}")
                try:
                    jobs_repo.requeue(s, job, reason, now=self.clock())
                except IllegalTransition as exc:
                    s.rollback()
                    report.errors.append(str(exc))
                    continue
                s.commit()
                report.retried += 1

    # step 5: launches ----------------------------------------------------------
    def _launch_ready(self, report: TickReport) -> None:
        """Pick ready jobs within every limit, then create and launch their attempts.

        Limits: the campaign's ``max_concurrency``; the launcher's free slots; the controller's
        quotas (``max_active_jobs``, ``gpu_quota``); the campaign budget, counting the jobs
        already picked in this pass so one pass cannot overshoot it.
        """
        cfg = self.config
        plan: list[tuple[int, str]] = []
        with Session(self.engine, expire_on_commit=False) as s:
            active = jobs_repo.active_counts(s)
            n_active = sum(active.values())
            gpus_busy = int(s.exec(select(sa.func.coalesce(sa.func.sum(Job.gpu_count), 0))
                                   .where(Job.status.in_(ACTIVE))).one())
            slots: dict[str, int | None] = {}
            planned_usd: dict[int, float] = {}
            for job in jobs_repo.ready_jobs(s):
                if len(plan) >= cfg.max_launches_per_tick:
                    break
                if cfg.max_active_jobs is not None and n_active >= cfg.max_active_jobs:
                    break
                if cfg.gpu_quota is not None and gpus_busy + job.gpu_count > cfg.gpu_quota:
                    continue
                campaign = s.get(Campaign, job.campaign_id)
                if active.get(campaign.id, 0) >= max(1, int(campaign.max_concurrency or 1)):
                    continue
                lname = job.launcher or campaign.launcher
                if lname not in slots:
                    try:
                        slots[lname] = self.launcher(lname).free_slots()
                    except LauncherError as exc:  # e.g. an unknown launcher name: nothing of it launches
                        report.errors.append(f"launcher {lname!r}: {exc}")
                        slots[lname] = 0
                if slots[lname] is not None and slots[lname] <= 0:
                    continue
                cost = job_price_per_hour(job) * float(job.est_hours or 0.0)
                why_not = self.budget_check(s, campaign, job, planned_usd.get(campaign.id, 0.0) + cost)
                if why_not:
                    if job.status_reason != why_not:
                        job.status_reason = why_not
                        s.add(job)
                        s.commit()
                    continue
                plan.append((job.id, lname))
                planned_usd[campaign.id] = planned_usd.get(campaign.id, 0.0) + cost
                active[campaign.id] = active.get(campaign.id, 0) + 1
                n_active += 1
                gpus_busy += job.gpu_count
                if slots[lname] is not None:
                    slots[lname] -= 1
        for job_id, lname in plan:
            attempt_id = self._create_attempt(job_id, lname)
            if attempt_id is not None:
                self._launch_attempt(attempt_id, job_id, report, recovering=False)

    def _create_attempt(self, job_id: int, lname: str) -> int | None:
        """Write spec.json, then commit the attempt row in LAUNCHING (before any launch call)."""
        with Session(self.engine, expire_on_commit=False) as s:
            job = s.get(Job, job_id)
            campaign = s.get(Campaign, job.campaign_id)
            if JobStatus(job.status) != JobStatus.PENDING:
                return None
            if not job.uri:
                job.uri = join_uri(self.store.uri, layout.job_prefix(campaign_key(campaign), job_key(job)))
            put_json(self.job_store(job), layout.SPEC, self._spec_with_inputs(s, campaign, job))
            attempt = jobs_repo.begin_attempt(s, job, launcher=lname, price_per_hour=job_price_per_hour(job),
                                              now=self.clock())
            s.commit()
            return attempt.id

    def _spec_with_inputs(self, s: Session, campaign: Campaign, job: Job) -> dict[str, Any]:
        """The job's spec plus ``inputs``: each dependency's result.json, keyed by job name."""
        spec = dict(job.spec or {})
        spec.setdefault("kind", job.kind)
        spec.setdefault("name", job.name)
        spec.update({"campaign": spec.get("campaign", campaign.name), "campaign_id": campaign.id, "job_id": job.id})
        inputs = {}
        dep_ids = {d.id for d in jobs_repo.dependency_results(s, job)} | set(job.depends_on or [])
        for dep_id in sorted(dep_ids):
            dep = s.get(Job, dep_id)
            result = ingest.read_result(self.job_store(dep), dep.current_attempt)
            if result is None:
                raise StoreError(f"job {job.name}: dependency {dep.name} SUCCEEDED but its result.json is missing "
                                 f"({dep.uri}/{layout.result_key(dep.current_attempt)})")
            inputs[dep.name] = result
        if inputs:
            spec["inputs"] = inputs
        return spec

    # step 6: campaigns ---------------------------------------------------------
    def _settle(self, report: TickReport) -> None:
        with Session(self.engine, expire_on_commit=False) as s:
            jobs_repo.settle_campaigns(s, now=self.clock())
            jobs_repo.accrue_costs(s, now=self.clock())
            s.commit()

    # ------------------------------------------------------------------ loop
    def run_forever(self, stop: threading.Event | None = None, *, max_ticks: int | None = None,
                    until_idle: bool = False, status_path: Path | None = None) -> int:
        """Tick every ``tick_interval_s`` until ``stop`` is set (SIGTERM/SIGINT set it too).

        ``until_idle`` returns once no campaign is ACTIVE or CANCELLING (handy for scripts).
        ``status_path`` gets a small JSON after every pass ({"pid", "ticks", "time", ...}) so
        the dashboard, ``nsbi up`` and tests can tell that a controller is alive.
        Returns the number of ticks run.
        """
        stop = stop or threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
        ticks = 0
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                report = self.tick()
            except StoreError:
                raise  # the store root is gone: stop with a clear error rather than spin
            except Exception:  # noqa: BLE001 - one bad pass (DB locked, a launcher hiccup) must not end the loop
                log.exception("controller: pass %d failed; retrying after the interval", ticks + 1)
                report = TickReport(errors=["pass failed; see the log"])
            ticks += 1
            if report.busy() or report.errors:
                log.info("tick %d: %s", ticks, report)
            if status_path is not None:
                _write_status(status_path, ticks, report)
            if max_ticks is not None and ticks >= max_ticks:
                break
            if until_idle and not self.has_work():
                break
            stop.wait(max(0.0, self.config.tick_interval_s - (time.monotonic() - t0)))
        return ticks

    def has_work(self) -> bool:
        with Session(self.engine) as s:
            return s.exec(select(Campaign.id).where(Campaign.status.in_(
                [CampaignStatus.ACTIVE, CampaignStatus.CANCELLING]))).first() is not None


def _write_status(path: Path, ticks: int, report: TickReport) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "ticks": ticks, "time": time.time(),
                               "errors": report.errors[-5:]}))
    os.replace(tmp, path)


def job_price_per_hour(job: Job) -> float:
    """Hourly price of the job's machine from the catalogue (0 when the catalogue has none)."""
    from backend.costs import PriceError, load_catalogue, region_of_zone

    region = region_of_zone(job.zones[0]) if job.zones else None
    try:
        return load_catalogue().price_per_hour(job.machine_type, job.gpu_type, job.gpu_count, job.spot, region)
    except PriceError as exc:
        log.warning("controller: no price for job %s: %s", job.name, exc)
        return 0.0


def default_budget_check(session: Session, campaign: Campaign, job: Job, next_usd: float) -> str | None:
    """None when launching ``job`` keeps the campaign within its budget, else the reason why not.

    ``next_usd`` is the estimated cost of this job plus the jobs already picked in this pass;
    the decision itself is the data side's ``service.budget_allows_launch``.
    """
    if campaign.budget_usd is None:
        return None
    from backend.service import budget_allows_launch

    decision = budget_allows_launch(campaign.id, next_usd, session=session)
    return None if decision.allowed else decision.reason
