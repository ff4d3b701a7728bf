"""Slurm launcher: attempts run as tasks of ``sbatch`` job arrays on an HPC cluster.

How it maps the :class:`~backend.launchers.base.Launcher` contract onto Slurm:

- **launch_batch** (what the controller calls with a pass's new attempts) submits one job
  array per group of attempts with equal ``#SBATCH`` options, one array task per attempt (a
  training job is already a pack of ensemble members); ``launch`` is a batch of one. Options
  come from the campaign's ``backend.slurm`` table (:class:`~backend.launchers.slurm_spec.
  SlurmOptions`: partition, account, QoS, time limit, GPUs as GRES, constraint, extra lines).
- Each attempt has a record ``<dir>/instances/<id>.json`` written *before* ``sbatch`` runs
  (with the array's unique job name) and completed with the Slurm job id after it: launching
  the same id again returns the recorded task, and a record left without an id by a crash
  is matched to the submitted array by its job name (``squeue --name``) or submitted again.
- **poll** asks ``squeue`` once (cached for ``poll_ttl_s``) for this user's tasks, and
  ``scontrol show job`` for the exit code of ended ones. Slurm forgets ended jobs after
  ``MinJobAge`` (300 s by default); then ``sacct`` answers where the cluster keeps accounting,
  else the worker's ``exit.json`` in the store decides (EXITED with its code; GONE without it).
- **time limits**: the array is submitted with ``--signal=B:TERM@<signal_before_s>``; the
  batch script ``exec``\\ s the worker, so the warning reaches the worker's SIGTERM handler,
  which writes a checkpoint and exits with ``EXIT_PREEMPTED``. The controller treats that as
  a preemption (as a GCE spot preemption) and the next attempt resumes from the checkpoint. A
  task Slurm ends itself (TIMEOUT, PREEMPTED, NODE_FAIL) maps to PREEMPTED too.
- **cancel** is ``scancel``: Slurm sends SIGTERM (the worker checkpoints) and SIGKILL after
  the cluster's ``KillWait``.
- **cost**: Slurm bills no money here; ``price_per_hour`` prices a task by the campaign's
  ``gpu_hour_usd``/``cpu_hour_usd`` (zero by default) and ``batch_queue`` tells the
  controller to charge the worker's own running time (``exit.json``), not the queue wait, and
  to let a task wait in the queue as long as the cluster keeps it there.

The store must be reachable from the compute nodes: a shared filesystem path or GCS.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from backend.launchers.base import (
    CapacityError,
    InstanceState,
    InstanceStatus,
    LauncherError,
    LaunchHandle,
    LaunchRequest,
    sequence_of,
)
from backend.launchers.local import JAX_CACHE_ENV, worker_environment
from backend.launchers.records import InstanceRecords
from backend.launchers.slurm_spec import (
    ArrayTask,
    SlurmJob,
    SlurmOptions,
    build_script,
    map_state,
    parse_scontrol,
    parse_squeue,
    sbatch_options,
)
from backend.stores import ObjectNotFound, layout
from backend.stores.base import get_json

log = logging.getLogger("nsbi.launcher.slurm")

SUBMIT_GRACE_S = 30.0  # a task submitted this recently and not listed yet counts as pending
# Slurm's messages when its controller is busy or unreachable: try again later, not a failure
TRANSIENT = (
    "unable to contact slurm controller",
    "socket timed out",
    "temporarily unable",
    "try again",
    "connection refused",
    "resource temporarily unavailable",
    "slurmctld not responding",
)
_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class SlurmSettings:
    """The launcher's own settings (``NSBI_SLURM_*``); per-campaign options are in the config."""

    dir: Path | None = (
        None  # NSBI_SLURM_DIR: scripts, logs, records (default <home>/launchers/slurm)
    )
    python: str | None = None  # NSBI_SLURM_PYTHON: the interpreter on the compute nodes
    max_jobs: int | None = (
        1000  # NSBI_SLURM_MAX_JOBS: tasks queued or running at once (0: no limit)
    )
    bin_dir: str | None = None  # NSBI_SLURM_BIN: folder of sbatch/squeue/... (default: PATH)
    pass_env: tuple[str, ...] = ()  # NSBI_SLURM_PASS_ENV: further variables the workers inherit

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SlurmSettings:
        raw = env.get("NSBI_SLURM_MAX_JOBS", "1000").strip()
        if not raw.isdigit():
            raise LauncherError(f"NSBI_SLURM_MAX_JOBS={raw!r}: expected a whole number >= 0")
        folder = env.get("NSBI_SLURM_DIR")
        return cls(
            dir=Path(folder) if folder else None,
            python=env.get("NSBI_SLURM_PYTHON") or None,
            max_jobs=int(raw) or None,
            bin_dir=env.get("NSBI_SLURM_BIN") or None,
            pass_env=tuple(
                v.strip() for v in env.get("NSBI_SLURM_PASS_ENV", "").split(",") if v.strip()
            ),
        )


@dataclass(frozen=True)
class _Record:
    instance_id: str
    campaign: str
    job: str
    attempt: int
    job_uri: str
    job_name: str  # the array's unique job name (finds a submission a crash left unrecorded)
    task: int  # array task index
    submitted_at: float
    log: str
    array_id: str | None = None  # set once sbatch answered
    cancelled: str = ""  # why we cancelled it
    exit_code: int | None = None  # from scontrol, once the task ended

    @property
    def job_id(self) -> str | None:
        return f"{self.array_id}_{self.task}" if self.array_id else None

    def common(self) -> dict[str, Any]:
        return {"campaign": self.campaign, "job": self.job, "attempt": self.attempt}

    def replace(self, **kw: Any) -> _Record:
        return _Record(**{**asdict(self), **kw})


class SlurmLauncher(InstanceRecords[_Record]):
    """Runs attempts as Slurm array tasks (see the module docstring)."""

    name = "slurm"
    # a batch queue: the controller bills the worker's running time (exit.json), not the wait
    # in the queue, and a task pending in the queue has no startup timeout
    batch_queue = True

    def __init__(
        self,
        var_dir: Path | str,
        *,
        python: str | None = None,
        max_jobs: int | None = 1000,
        bin_dir: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        pass_env: Sequence[str] = (),
        cwd: Path | str | None = None,
        poll_ttl_s: float = 1.0,
        command_timeout_s: float = 60.0,
        store_opener: Any = None,
    ) -> None:
        self.var_dir = Path(var_dir)
        self.instances_dir = self.var_dir / "instances"
        self.batches_dir = self.var_dir / "batches"
        self.logs_dir = self.var_dir / "logs"
        for folder in (self.instances_dir, self.batches_dir, self.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.python = python or sys.executable
        if max_jobs is not None and max_jobs < 1:
            raise LauncherError(f"slurm launcher: max_jobs must be >= 1 or None, got {max_jobs}")
        self.max_jobs = max_jobs
        self.bin_dir = bin_dir
        self.extra_env = dict(extra_env or {})
        self.pass_env = tuple(pass_env)
        self.cwd = str(cwd) if cwd else None
        self.poll_ttl_s = poll_ttl_s
        self.command_timeout_s = command_timeout_s
        self._store_opener = store_opener
        self._queue: dict[str, SlurmJob] = {}
        self._queue_at = -1e9
        self._queue_lock = threading.Lock()

    # ------------------------------------------------------------------ commands
    def _exe(self, name: str) -> str:
        if self.bin_dir:
            return str(Path(self.bin_dir) / name)
        return shutil.which(name) or name

    def _command_env(self) -> dict[str, str]:
        """sbatch exports its own environment to the job: the worker allow-list only (no
        controller secrets), plus where Slurm's configuration is. Not the rest of SLURM_*: a
        controller inside an allocation must not hand its job's variables on."""
        env = worker_environment(os.environ, self.pass_env)
        for key in ("SLURM_CONF", "MUNGE_SOCKET"):
            if key in os.environ:
                env[key] = os.environ[key]
        return env

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a Slurm command; a controller that cannot be reached now raises
        :class:`CapacityError` (the controller tries again next pass), any other refusal
        :class:`LauncherError` with Slurm's message."""
        cmd = [self._exe(args[0]), *args[1:]]
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=self.command_timeout_s,
                env=self._command_env(),
                cwd=self.cwd,
            )
        except FileNotFoundError as exc:
            raise LauncherError(
                f"slurm launcher: {args[0]} not found (install the Slurm client commands or set "
                "NSBI_SLURM_BIN)"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise CapacityError(
                f"slurm launcher: {' '.join(args)} did not answer within "
                f"{self.command_timeout_s:.0f} s"
            ) from exc
        if check and proc.returncode != 0:
            message = (proc.stderr or proc.stdout).strip()[:2000]
            text = f"slurm launcher: {' '.join(args[:2])} failed (rc {proc.returncode}): {message}"
            if any(word in message.lower() for word in TRANSIENT):
                raise CapacityError(text)
            raise LauncherError(text)
        return proc

    # ------------------------------------------------------------------ records
    def _record_from_json(self, data: dict) -> _Record:
        return _Record(**data)

    def _record_to_json(self, rec: _Record) -> dict:
        return asdict(rec)

    # ------------------------------------------------------------------ Slurm's view
    def _squeue(self, *, force: bool = False, name: str | None = None) -> dict[str, SlurmJob]:
        """This user's tasks, one line each (``-r``), in every state Slurm still keeps."""
        if name is not None:
            proc = self._run(
                "squeue", "--me", "-h", "-r", "--states=all", f"--name={name}", "-o", "%i|%T|%r"
            )
            return parse_squeue(proc.stdout)
        with self._queue_lock:
            if force or time.monotonic() - self._queue_at >= self.poll_ttl_s:
                proc = self._run("squeue", "--me", "-h", "-r", "--states=all", "-o", "%i|%T|%r")
                self._queue, self._queue_at = parse_squeue(proc.stdout), time.monotonic()
            return self._queue

    def _scontrol(self, job_id: str) -> SlurmJob | None:
        proc = self._run("scontrol", "-o", "show", "job", job_id, check=False)
        if proc.returncode != 0:
            return None
        return parse_scontrol(proc.stdout).get(job_id)

    def _sacct(self, job_id: str) -> SlurmJob | None:
        """The task from the accounting database (None where the cluster keeps none)."""
        proc = self._run(
            "sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State,ExitCode", check=False
        )
        if proc.returncode != 0:
            return None
        for line in proc.stdout.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and parts[0] == job_id:
                code = parts[2].split(":")[0]
                return SlurmJob(job_id, parts[1], "", int(code) if code.isdigit() else None)
        return None

    def _exit_record(self, rec: _Record) -> dict | None:
        if not rec.job_uri:
            return None
        try:
            if self._store_opener is not None:
                store = self._store_opener(rec.job_uri)
            else:
                from backend.stores import open_store

                store = open_store(rec.job_uri)
            doc = get_json(store, layout.exit_key(rec.attempt))
        except ObjectNotFound:
            return None
        except Exception as exc:  # noqa: BLE001 - an unreadable store: judged as unknown
            log.warning(
                "slurm launcher: cannot read the exit record of %s: %s", rec.instance_id, exc
            )
            return None
        return doc if isinstance(doc, dict) else None

    def _status(self, rec: _Record, queue: Mapping[str, SlurmJob]) -> InstanceStatus:
        common = rec.common()
        iid = rec.instance_id
        if rec.job_id is None:
            if rec.cancelled:
                return InstanceStatus(
                    iid, InstanceState.EXITED, None, f"{rec.cancelled} before submission", **common
                )
            return InstanceStatus(iid, InstanceState.GONE, None, "never submitted", **common)
        task = queue.get(rec.job_id)
        source = "squeue"
        if task is None:
            task, source = self._sacct(rec.job_id), "sacct"
        if task is None:
            exit_doc = self._exit_record(rec)
            if exit_doc is not None:
                code = exit_doc.get("exit_code")
                return InstanceStatus(
                    iid,
                    InstanceState.EXITED,
                    code if isinstance(code, int) else rec.exit_code,
                    f"Slurm job {rec.job_id} no longer listed; the worker's exit record stands",
                    **common,
                )
            if rec.cancelled:  # Slurm drops a cancelled task that never started at once
                return InstanceStatus(
                    iid,
                    InstanceState.EXITED,
                    None,
                    f"Slurm job {rec.job_id} {rec.cancelled} while pending",
                    **common,
                )
            if time.time() - rec.submitted_at < SUBMIT_GRACE_S:
                return InstanceStatus(
                    iid, InstanceState.PENDING, None, f"Slurm job {rec.job_id} submitted", **common
                )
            return InstanceStatus(
                iid,
                InstanceState.GONE,
                rec.exit_code,
                f"Slurm job {rec.job_id} is unknown to Slurm (ended longer than MinJobAge ago, "
                "no accounting) and its worker wrote no exit record",
                **common,
            )
        state = map_state(task.state)
        detail = f"Slurm job {rec.job_id} {task.state}"
        if task.reason and task.reason not in ("None", "(null)"):
            detail += f" ({task.reason})"
        if rec.cancelled and not state.is_alive():
            detail += f"; {rec.cancelled}"
        code = task.exit_code
        if not state.is_alive() and code is None:
            code = rec.exit_code
            if code is None and source == "squeue":
                ended = self._scontrol(rec.job_id)
                code = ended.exit_code if ended is not None else None
                if code is not None:
                    self._write(rec.replace(exit_code=code))
        if state is InstanceState.PREEMPTED and task.state.upper().startswith("TIMEOUT"):
            detail += ": time limit reached"
        return InstanceStatus(iid, state, code if not state.is_alive() else None, detail, **common)

    # ------------------------------------------------------------------ Launcher API
    def price_per_hour(self, options: Mapping[str, Any] | None, gpus: int) -> float:
        """What one hour of a task costs at the campaign's ``backend.slurm`` rates."""
        return SlurmOptions.from_config(options).price_per_hour(gpus)

    def free_slots(self) -> int | None:
        if self.max_jobs is None:
            return None
        return max(0, self.max_jobs - len(self._alive()))

    def _alive(self) -> list[_Record]:
        queue = self._squeue()
        out = []
        for rec in self._records():
            if rec.job_id is None:
                if not rec.cancelled:
                    out.append(rec)  # being submitted
                continue
            task = queue.get(rec.job_id)
            if task is not None and map_state(task.state).is_alive():
                out.append(rec)
            elif task is None and time.time() - rec.submitted_at < SUBMIT_GRACE_S:
                out.append(rec)
        return out

    def launch(self, request: LaunchRequest) -> LaunchHandle:
        """Submit one attempt (a job array of one task), or return the recorded one."""
        out = self.launch_batch([request])[request.instance_id]
        if isinstance(out, LauncherError):
            raise out
        return out

    def launch_batch(
        self, requests: Sequence[LaunchRequest]
    ) -> dict[str, LaunchHandle | LauncherError]:
        """Submit attempts as job arrays, one array per group with equal ``#SBATCH`` options.

        Already recorded attempts come back as they are; attempts beyond ``max_jobs`` get a
        :class:`CapacityError`; a group whose ``sbatch`` failed gets the error.
        """
        out: dict[str, LaunchHandle | LauncherError] = {}
        with self._lock():
            todo: list[LaunchRequest] = []
            for request in requests:
                iid = request.instance_id
                if iid in out or any(r.instance_id == iid for r in todo):
                    continue
                rec = self._read(iid)
                if rec is not None and rec.job_id is None and not rec.cancelled:
                    rec = self._adopt(rec)
                if rec is not None and (rec.job_id is not None or rec.cancelled):
                    out[iid] = LaunchHandle(
                        iid,
                        self.name,
                        already_running=True,
                        detail=f"Slurm job {rec.job_id or '(not submitted)'}",
                    )
                    continue
                todo.append(request)
            free = self.free_slots()
            if free is not None and len(todo) > free:
                for request in todo[free:]:
                    out[request.instance_id] = CapacityError(
                        f"slurm launcher: {self.max_jobs} tasks queued or running; "
                        f"{request.instance_id} waits"
                    )
                todo = todo[:free]
            groups: dict[tuple[str, ...], list[LaunchRequest]] = {}
            for request in todo:
                try:
                    key = (request.campaign, *sbatch_options(request))
                except (LauncherError, ValueError) as exc:
                    out[request.instance_id] = LauncherError(f"slurm launcher: {exc}")
                    continue
                groups.setdefault(key, []).append(request)
            for key, group in groups.items():
                try:
                    out.update(self._submit(group, key[1:]))
                except LauncherError as exc:
                    for request in group:
                        out[request.instance_id] = exc
        return out

    def _adopt(self, rec: _Record) -> _Record | None:
        """A record a crash left without its Slurm id: find the array by its job name, or
        drop the record (never submitted) so the attempt is submitted again."""
        for job_id in self._squeue(name=rec.job_name):
            array_id, _, task = job_id.partition("_")
            if task.isdigit() and int(task) == rec.task:
                rec = rec.replace(array_id=array_id)
                self._write(rec)
                return rec
        self._record_path(rec.instance_id).unlink(missing_ok=True)
        return None

    def _submit(
        self, group: list[LaunchRequest], options: Sequence[str]
    ) -> dict[str, LaunchHandle | LauncherError]:
        base = _NAME_BAD.sub("-", group[0].campaign)[:40].strip("-") or "x"
        name = f"nsbi-{base}-{uuid.uuid4().hex[:8]}"
        now = time.time()
        recs = [
            _Record(
                instance_id=r.instance_id,
                campaign=r.campaign,
                job=r.job,
                attempt=r.attempt,
                job_uri=r.job_uri,
                job_name=name,
                task=i,
                submitted_at=now,
                log=str(self.logs_dir / f"{name}-{i}.log"),
            )
            for i, r in enumerate(group)
        ]
        env = {
            **JAX_CACHE_ENV,
            "JAX_COMPILATION_CACHE_DIR": str(self.var_dir / "jax-cache"),
            **self.extra_env,
        }
        script = build_script(
            name=name,
            options=options,
            tasks=[ArrayTask(r.instance_id, r.job_uri, r.attempt, dict(r.env)) for r in group],
            python=self.python,
            log_dir=str(self.logs_dir),
            env=env,
            cwd=self.cwd,
        )
        path = self.batches_dir / f"{name}.sh"
        path.write_text(script)
        for rec in recs:  # before sbatch: a crash in between leaves a findable name
            self._write(rec)
        try:
            proc = self._run("sbatch", "--parsable", str(path))
        except LauncherError:
            for rec in recs:
                self._record_path(rec.instance_id).unlink(missing_ok=True)
            raise
        array_id = proc.stdout.strip().split(";")[0]
        if not array_id.isdigit():
            raise LauncherError(f"slurm launcher: sbatch answered {proc.stdout.strip()!r}")
        out: dict[str, LaunchHandle | LauncherError] = {}
        for rec in recs:
            self._write(rec.replace(array_id=array_id))
            out[rec.instance_id] = LaunchHandle(
                rec.instance_id,
                self.name,
                detail=f"Slurm job {array_id}_{rec.task}, log {rec.log}",
            )
        with self._queue_lock:
            self._queue_at = -1e9  # the next look asks squeue again
        log.info(
            "slurm launcher: submitted %s as job array %s (%d tasks)", name, array_id, len(recs)
        )
        return out

    def poll(self, instance_ids: Sequence[str] | str) -> dict[str, InstanceStatus]:
        ids = sequence_of(instance_ids)
        queue = self._squeue()
        out = {}
        for iid in ids:
            rec = self._read(iid)
            if rec is None:
                out[iid] = InstanceStatus(iid, InstanceState.GONE, None, "no such instance")
            else:
                out[iid] = self._status(rec, queue)
        return out

    def cancel(self, instance_id: str, *, reason: str = "cancelled") -> None:
        """``scancel`` the task (Slurm sends SIGTERM, then SIGKILL after ``KillWait``)."""
        with self._lock():
            rec = self._read(instance_id)
            if rec is None or rec.cancelled:
                return
            self._write(rec.replace(cancelled=reason))
        if rec.job_id is not None:
            self._run("scancel", rec.job_id)
            with self._queue_lock:
                self._queue_at = -1e9

    kill = cancel

    def list_instances(self, campaign: str | None = None) -> list[InstanceStatus]:
        queue = self._squeue()
        return [
            self._status(rec, queue)
            for rec in self._records()
            if campaign is None or rec.campaign == campaign
        ]

    def forget(self, instance_id: str) -> None:
        """Drop the record of an ended attempt (its end is committed by the controller)."""
        rec = self._read(instance_id)
        if rec is not None and self._status(rec, self._squeue()).state.is_alive():
            raise LauncherError(f"slurm launcher: {instance_id} is still queued or running")
        self._record_path(instance_id).unlink(missing_ok=True)

    def job_id(self, instance_id: str) -> str | None:
        """The Slurm job id (``<array>_<task>``) of an instance, for tests and diagnostics."""
        rec = self._read(instance_id)
        return rec.job_id if rec else None

    @property
    def location(self) -> str:
        """``host:folder`` of the records and logs, stored on each attempt as for the local
        launcher: the dashboard reads a task's output from ``<folder>/logs/<instance id>.log``
        (a link the batch script makes to ``%x-%a.log``) on this host or a shared filesystem,
        and a controller over other records judges the attempt through the store."""
        return f"{socket.gethostname()}:{self.var_dir.resolve()}"

    def log_path(self, instance_id: str) -> Path:
        """The task's log file (the batch script's output), where the controller reads the
        last line of a worker that died without an exit record."""
        rec = self._read(instance_id)
        return Path(rec.log) if rec else self.logs_dir / f"{instance_id}.log"

    def __repr__(self) -> str:
        return f"SlurmLauncher({str(self.var_dir)!r})"


def from_settings(settings: Any, **overrides: Any) -> SlurmLauncher:
    """Registry factory: ``NSBI_SLURM_*`` of this process's environment; keyword overrides win."""
    own = SlurmSettings.from_env(os.environ)
    kwargs: dict[str, Any] = {
        "python": own.python,
        "max_jobs": own.max_jobs,
        "bin_dir": own.bin_dir,
        "pass_env": own.pass_env,
    }
    kwargs.update(overrides)
    folder = kwargs.pop("var_dir", None) or own.dir or settings.home / "launchers" / "slurm"
    return SlurmLauncher(folder, **kwargs)


__all__ = ["SlurmLauncher", "SlurmSettings", "from_settings"]
