"""The controller: one reconcile loop that turns intents in the database into running jobs.

``Controller.tick()`` is one idempotent pass. Each step does its database work for all the
jobs it touches in one short transaction (a handful of commits per pass, not one per job),
ordered so that a controller killed at any moment and restarted simply carries on:

1. **intents**: cancels of pending jobs, user retries, cancelling jobs whose dependencies
   can never succeed; running jobs whose cancel was requested are sent SIGTERM / stop.
2. **launch recovery**: an attempt row in LAUNCHING (written and committed *before* the
   launcher is called) is launched again; launchers are idempotent by instance name, so this
   finds the already started process/VM instead of starting a second one.
3. **poll + ingest**: running attempts are polled; new metric/resource/heartbeat segments are
   copied into the database (per-attempt cursors; ON CONFLICT DO NOTHING); ended attempts are
   finalised from ``exit.json``/``result.json``; lost heartbeats fail the attempt. All running
   attempts share one transaction; if one attempt's store cannot be read, the pass redoes the
   step with one transaction per attempt so that one bad attempt holds back no other.
4. **retry**: FAILED jobs go back to PENDING within their retry limit (a user retry always);
   PREEMPTED jobs always. The next attempt resumes from the newest checkpoint of the job. A
   worker that exits with code 2 because its job spec or the inputs it names are unusable
   (its exit.json says ``"retryable": false``, ``"failure_kind": "spec_error"`` for a missing
   sample file, a bad column or a refused workspace) leaves its job FAILED for good at once:
   no retry could succeed.
5. **launch**: PENDING jobs of ACTIVE campaigns whose dependencies all SUCCEEDED are picked
   within the campaign's concurrency, the launcher's free slots and the budget (each
   campaign's spent and running cost read once per pass). Their spec.json files get the
   dependencies' results (e.g. the ensemble URIs a fit needs); once every one is in the store,
   all the new attempt rows are committed in LAUNCHING in one transaction, *before* any
   launcher call; then the launcher is called per attempt and the outcomes are committed
   together. A kill between the two commits leaves LAUNCHING attempts that step 2 finds next
   time.
6. **campaign roll-up**: SUCCEEDED / FAILED / CANCELLED when nothing more can happen, with
   the result status of its checks ("checks passed" / "needs review", `backend.result_status`),
   and the accrued cost of open attempts is brought up to date.
7. **launcher records**: launchers that keep per-instance records (the local one) forget the
   instances whose attempts have ended, once that end is committed.

The dashboard and the CLI only write intents (campaign status, ``desired_state``,
``cancel_requested``, ``retry_requested``); only the controller acts on them.

One controller per database: given a ``LeaderLease`` (`backend.leader`), a controller runs its
passes only while it leads, and every transaction it commits is fenced by the lease's token
(a deposed leader's commit is refused and rolled back). Each attempt records where its
launcher keeps the instance (``launched_from``); a leader that cannot observe an instance
there (another host) judges it through the store (heartbeats, ``exit.json``), never as gone.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import re
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from backend import ingest, jobs_repo, result_status
from backend.budget import budget_allows_launch
from backend.costs import PriceError, load_catalogue, region_of_zone
from backend.db.models import Attempt, Campaign, Job, JobDependency, saved_id
from backend.db.transitions import transition_rows
from backend.launchers import (
    CapacityError,
    InstanceState,
    InstanceStatus,
    Launcher,
    LauncherError,
    LaunchHandle,
    LaunchRequest,
)
from backend.launchers.base import worker_hours
from backend.leader import LeaderLease, LeaseLost
from backend.signal_safe import handler_setting
from backend.states import CampaignStatus, IllegalTransition, JobStatus, moved
from backend.stores import ArtifactStore, ObjectNotFound, StoreError, join_uri, layout, open_store
from backend.stores.base import list_segments, put_json
from backend.worker import EXIT_BAD_SPEC, EXIT_PREEMPTED

log = logging.getLogger("nsbi.controller")

ACTIVE = (JobStatus.LAUNCHING, JobStatus.RUNNING)
STORE_THREADS = 8  # spec.json files written (and dependency results read) in parallel
FORGET_TRIES = 50  # passes a launcher record of an ended attempt is retried before giving up


@dataclass(frozen=True)
class ControllerConfig:
    """Timing knobs; the defaults suit real jobs, tests shrink them."""

    tick_interval_s: float = 2.0
    heartbeat_timeout_s: float = 180.0  # RUNNING with no new heartbeat for this long -> FAILED
    startup_timeout_s: float = 900.0  # launched but no first heartbeat yet (VM boot, JAX import)
    max_launches_per_tick: int = 32
    max_preemptions: int = 20  # PREEMPTED -> PENDING recoveries before giving up
    # a pass that failed (the database restarting or unreachable) is retried after the tick
    # interval, doubling with each further failure up to this (then a pass every this often)
    max_retry_backoff_s: float = 5.0
    max_active_jobs: int | None = None  # quota: LAUNCHING + RUNNING jobs over all campaigns
    gpu_quota: int | None = None  # quota: GPUs of LAUNCHING + RUNNING jobs over all campaigns


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
        return any(
            (
                self.launched,
                self.relaunched,
                self.finished,
                self.failed,
                self.retried,
                self.cancelled,
            )
        )

    def add(self, other: TickReport) -> None:
        """Add the counts and errors of ``other`` (a step's report, once its commit succeeded)."""
        for name, value in vars(other).items():
            if name == "errors":
                self.errors.extend(value)
            else:
                setattr(self, name, getattr(self, name) + value)


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


@dataclass(frozen=True)
class _Launch:
    """One attempt, committed in LAUNCHING, that this pass hands to its launcher."""

    attempt_id: int
    job_id: int
    launcher: str
    request: LaunchRequest
    recovering: bool
    cancel: bool = False  # cancel requested meanwhile: stop what a crashed pass may have started
    location: str | None = None  # where the launcher of the LAUNCHING row keeps its records
    created_at: datetime | None = None


@dataclass(frozen=True)
class _Pick:
    """A ready job the launch plan picked, with the price it was budgeted at."""

    job_id: int
    launcher: str
    price_per_hour: float


@dataclass(frozen=True)
class _SpecWrite:
    """What one spec.json needs: the job's own spec and where its dependencies' results are."""

    job_id: int
    store: ArtifactStore
    spec: dict[str, Any]
    # (name, uri, store, current attempt) by dep id; no uri or store before the dep was launched
    deps: tuple[tuple[str, str | None, ArtifactStore | None, int], ...]


class _BudgetGate:
    """Budget decisions of one launch pass.

    Each campaign's spent and running cost is read once per pass; ``next_usd`` adds the jobs
    already picked in this pass, so one pass cannot overshoot. A refusal is confirmed by
    ``budget_allows_launch`` (``backend.budget``, whose reason users see); once a campaign
    refused a job at ``next_usd``, any job at least as dear is refused without a query
    (``None`` reason: its status text is left as it was).
    """

    def __init__(
        self,
        session: Session,
        now: datetime,
        custom: Callable[[Session, Campaign, Job, float], str | None] | None,
    ) -> None:
        self.session, self.now, self.custom = session, now, custom
        self._base: dict[int, tuple[float, float]] = {}
        self._refused_at: dict[int, float] = {}

    def refuse(self, campaign: Campaign, job: Job, next_usd: float) -> tuple[bool, str | None]:
        """(refused, reason to show on the job)."""
        if self.custom is not None:
            why = self.custom(self.session, campaign, job, next_usd)
            return bool(why), why
        if campaign.budget_usd is None:
            return False, None
        cid = saved_id(campaign)
        if next_usd >= self._refused_at.get(cid, math.inf):
            return True, None
        if cid not in self._base:
            d = budget_allows_launch(cid, 0.0, session=self.session, now=self.now)
            self._base[cid] = (d.spent_usd, d.running_usd)
        spent, running = self._base[cid]
        if spent + running + next_usd <= campaign.budget_usd + 1e-12:
            return False, None
        d = budget_allows_launch(cid, next_usd, session=self.session, now=self.now, spent=spent)
        if d.allowed:
            return False, None
        self._refused_at[cid] = next_usd
        return True, d.reason


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
        lease: LeaderLease | None = None,
    ) -> None:
        self.engine = engine
        # None: this controller writes without asking (tests, a database of its own); else it
        # works only while it holds the lease, and every commit is fenced by its token
        self.lease = lease
        self.store = open_store(store) if isinstance(store, str) else store
        self._launchers = launchers
        self._launcher_cache: dict[str, Launcher] = {}
        self.config = config or ControllerConfig()
        self.clock = clock
        self.budget_check = budget_check  # None: the campaign budget (backend.budget)
        self._to_forget: dict[tuple[str, str], int] = {}  # (launcher, instance) -> tries so far
        self._swept: set[str] = set()
        self._io_pool: ThreadPoolExecutor | None = None
        self._full_launchers: set[str] = (
            set()
        )  # launchers with no free slot in the last launch plan
        self._observers: dict[tuple[str, str], Launcher | None] = {}  # (launcher, location)

    # ------------------------------------------------------------------ helpers
    def launcher(self, name: str) -> Launcher:
        if name not in self._launcher_cache:
            if callable(self._launchers) and not isinstance(self._launchers, Mapping):
                self._launcher_cache[name] = self._launchers(name)
            else:
                try:
                    self._launcher_cache[name] = self._launchers[name]
                except KeyError:
                    raise LauncherError(
                        f"no launcher named {name!r} configured (have: {sorted(self._launchers)})"
                    ) from None
        return self._launcher_cache[name]

    def _session(self) -> Session:
        """A session for the controller's own work; with a lease, every commit is fenced."""
        s = Session(self.engine, expire_on_commit=False)
        return self.lease.attach(s) if self.lease is not None else s

    def leading(self) -> bool:
        """May this controller act now (no lease, or the lease is surely held)?"""
        return self.lease is None or self.lease.is_leader()

    def _location(self, lname: str) -> str | None:
        """Where launcher ``lname`` keeps its instance records (None: any controller sees them)."""
        try:
            return getattr(self.launcher(lname), "location", None)
        except LauncherError:
            return None

    def _observer(self, lname: str, location: str | None) -> Launcher | None:
        """The launcher that can observe an instance launched from ``location``: ours when it
        is ours (or no location was recorded), one for the other records folder on this host,
        None for another host (the attempt is then judged through the store only)."""
        own = self.launcher(lname)
        mine = getattr(own, "location", None)
        if location is None or mine is None or location == mine:
            return own
        key = (lname, location)
        if key not in self._observers:
            observer = getattr(own, "observer", None)
            self._observers[key] = observer(location) if observer is not None else None
        return self._observers[key]

    def job_store(self, job: Job) -> ArtifactStore:
        return self._store_at(job.uri, f"job {job.id} ({job.name})")

    def _store_at(self, uri: str | None, what: str) -> ArtifactStore:
        if not uri:
            raise StoreError(f"{what} has no store URI yet")
        if uri.startswith(self.store.uri + "/"):
            return self.store.child(uri[len(self.store.uri) + 1 :])
        return open_store(uri, create=True)

    def _request(
        self, campaign: Campaign, job: Job, attempt_no: int, uri: str | None = None
    ) -> LaunchRequest:
        spec = job.spec or {}
        limit = spec.get("time_limit_s")
        return LaunchRequest(
            options=launcher_options(campaign, job.launcher or campaign.launcher),
            campaign=campaign_key(campaign),
            job=job_key(job),
            attempt=attempt_no,
            job_uri=uri or job.uri or "",
            gpus=int(job.gpu_count or 0),
            time_limit_s=float(limit) if limit else None,
            labels={"campaign_id": str(campaign.id), "job_id": str(job.id)},
            machine_type=job.machine_type or None,
            gpu_type=job.gpu_type,
            spot=bool(job.spot),
            zones=tuple(job.zones or ()),
        )

    def _start_io(self, fn: Callable[[Any], Any], items: list[Any]) -> Callable[[], list[Any]]:
        """Start ``[fn(x) for x in items]`` on a small thread pool (store round trips: fsync on
        local disk, HTTP on GCS) and return what waits for the results; exceptions come back
        as values. The caller does its database work meanwhile."""

        def call(x: Any) -> Any:
            try:
                return fn(x)
            except Exception as exc:  # noqa: BLE001 - returned to the caller, who reports it per item
                return exc

        if len(items) <= 1:
            results = [call(x) for x in items]
            return lambda: results
        if self._io_pool is None:
            self._io_pool = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="nsbi-ctl-store")
        futures = [self._io_pool.submit(call, x) for x in items]
        return lambda: [f.result() for f in futures]

    def _check_store(self) -> None:
        """Fail before touching the database when the store root has gone away."""
        root = getattr(self.store, "root", None)
        if root is not None and not root.is_dir():
            raise StoreError(
                f"store root {root} does not exist (URI {self.store.uri}); the controller changed nothing"
            )

    # ------------------------------------------------------------------ the pass
    def tick(self) -> TickReport:
        """One reconcile pass (see the module docstring); safe to repeat and to interrupt."""
        self._check_store()
        report = TickReport()
        if not self.leading():
            return report  # standby: another controller leads the database
        for step in (
            self._apply_intents,
            self._recover_launching,
            self._poll_running,
            self._retry_failed,
            self._launch_ready,
            self._settle,
            self._forget_ended,
        ):
            if not self.leading():
                log.warning(
                    "controller: lease lost during a pass; stopping before %s", step.__name__
                )
                break
            try:
                step(report)
            except (StoreError, LauncherError) as exc:
                log.error("controller %s: %s", step.__name__, exc)
                report.errors.append(f"{step.__name__}: {exc}")
            except LeaseLost as exc:  # the commit was refused and rolled back: stand by
                log.warning("controller %s: %s", step.__name__, exc)
                break
        return report

    # step 1: intents ----------------------------------------------------------
    def _apply_intents(self, report: TickReport) -> None:
        """Cancel / retry intents that need no machine; stop instances of cancelled running jobs."""
        with self._session() as s:
            # a campaign being cancelled cancels each of its unfinished jobs
            cancelling = list(
                s.exec(select(Campaign.id).where(Campaign.status == CampaignStatus.CANCELLING))
            )
            if cancelling:
                s.execute(
                    sa.update(Job)
                    .where(
                        col(Job.campaign_id).in_(cancelling),
                        col(Job.cancel_requested).is_(False),
                        col(Job.status).in_([JobStatus.PENDING, JobStatus.PREEMPTED, *ACTIVE]),
                    )
                    .values(cancel_requested=True)
                    .execution_options(synchronize_session=False)
                )
            out = jobs_repo.apply_simple_intents(s, now=self.clock())
            s.commit()
            report.cancelled += len(out["cancelled"])
            report.retried += len(out["retried"])
            if not out["to_stop"]:
                return
            rows = s.exec(
                select(Job, Attempt)
                .join(
                    Attempt,
                    sa.and_(
                        col(Attempt.job_id) == Job.id,
                        col(Attempt.attempt_no) == Job.current_attempt,
                    ),
                )
                .where(col(Job.id).in_(out["to_stop"]))
                .order_by(col(Job.id))
            ).all()
        for job, attempt in rows:
            if attempt.status != JobStatus.RUNNING or not attempt.instance_id:
                continue  # LAUNCHING ones are handled by the launch recovery step
            try:
                js = self.job_store(job)
                if not js.exists(layout.CANCEL):
                    put_json(js, layout.CANCEL, {"requested_at": self.clock().isoformat()})
                launcher = self._observer(attempt.launcher, attempt.launched_from)
                if launcher is not None:  # else the worker reads cancel.json
                    launcher.cancel(attempt.instance_id)
            except (LauncherError, StoreError) as exc:
                report.errors.append(f"cancel {job.name}: {exc}")

    # step 2: half-done launches -------------------------------------------------
    def _recover_launching(self, report: TickReport) -> None:
        with self._session() as s:
            todo = []
            for job, attempt in jobs_repo.half_done_launches(s):
                if JobStatus(job.status) != JobStatus.LAUNCHING:
                    continue
                campaign = s.get_one(Campaign, job.campaign_id)
                todo.append(
                    _Launch(
                        saved_id(attempt),
                        saved_id(job),
                        attempt.launcher,
                        self._request(campaign, job, attempt.attempt_no),
                        recovering=True,
                        cancel=job.cancel_requested or campaign.status == CampaignStatus.CANCELLING,
                        location=attempt.launched_from,
                        created_at=_aware(attempt.created_at),
                    )
                )
        self._launch_and_record(todo, report)

    def _launch_and_record(self, todo: list[_Launch], report: TickReport) -> None:
        """Call the launcher for attempts already committed in LAUNCHING; commit the outcomes
        together (what was launched before an unexpected error is still recorded)."""
        outcomes: list[tuple[_Launch, str, Any]] = []
        self._launch_batches(todo, report)
        try:
            for item in todo:
                outcome = self._call_launcher(item, report)
                if outcome is not None:
                    outcomes.append((item, *outcome))
        finally:
            if outcomes:
                self._record_launches(outcomes, report)

    def _launch_batches(self, todo: list[_Launch], report: TickReport) -> None:
        """Hand launchers that start many attempts at once (``launch_batch``: Slurm job arrays)
        this pass's attempts together; the per-attempt ``launch`` that follows finds them."""
        batches: dict[int, tuple[Any, list[LaunchRequest]]] = {}
        for item in todo:
            try:
                launcher = None if item.cancel else self._observer(item.launcher, item.location)
            except LauncherError:
                continue
            if launcher is not None and hasattr(launcher, "launch_batch"):
                batches.setdefault(id(launcher), (launcher, []))[1].append(item.request)
        for launcher, requests in batches.values():
            try:
                launcher.launch_batch(requests)
            except LauncherError as exc:  # each attempt's own launch below reports it
                report.errors.append(f"launch batch {launcher.name}: {exc}")

    def _call_launcher(self, item: _Launch, report: TickReport) -> tuple[str, Any] | None:
        """("launched", handle) | ("cancelled", status) | ("failed", error) | None (try later)."""
        iid = item.request.instance_id
        try:
            launcher = self._observer(item.launcher, item.location)
        except LauncherError as exc:
            return "failed", exc
        if launcher is None:  # launched from another host by an earlier leader
            return self._adopt_remote_launch(item)
        if item.cancel:
            try:
                launcher.cancel(iid)  # in case a crashed pass had started it
                st = launcher.poll([iid])[iid]
            except LauncherError as exc:
                report.errors.append(f"cancel {iid}: {exc}")
                return None
            if not st.state.is_alive():
                return "cancelled", st
        try:
            return "launched", launcher.launch(item.request)
        except CapacityError as exc:
            log.info("controller: %s waits for capacity: %s", iid, exc)
            return None  # stays LAUNCHING; tried again next pass
        except LauncherError as exc:
            return "failed", exc

    def _adopt_remote_launch(self, item: _Launch) -> tuple[str, Any] | None:
        """A LAUNCHING attempt whose launcher keeps its records on another host (an earlier
        leader there crashed mid-launch): this controller cannot tell whether the instance was
        started, and launching it here could run the attempt twice. Once its worker wrote a
        heartbeat or an exit record the attempt counts as launched; with neither within the
        startup timeout it is failed (and retried as a new attempt)."""
        iid = item.request.instance_id
        js = self._store_at(item.request.job_uri, f"job {item.job_id}")
        if ingest.read_exit(js, item.request.attempt) is not None or list_segments(
            js, layout.heartbeat_prefix(item.request.attempt)
        ):
            return "launched", LaunchHandle(iid, item.launcher, already_running=True)
        started = item.created_at
        if started is not None and self.clock() - started > timedelta(
            seconds=self.config.startup_timeout_s
        ):
            return "failed", LauncherError(
                f"launched from {item.location}, which this controller cannot observe, and no "
                f"heartbeat within {self.config.startup_timeout_s:.0f} s"
            )
        return None

    def _record_launches(
        self, outcomes: list[tuple[_Launch, str, Any]], report: TickReport
    ) -> None:
        done = TickReport()
        ended: list[tuple[str, str]] = []
        with self._session() as s:
            rows = {
                r.attempt_id: r
                for r in jobs_repo.attempt_state_rows(
                    s, [item.attempt_id for item, _, _ in outcomes]
                )
            }
            now = self.clock()
            launched, others = [], []
            for item, kind, value in outcomes:
                r = rows.get(item.attempt_id)
                if (
                    r is None
                    or r.attempt_status != JobStatus.LAUNCHING
                    or r.status != JobStatus.LAUNCHING
                ):
                    continue
                if kind == "launched":
                    launched.append((r, value.instance_id))
                    if item.recovering:
                        done.relaunched += 1
                    else:
                        done.launched += 1
                else:
                    others.append((item, kind, value))
            jobs_repo.mark_launched_rows(s, launched, now=now)
            for item, kind, value in others:  # rare: the ORM path, one attempt at a time
                job, attempt = s.get_one(Job, item.job_id), s.get_one(Attempt, item.attempt_id)
                if kind == "cancelled":
                    jobs_repo.end_attempt(
                        s,
                        job,
                        attempt,
                        JobStatus.CANCELLED,
                        exit_code=value.exit_code,
                        reason="cancelled before it ran",
                        now=now,
                    )
                    ended.append((item.launcher, item.request.instance_id))
                    done.cancelled += 1
                else:  # the launcher refused (not a capacity wait)
                    jobs_repo.end_attempt(
                        s,
                        job,
                        attempt,
                        JobStatus.FAILED,
                        failure_reason=f"launch failed: {value}",
                        now=now,
                    )
                    done.failed += 1
            s.commit()
        report.add(done)
        self._forget_later(ended)

    # step 3: poll + ingest -----------------------------------------------------
    def _poll_running(self, report: TickReport) -> None:
        with self._session() as s:
            pairs = jobs_repo.open_attempts(s, status=JobStatus.RUNNING)
            statuses = self._poll(pairs, report)
            items = [(saved_id(j), a.id, statuses[a.id]) for j, a in pairs if a.id in statuses]
            if not items:
                return
            done = TickReport()
            ended: list[tuple[str, str | None]] = []
            together = True  # one transaction for all the attempts
            try:
                for job, attempt in pairs:
                    if attempt.id in statuses:
                        self._reconcile(s, job, attempt, statuses[attempt.id], done, ended)
                s.commit()
            except StoreError as exc:
                s.rollback()
                log.warning(
                    "controller: ingest of one attempt failed (%s); reconciling attempt by attempt",
                    exc,
                )
                together = False
        if together:
            report.add(done)
            self._forget_later(ended)
            return
        for job_id, attempt_id, st in items:
            try:
                self._reconcile_alone(job_id, attempt_id, st, report)
            except StoreError as exc:
                report.errors.append(f"attempt {attempt_id}: {exc}")

    def _poll(
        self, pairs: list[tuple[Job, Attempt]], report: TickReport
    ) -> dict[int, InstanceStatus]:
        """attempt id -> its instance's status, one ``poll`` call per launcher (and records
        folder). An instance this controller cannot observe (launched from another host by an
        earlier leader) is judged by what its worker wrote to the store: its exit record, else
        alive while its heartbeats keep coming (``_lost_heartbeat``) -- never "gone"."""
        by_launcher: dict[tuple[str, str | None], list[Attempt]] = defaultdict(list)
        jobs = {saved_id(j): j for j, _ in pairs}
        for _, a in pairs:
            by_launcher[(a.launcher, a.launched_from)].append(a)
        out: dict[int, InstanceStatus] = {}
        for (lname, location), attempts in by_launcher.items():
            iids = [cast(str, a.instance_id) for a in attempts]  # RUNNING: launched, so it has one
            try:
                launcher = self._observer(lname, location)
                if launcher is None:
                    statuses = {
                        cast(str, a.instance_id): self._store_status(jobs[a.job_id], a, location)
                        for a in attempts
                    }
                else:
                    statuses = launcher.poll(iids)
            except (LauncherError, StoreError) as exc:
                report.errors.append(f"poll {lname}: {exc}")
                continue
            for a, iid in zip(attempts, iids):
                out[saved_id(a)] = statuses.get(iid) or InstanceStatus(
                    iid, InstanceState.GONE, None, "not reported"
                )
        return out

    def _store_status(self, job: Job, attempt: Attempt, location: str | None) -> InstanceStatus:
        """The status of an instance no launcher here can see, from the store alone."""
        iid = cast(str, attempt.instance_id)
        exit_doc = ingest.read_exit(self.job_store(job), attempt.attempt_no)
        if exit_doc is not None:
            code = exit_doc.get("exit_code")
            return InstanceStatus(
                iid,
                InstanceState.EXITED,
                code if isinstance(code, int) else None,
                f"exit record in the store (launched from {location})",
            )
        return InstanceStatus(
            iid,
            InstanceState.RUNNING,
            None,
            f"watched through the store (launched from {location})",
        )

    def _reconcile_alone(
        self, job_id: int, attempt_id: int, st: InstanceStatus, report: TickReport
    ) -> None:
        """One attempt in its own transaction (the fallback when the shared one failed)."""
        done = TickReport()
        ended: list[tuple[str, str | None]] = []
        with self._session() as s:
            attempt, job = s.get_one(Attempt, attempt_id), s.get_one(Job, job_id)
            if attempt.status != JobStatus.RUNNING or JobStatus(job.status) != JobStatus.RUNNING:
                return
            self._reconcile(s, job, attempt, st, done, ended)
            s.commit()
        report.add(done)
        self._forget_later(ended)

    def _reconcile(
        self,
        s: Session,
        job: Job,
        attempt: Attempt,
        st: InstanceStatus,
        report: TickReport,
        ended: list[tuple[str, str | None]],
    ) -> None:
        """Ingest what the attempt wrote; end it if its instance has ended (the caller commits)."""
        js = self.job_store(job)
        now = self.clock()
        got = ingest.ingest_attempt(s, job, attempt, js, now=now)
        report.metrics += got.metrics
        report.resources += got.resources
        if st.state.is_alive():
            queued = st.state is InstanceState.PENDING and self._batch_queue(attempt.launcher)
            reason = None if queued else self._lost_heartbeat(attempt, now)
            if reason:
                launcher = self._observer(attempt.launcher, attempt.launched_from)
                if launcher is not None:  # else on another host: it stops on cancel.json or dies
                    getattr(launcher, "kill", launcher.cancel)(
                        cast(str, attempt.instance_id)
                    )  # RUNNING: it has one
                jobs_repo.end_attempt(
                    s, job, attempt, JobStatus.FAILED, failure_reason=reason, now=now
                )
                ended.append((attempt.launcher, attempt.instance_id))
                report.failed += 1
            return
        ended.append((attempt.launcher, attempt.instance_id))
        # the instance has ended: what the worker said decides, then the launcher's view
        exit_doc = ingest.read_exit(js, attempt.attempt_no)
        code = exit_doc.get("exit_code") if exit_doc else st.exit_code
        worker_status = (exit_doc or {}).get("status")
        if worker_status == "succeeded" and ingest.read_result(js, attempt.attempt_no) is not None:
            ingest.ingest_result(s, job, attempt, js)
            jobs_repo.end_attempt(
                s,
                job,
                attempt,
                JobStatus.SUCCEEDED,
                exit_code=code,
                reason="worker succeeded",
                now=now,
            )
            report.finished += 1
        elif job.cancel_requested:
            jobs_repo.end_attempt(
                s,
                job,
                attempt,
                JobStatus.CANCELLED,
                exit_code=code,
                reason="cancelled on request",
                now=now,
            )
            report.cancelled += 1
        elif (
            worker_status == "preempted"
            or code == EXIT_PREEMPTED
            or st.state is InstanceState.PREEMPTED
        ):
            why = (exit_doc or {}).get("error") or st.detail or "preempted"
            jobs_repo.end_attempt(
                s,
                job,
                attempt,
                JobStatus.PREEMPTED,
                exit_code=code,
                failure_reason=f"preempted: {why}",
                now=now,
            )
            report.failed += 1
        elif (
            exit_doc is not None and code == EXIT_BAD_SPEC and not exit_doc.get("retryable", False)
        ):
            # the worker refused the job spec or the inputs it names (failure_kind
            # "spec_error": a missing sample file, a bad column, a workspace the engine
            # refuses): every retry would fail the same way, so the job fails at once
            why = str(exit_doc.get("error") or "bad job spec").splitlines()[0]
            label = "spec error" if exit_doc.get("failure_kind") == "spec_error" else "bad job spec"
            jobs_repo.end_attempt(
                s,
                job,
                attempt,
                JobStatus.FAILED,
                exit_code=code,
                now=now,
                failure_reason=f"{label} (exit code {code}; not retried): {why}"[:2000],
            )
            jobs_repo.no_more_retries(s, job)
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
                last = self._last_log_line(attempt)
                why = f"worker died without an exit record (exit code {code}{extra})" + (
                    f"; its log ends: {last}" if last else ""
                )
            jobs_repo.end_attempt(
                s,
                job,
                attempt,
                JobStatus.FAILED,
                exit_code=code,
                failure_reason=why[:2000],
                now=now,
            )
            report.failed += 1
        self._bill_worker_time(attempt, exit_doc)

    def _batch_queue(self, lname: str) -> bool:
        """Whether launcher ``lname`` hands attempts to a batch queue (``batch_queue``:
        Slurm): time waiting there is neither billed nor held against the startup timeout."""
        try:
            return getattr(self.launcher(lname), "batch_queue", False) is True
        except LauncherError:
            return False

    def _bill_worker_time(self, attempt: Attempt, exit_doc: dict | None) -> None:
        """A batch queue's ended attempt is charged for the time its worker ran by its exit
        record (else launch to end stands)."""
        hours = worker_hours(exit_doc) if self._batch_queue(attempt.launcher) else None
        if hours is not None:
            attempt.gpu_hours = hours * attempt.gpu_count
            attempt.cost_usd = hours * attempt.price_per_hour

    def _last_log_line(self, attempt: Attempt) -> str:
        """The last line of the worker's log where its launcher keeps one here (the local
        launcher), else "". A worker that could not write its exit record (a full store disk)
        printed why there."""
        try:
            launcher = self._observer(attempt.launcher, attempt.launched_from)
        except LauncherError:
            return ""
        log_path = getattr(launcher, "log_path", None)
        if log_path is None or not attempt.instance_id:
            return ""
        try:
            with open(log_path(attempt.instance_id), "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 4096))
                tail = fh.read().decode(errors="replace")
        except OSError:
            return ""
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        return lines[-1][:500] if lines else ""

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

    # step 4: retries -------------------------------------------------------------
    def _retry_failed(self, report: TickReport) -> None:
        """Requeue retryable FAILED and PREEMPTED jobs, all in one transaction."""
        limit = self.config.max_preemptions
        with self._session() as s:
            now = self.clock()
            rows = jobs_repo.recovery_rows(s)
            if not rows:
                return
            give_up = [
                r
                for r in rows
                if r.status == JobStatus.PREEMPTED and r.recoveries - r.retries >= limit
            ]
            # final: FAILED with no automatic retry either
            transition_rows(
                s,
                give_up,
                JobStatus.FAILED,
                f"preempted {limit} times; giving up",
                now=now,
                extra=[{"retries": max(r.retries, r.max_retries)} for r in give_up],
            )
            requeue, reasons = [], []
            for r in rows:
                if r in give_up:
                    continue
                reason = (
                    "recovering from preemption"
                    if r.status == JobStatus.PREEMPTED
                    else f"automatic retry {r.retries + 1} of {r.max_retries}"
                )
                try:
                    moved(r, JobStatus.PENDING, reason, now=now)
                except (
                    IllegalTransition
                ) as exc:  # refused before anything changed: the others go on
                    report.errors.append(str(exc))
                    continue
                requeue.append(r)
                reasons.append(reason)
            jobs_repo.requeue_rows(s, requeue, reasons, now=now)
            s.commit()
        report.retried += len(requeue)

    # step 5: launches ----------------------------------------------------------
    def _launch_ready(self, report: TickReport) -> None:
        """Pick ready jobs within every limit, commit their attempts, then launch them."""
        picks = self._plan_launches(report)
        if picks:
            self._launch_and_record(self._create_attempts(picks, report), report)

    def _plan_launches(self, report: TickReport) -> list[_Pick]:
        """Ready jobs to launch now, best first.

        Limits: the campaign's ``max_concurrency``; the launcher's free slots; the controller's
        quotas (``max_active_jobs``, ``gpu_quota``); the campaign budget, counting the jobs
        already picked in this pass so one pass cannot overshoot it. Read-only but for the
        status text of jobs the budget holds back.
        """
        cfg = self.config
        plan: list[_Pick] = []
        with self._session() as s:
            active, gpus_busy = jobs_repo.active_load(s)
            n_active = sum(active.values())
            if cfg.max_active_jobs is not None and n_active >= cfg.max_active_jobs:
                return plan
            campaigns = {
                saved_id(c): c
                for c in s.exec(select(Campaign).where(Campaign.status == CampaignStatus.ACTIVE))
            }
            room = {
                cid: max(1, int(c.max_concurrency or 1)) - active.get(cid, 0)
                for cid, c in campaigns.items()
            }
            slots: dict[str, int | None] = {}
            for (
                lname
            ) in self._full_launchers:  # full last time: ask first, so the query can leave them out
                try:
                    slots[lname] = self.launcher(lname).free_slots()
                except LauncherError:
                    pass
            planned_usd: dict[int, float] = defaultdict(float)
            budget = _BudgetGate(s, self.clock(), self.budget_check)
            prices: dict[tuple, float] = {}

            def narrowing() -> dict[str, Any]:
                """What the next query can leave out: full campaigns, full launchers, big jobs."""
                return {
                    "campaign_ids": sorted(cid for cid, n in room.items() if n > 0),
                    "exclude_launchers": sorted(
                        n for n, free in slots.items() if free is not None and free <= 0
                    ),
                    "max_gpus": None if cfg.gpu_quota is None else cfg.gpu_quota - gpus_busy,
                }

            for job in self._ready(s, narrowing):
                if len(plan) >= cfg.max_launches_per_tick:
                    break
                if cfg.max_active_jobs is not None and n_active >= cfg.max_active_jobs:
                    break
                if cfg.gpu_quota is not None and gpus_busy + job.gpu_count > cfg.gpu_quota:
                    continue
                cid = job.campaign_id
                campaign = campaigns[cid]
                if room[cid] <= 0:
                    continue
                lname = job.launcher or campaign.launcher
                if lname not in slots:
                    try:
                        slots[lname] = self.launcher(lname).free_slots()
                    except (
                        LauncherError
                    ) as exc:  # e.g. an unknown launcher name: nothing of it launches
                        report.errors.append(f"launcher {lname!r}: {exc}")
                        slots[lname] = 0
                free = slots[lname]
                if free is not None and free <= 0:
                    continue
                key: tuple = (
                    job.machine_type,
                    job.gpu_type,
                    job.gpu_count,
                    job.spot,
                    tuple(job.zones or ())[:1],
                )
                price_of = getattr(self.launcher(lname), "price_per_hour", None)
                if price_of is not None:  # priced by the launcher (Slurm: the config's rates)
                    key = (*key, lname, cid)
                    if key not in prices:
                        prices[key] = price_of(launcher_options(campaign, lname), job.gpu_count)
                if key not in prices:
                    prices[key] = job_price_per_hour(job)
                cost = prices[key] * float(job.est_hours or 0.0)
                refused, why_not = budget.refuse(campaign, job, planned_usd[cid] + cost)
                if refused:
                    if why_not and job.status_reason != why_not:
                        job.status_reason = why_not
                        s.add(job)
                    continue
                plan.append(_Pick(saved_id(job), lname, prices[key]))
                planned_usd[cid] += cost
                room[cid] -= 1
                n_active += 1
                gpus_busy += job.gpu_count
                if free is not None:
                    slots[lname] = free - 1
            if s.dirty:
                s.commit()  # the budget's status texts
        self._full_launchers = {n for n, free in slots.items() if free is not None and free <= 0}
        return plan

    def _ready(self, s: Session, narrowing: Callable[[], dict[str, Any]]) -> Iterator[Job]:
        """Ready jobs, best first, a page at a time (a campaign of 10,000 ready jobs costs as
        much as the few this pass can launch). ``narrowing()`` gives the filters of the next
        query; when a pick changes them (a campaign or launcher fills up), the rest of the page
        is dropped and the query runs again from there, so full ones are never scanned."""
        page = max(32, 2 * self.config.max_launches_per_tick)
        after: tuple[int, int] | None = None
        while True:
            filters = narrowing()
            if not filters["campaign_ids"]:
                return
            rows = jobs_repo.ready_jobs(s, limit=page, after=after, **filters)
            for job in rows:
                after = (job.priority, saved_id(job))
                yield job
                if narrowing() != filters:
                    break
            else:
                if len(rows) < page:
                    return

    def _create_attempts(self, picks: list[_Pick], report: TickReport) -> list[_Launch]:
        """Write the picked jobs' spec.json files and, once every one is in the store, commit
        all their attempt rows in LAUNCHING in one transaction (before any launch call; the
        rows are written while the files are, and rolled back if a file could not be);
        returns what to launch."""
        with self._session() as s:
            jobs = {
                j.id: j
                for j in s.exec(select(Job).where(col(Job.id).in_([p.job_id for p in picks])))
            }
            campaigns = {
                c.id: c
                for c in s.exec(
                    select(Campaign).where(
                        col(Campaign.id).in_({j.campaign_id for j in jobs.values()})
                    )
                )
            }
            todo = [
                (p, jobs[p.job_id])
                for p in picks
                if p.job_id in jobs and JobStatus(jobs[p.job_id].status) == JobStatus.PENDING
            ]
            uris = {
                pick.job_id: job.uri
                or join_uri(
                    self.store.uri,
                    layout.job_prefix(campaign_key(campaigns[job.campaign_id]), job_key(job)),
                )
                for pick, job in todo
            }
            writes = self._spec_writes(
                s, [(job, campaigns[job.campaign_id], uris[pick.job_id]) for pick, job in todo]
            )
            written = self._start_io(self._write_spec, writes)
            try:
                begun = jobs_repo.begin_attempts(
                    s,
                    [(job, pick.launcher, pick.price_per_hour) for pick, job in todo],
                    now=self.clock(),
                    uris=uris,
                )
                self._record_locations(s, [(pick, begun[pick.job_id][0]) for pick, _ in todo])
            finally:
                results = written()
            failed = {w.job_id: r for w, r in zip(writes, results) if isinstance(r, Exception)}
            if failed:
                s.rollback()  # no attempt without its spec.json: begin again without those jobs
                for job_id, exc in failed.items():
                    if not isinstance(exc, StoreError):
                        raise exc
                    report.errors.append(f"spec of job {job_id}: {exc}")
                rest = [p for p in picks if p.job_id not in failed]
                return self._create_attempts(rest, report) if rest else []
            s.commit()
            return [
                _Launch(
                    begun[pick.job_id][0],
                    pick.job_id,
                    pick.launcher,
                    self._request(
                        campaigns[job.campaign_id], job, begun[pick.job_id][1], uris[pick.job_id]
                    ),
                    recovering=False,
                )
                for pick, job in todo
            ]

    def _record_locations(self, s: Session, begun: list[tuple[_Pick, int]]) -> None:
        """Write each new attempt's ``launched_from`` (its launcher's records folder) in the
        transaction that creates it: a later leader elsewhere then knows whether it can observe
        the instance or must judge it through the store."""
        by_location: dict[str, list[int]] = defaultdict(list)
        for pick, attempt_id in begun:
            location = self._location(pick.launcher)
            if location is not None:
                by_location[location].append(attempt_id)
        for location, ids in by_location.items():
            s.execute(
                sa.update(Attempt)
                .where(col(Attempt.id).in_(ids))
                .values(launched_from=location)
                .execution_options(synchronize_session=False)
            )

    def _spec_writes(self, s: Session, jobs: list[tuple[Job, Campaign, str]]) -> list[_SpecWrite]:
        """Each job's spec (plus ``campaign``, ``campaign_id``, ``job_id``) and its dependencies,
        read with one query for all the jobs."""
        ids = [j.id for j, _, _ in jobs]
        dep_ids: dict[int, set[int]] = defaultdict(set)
        for jid, did in s.execute(
            sa.select(col(JobDependency.job_id), col(JobDependency.depends_on_id)).where(
                col(JobDependency.job_id).in_(ids)
            )
        ):
            dep_ids[jid].add(did)
        for job, _, _ in jobs:
            dep_ids[saved_id(job)].update(job.depends_on or [])
        wanted = sorted(set().union(*dep_ids.values())) if dep_ids else []
        deps: dict[int, Any] = {}
        for i in range(0, len(wanted), 10_000):
            for row in s.execute(
                sa.select(col(Job.id), col(Job.name), col(Job.uri), col(Job.current_attempt)).where(
                    col(Job.id).in_(wanted[i : i + 10_000])
                )
            ):
                deps[row.id] = row
        out = []
        for job, campaign, uri in jobs:
            spec = dict(job.spec or {})
            spec.setdefault("kind", job.kind)
            spec.setdefault("name", job.name)
            spec.update(
                {
                    "campaign": spec.get("campaign", campaign.name),
                    "campaign_id": campaign.id,
                    "job_id": job.id,
                }
            )
            listed = []
            for did in sorted(dep_ids[saved_id(job)]):
                d = deps.get(did)
                if d is None:
                    continue
                listed.append(
                    (
                        d.name,
                        d.uri,
                        self._store_at(d.uri, f"job {did} ({d.name})") if d.uri else None,
                        d.current_attempt,
                    )
                )
            out.append(
                _SpecWrite(
                    saved_id(job),
                    self._store_at(uri, f"job {job.id} ({job.name})"),
                    spec,
                    tuple(listed),
                )
            )
        return out

    @staticmethod
    def _write_spec(w: _SpecWrite) -> None:
        """spec.json with ``inputs``: each dependency's result.json, keyed by job name. Not
        rewritten when the same bytes are already there (a retry of the same job)."""
        spec = dict(w.spec)
        inputs = {}
        for name, uri, store, attempt_no in w.deps:
            result = ingest.read_result(store, attempt_no) if store is not None else None
            if result is None:
                raise StoreError(
                    f"job {spec.get('name')}: dependency {name} SUCCEEDED but its result.json is missing "
                    f"({uri}/{layout.result_key(attempt_no)})"
                )
            inputs[name] = result
        if inputs:
            spec["inputs"] = inputs
        data = json.dumps(spec, sort_keys=True, indent=1).encode()
        try:
            if w.store.get_bytes(layout.SPEC) == data:
                return
        except ObjectNotFound:
            pass
        w.store.put_bytes(layout.SPEC, data)

    # step 6: campaigns ---------------------------------------------------------
    def _settle(self, report: TickReport) -> None:
        with self._session() as s:
            settled = jobs_repo.settle_campaigns(s, now=self.clock())
            result_status.record_result_status(
                s, settled
            )  # checks gate the result: same transaction
            jobs_repo.accrue_costs(s, now=self.clock())
            s.commit()

    # step 7: launcher records --------------------------------------------------
    def _forget_later(self, ended: Iterable[tuple[str, str | None]]) -> None:
        """Queue the launcher records of attempts whose end has just been committed."""
        for lname, iid in ended:
            if iid:
                self._to_forget.setdefault((lname, iid), 0)

    def _forget_ended(self, report: TickReport) -> None:
        """Let launchers that keep per-instance records (``forget``) drop those of ended
        attempts. Only after the end is committed: a record is what makes a relaunch of a
        LAUNCHING attempt idempotent. Records left behind by a crash are swept once per
        launcher and controller life."""
        known = set(self._launcher_cache) | (
            set(self._launchers) if isinstance(self._launchers, Mapping) else set()
        )
        for lname in sorted(
            known - self._swept
        ):  # launchers built by a factory: once this life used them
            self._swept.add(lname)
            self._sweep(lname, self.launcher(lname))
        for key, tries in list(self._to_forget.items()):
            forget = getattr(self._launcher_cache.get(key[0]), "forget", None)
            if forget is None:
                del self._to_forget[key]
                continue
            try:
                forget(key[1])
            except (LauncherError, OSError) as exc:  # e.g. a killed process still dying: next pass
                if tries + 1 >= FORGET_TRIES:
                    log.warning("controller: cannot forget instance %s: %s", key[1], exc)
                    del self._to_forget[key]
                else:
                    self._to_forget[key] = tries + 1
                continue
            del self._to_forget[key]

    def _sweep(self, lname: str, launcher: Launcher) -> None:
        if getattr(launcher, "forget", None) is None:
            return
        ids = [st.instance_id for st in launcher.list_instances() if not st.state.is_alive()]
        for i in range(0, len(ids), 500):
            with Session(self.engine) as s:
                ended = s.exec(
                    select(Attempt.instance_id).where(
                        col(Attempt.launcher) == lname,
                        col(Attempt.instance_id).in_(ids[i : i + 500]),
                        col(Attempt.ended_at).is_not(None),
                    )
                ).all()
            self._forget_later((lname, iid) for iid in ended)

    # ------------------------------------------------------------------ loop
    def run_forever(
        self,
        stop: threading.Event | None = None,
        *,
        max_ticks: int | None = None,
        until_idle: bool = False,
        status_path: Path | None = None,
    ) -> int:
        """Tick every ``tick_interval_s`` until ``stop`` is set (SIGTERM/SIGINT set it too).

        ``until_idle`` returns once no campaign is ACTIVE or CANCELLING (handy for scripts).
        ``status_path`` gets a small JSON after every pass ({"pid", "ticks", "time", "role",
        ...}) so the dashboard, ``nsbi up`` and tests can tell that a controller is alive and
        whether it leads the database ("leader") or waits ("standby"; its passes do nothing).
        Returns the number of ticks run.
        """
        stop = stop or threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, handler_setting(stop))  # not stop.set(): a deadlock
        ticks = 0
        failures = 0  # passes failed in a row: the wait before the next one doubles
        while not stop.is_set():
            t0 = time.monotonic()
            interval = self.config.tick_interval_s
            backoff = min(
                max(interval, self.config.max_retry_backoff_s), interval * 2.0 ** min(failures, 30)
            )
            try:
                report = self.tick()
                failures = 0
            except StoreError:
                raise  # the store root is gone: stop with a clear error rather than spin
            except sa.exc.DBAPIError as exc:  # the database restarting, stopped, unreachable
                failures += 1
                cause = exc.orig if exc.orig is not None else exc
                first = (str(cause).strip().splitlines() or [""])[0]
                log.warning(
                    "controller: pass %d failed: database error (%s: %s); retrying in %.1f s",
                    ticks + 1,
                    type(cause).__name__,
                    first,
                    backoff,
                )
                report = TickReport(errors=[f"database error: {first}"])
            except Exception:  # noqa: BLE001 - one bad pass (a launcher hiccup) must not end the loop
                failures += 1
                log.exception("controller: pass %d failed; retrying in %.1f s", ticks + 1, backoff)
                report = TickReport(errors=["pass failed; see the log"])
            ticks += 1
            if report.busy() or report.errors:
                log.info("tick %d: %s", ticks, report)
            if status_path is not None:
                _write_status(status_path, ticks, report, "leader" if self.leading() else "standby")
            if max_ticks is not None and ticks >= max_ticks:
                break
            if until_idle and not failures and not self.has_work():
                break
            wait = backoff if failures else interval
            stop.wait(max(0.0, wait - (time.monotonic() - t0)))
        return ticks

    def has_work(self) -> bool:
        with Session(self.engine) as s:
            return (
                s.exec(
                    select(Campaign.id).where(
                        col(Campaign.status).in_([CampaignStatus.ACTIVE, CampaignStatus.CANCELLING])
                    )
                ).first()
                is not None
            )


def _write_status(path: Path, ticks: int, report: TickReport, role: str = "leader") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "ticks": ticks,
                "time": time.time(),
                "role": role,
                "errors": report.errors[-5:],
            }
        )
    )
    os.replace(tmp, path)


def launcher_options(campaign: Campaign, launcher: str) -> dict[str, Any]:
    """The campaign config's table for ``launcher`` (``backend.slurm``), {} when it has none."""
    block = ((campaign.config or {}).get("backend") or {}).get(launcher)
    return dict(block) if isinstance(block, Mapping) else {}


def job_price_per_hour(job: Job) -> float:
    """Hourly price of the job's machine from the catalogue (0 when the catalogue has none)."""
    region = region_of_zone(job.zones[0]) if job.zones else None
    try:
        return load_catalogue().price_per_hour(
            job.machine_type, job.gpu_type, job.gpu_count, job.spot, region
        )
    except PriceError as exc:
        log.warning("controller: no price for job %s: %s", job.name, exc)
        return 0.0


def single_instance_lock(path: Path):
    """An exclusive, non-blocking flock held for the life of the process (None if taken):
    one controller per NSBI_HOME (``<NSBI_HOME>/controller.lock``).

    The kernel drops it when the process dies, even by SIGKILL, so a crashed controller never
    blocks its successor.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh
