"""Local launcher: each attempt is a subprocess in its own process group.

The worker runs under a tiny ``sh`` wrapper that records the worker's exit status in a file
(so the status survives a controller restart, when the process is no longer our child) and
ignores SIGTERM itself (so it outlives a graceful worker shutdown and still records it).
Each instance has a JSON record ``<var>/instances/<id>.json`` holding the wrapper pid and its
start time; a restarted launcher finds the process again with psutil and checks the start
time so a recycled pid is never mistaken for our worker.

A record is what makes ``launch`` idempotent, so it lives until the controller has committed
the end of its attempt; then the controller calls :meth:`LocalLauncher.forget` (and, after a
crash, sweeps the records of ended attempts), so the folder holds the live instances and a few
just-ended ones rather than every instance ever run (``free_slots`` reads them all).
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from backend.launchers.base import (
    CapacityError,
    InstanceState,
    InstanceStatus,
    LauncherError,
    LaunchHandle,
    LaunchRequest,
    sequence_of,
    worker_command,
)
from backend.launchers.records import InstanceRecords

MARKER = "nsbi-instance:"  # $0 of the sh wrapper; lets a restarted launcher find a process

# Workers on one machine share JAX's persistent compilation cache (unless the environment
# says otherwise): every training job of a campaign compiles the same functions, and a cache
# hit turns ~10 s of XLA compilation into well under a second.
JAX_CACHE_ENV = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.2"}

# What a worker inherits from the controller's environment: an allow-list, so a secret of the
# controller's process (the dashboard password, a database URL with its password, an API token)
# never reaches job code or its log. A worker needs no database (it talks to the store only).
# Names the launcher's caller passes explicitly (`extra_env`, the request's `env`) always go
# through; NSBI_LOCAL_PASS_ENV names further variables to inherit.
WORKER_ENV_NAMES = frozenset(
    {
        # the process basics
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "PYTHONPATH",
        "PYTHONHASHSEED",
        "PYTHONUNBUFFERED",
        "PYTHONDONTWRITEBYTECODE",
        "VIRTUAL_ENV",
        "LD_LIBRARY_PATH",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "COVERAGE_PROCESS_START",
        # the artifact store: Cloud Storage credentials and endpoints, TLS and proxies
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GOOGLE_CLOUD_PROJECT",
        "CLOUDSDK_CONFIG",
        "GCE_METADATA_HOST",
        "GCE_METADATA_IP",
        "STORAGE_EMULATOR_HOST",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    }
)
# The worker settings (backend/settings.py: NSBI_WORKER_*, NSBI_JOB_KIND_MODULES, NSBI_HOME,
# NSBI_STORE, NSBI_GCS_*, ...), locale, and the accelerator stack's own variables.
WORKER_ENV_PREFIXES = ("NSBI_", "LC_", "XLA_", "JAX_", "CUDA_", "NVIDIA_", "TF_CPP_", "NCCL_")
# Never inherited, whatever the lists above say: the dashboard's settings and anything that
# looks like a credential by its name (a worker that needs one gets it through `extra_env`).
WORKER_ENV_DENIED_PREFIXES = ("NSBI_DASHBOARD_",)
WORKER_ENV_DENIED_WORDS = ("PASSWORD", "PASSWD", "SECRET", "TOKEN", "API_KEY", "PRIVATE_KEY")


def worker_environment(environ: Mapping[str, str], pass_env: Sequence[str] = ()) -> dict[str, str]:
    """The part of `environ` a worker inherits (see WORKER_ENV_NAMES and the prefixes)."""
    extra = set(pass_env)
    out = {}
    for name, value in environ.items():
        if name in extra:  # named explicitly by the operator: passed as asked
            out[name] = value
            continue
        upper = name.upper()
        if upper.startswith(WORKER_ENV_DENIED_PREFIXES) or any(
            word in upper for word in WORKER_ENV_DENIED_WORDS
        ):
            continue
        if name in WORKER_ENV_NAMES or name.startswith(WORKER_ENV_PREFIXES):
            out[name] = value
    return out


@dataclass(frozen=True)
class _Record:
    instance_id: str
    campaign: str
    job: str
    attempt: int
    job_uri: str
    pid: int | None
    create_time: float | None
    started_at: float
    deadline: float | None
    gpus: tuple[int, ...]
    log: str
    term_sent_at: float | None = None
    term_reason: str = ""
    killed: bool = False

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d["gpus"] = list(self.gpus)
        return d

    @classmethod
    def from_json(cls, d: dict) -> _Record:
        d = dict(d)
        d["gpus"] = tuple(d.get("gpus", ()))
        return cls(**d)

    def replace(self, **kw) -> _Record:
        return _Record(**{**self.__dict__, **kw})


class LocalLauncher(InstanceRecords[_Record]):
    """Runs workers as local subprocesses; see the module docstring for how it stays idempotent."""

    name = "local"

    def __init__(
        self,
        var_dir: Path | str,
        *,
        max_concurrent: int = 2,
        gpus: Sequence[int] | None = None,
        grace_s: float = 25.0,
        python: str | None = None,
        extra_env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        pass_env: Sequence[str] | None = None,
    ) -> None:
        self.var_dir = Path(var_dir)
        self.instances_dir = self.var_dir / "instances"
        self.logs_dir = self.var_dir / "logs"
        self.instances_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        if max_concurrent < 1:
            raise LauncherError(f"max_concurrent must be >= 1, got {max_concurrent}")
        self.max_concurrent = int(max_concurrent)
        if gpus is None:
            from backend.resources import gpu_count

            gpus = list(range(gpu_count()))
        self.gpus = tuple(int(g) for g in gpus)
        self.grace_s = float(grace_s)
        self.python = python or sys.executable
        self.extra_env = dict(extra_env or {})
        if pass_env is None:
            from backend.settings import get_settings

            pass_env = get_settings().local.pass_env  # NSBI_LOCAL_PASS_ENV
        self.pass_env = tuple(pass_env)
        self.cwd = str(cwd) if cwd else None
        self._children: dict[str, subprocess.Popen] = {}

    # ------------------------------------------------------------------ files
    def _record_from_json(self, data: dict) -> _Record:
        return _Record.from_json(data)

    def _record_to_json(self, rec: _Record) -> dict:
        return rec.to_json()

    def _rc_path(self, instance_id: str) -> Path:
        return self.instances_dir / f"{instance_id}.rc"

    # ------------------------------------------------------------------ process identity
    def _process(self, rec: _Record) -> psutil.Process | None:
        """The live wrapper process of ``rec`` (None if gone, a zombie, or a recycled pid)."""
        child = self._children.get(rec.instance_id)
        if child is not None:
            child.poll()  # reap our own child; its returncode stays on the Popen object
        if rec.pid is None:
            return None
        try:
            proc = psutil.Process(rec.pid)
            if rec.create_time is not None and abs(proc.create_time() - rec.create_time) > 1.0:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None

    def _find_by_marker(self, instance_id: str) -> psutil.Process | None:
        """Find a wrapper started by a launcher that crashed before writing its pid."""
        want = MARKER + instance_id
        for proc in psutil.process_iter(["cmdline", "status"]):
            try:
                cmd = proc.info["cmdline"] or []
                if want in cmd and proc.info["status"] != psutil.STATUS_ZOMBIE:
                    return proc
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return None

    def _rc(self, instance_id: str) -> int | None:
        try:
            text = self._rc_path(instance_id).read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.lstrip("-").isdigit() else None

    def _status(self, rec: _Record) -> InstanceStatus:
        common: dict[str, Any] = dict(campaign=rec.campaign, job=rec.job, attempt=rec.attempt)
        rc = self._rc(rec.instance_id)
        if rc is not None:  # the wrapper's last act: finished, no need to look for the process
            self._process(rec)  # reaps our own child if it is one
            return self._exited(rec, rc, common)
        if rec.pid is None:
            proc = self._find_by_marker(rec.instance_id)
            if proc is not None:
                rec = rec.replace(pid=proc.pid, create_time=proc.create_time())
                self._write(rec)
        if self._process(rec) is not None:
            return InstanceStatus(
                rec.instance_id, InstanceState.RUNNING, None, rec.term_reason, **common
            )
        rc = self._rc(rec.instance_id)  # again: the process may have ended since the first look
        if rc is None:
            child = self._children.get(
                rec.instance_id
            )  # our own child: the kernel told us how it ended
            if child is not None and child.returncode is not None:
                rc = child.returncode if child.returncode >= 0 else 128 - child.returncode
        if rc is None:
            if rec.pid is None:
                return InstanceStatus(
                    rec.instance_id, InstanceState.GONE, None, "never started", **common
                )
            why = rec.term_reason or "process vanished without recording an exit status"
            return InstanceStatus(rec.instance_id, InstanceState.GONE, None, why, **common)
        return self._exited(rec, rc, common)

    @staticmethod
    def _exited(rec: _Record, rc: int, common: dict) -> InstanceStatus:
        detail = rec.term_reason
        if rc > 128 and not detail:
            detail = f"killed by signal {rc - 128}"
        return InstanceStatus(rec.instance_id, InstanceState.EXITED, rc, detail, **common)

    # ------------------------------------------------------------------ Launcher API
    def alive(self) -> list[InstanceStatus]:
        return [s for s in (self._status(r) for r in self._records()) if s.state.is_alive()]

    def free_slots(self) -> int:
        return max(0, self.max_concurrent - len(self.alive()))

    def _free_gpus(self) -> list[int]:
        used: set[int] = set()
        for rec in self._records():
            if self._status(rec).state.is_alive():
                used.update(rec.gpus)
        return [g for g in self.gpus if g not in used]

    def launch(self, request: LaunchRequest) -> LaunchHandle:
        iid = request.instance_id
        with self._lock():
            existing = self._read(iid)
            if existing is not None:
                st = self._status(existing)
                never_started = st.state is InstanceState.GONE and existing.pid is None
                if not never_started:
                    return LaunchHandle(
                        iid,
                        self.name,
                        already_running=True,
                        detail=f"existing instance is {st.state.value}",
                    )
            if self.free_slots() < 1:
                raise CapacityError(
                    f"local launcher: all {self.max_concurrent} slots busy; {iid} waits"
                )
            gpu_ids: list[int] = []
            if request.gpus > 0 and self.gpus:
                free = self._free_gpus()
                if len(free) < request.gpus:
                    raise CapacityError(
                        f"local launcher: {iid} needs {request.gpus} GPU(s), {len(free)} free"
                    )
                gpu_ids = free[: request.gpus]
            log = self.logs_dir / f"{iid}.log"
            now = time.time()
            rec = _Record(
                instance_id=iid,
                campaign=request.campaign,
                job=request.job,
                attempt=request.attempt,
                job_uri=request.job_uri,
                pid=None,
                create_time=None,
                started_at=now,
                deadline=(now + request.time_limit_s) if request.time_limit_s else None,
                gpus=tuple(gpu_ids),
                log=str(log),
            )
            self._write(rec)  # before the process exists: a crash here leaves a findable name
            self._rc_path(iid).unlink(missing_ok=True)
            env = {
                **JAX_CACHE_ENV,
                "JAX_COMPILATION_CACHE_DIR": str(self.var_dir / "jax-cache"),
                **worker_environment(os.environ, self.pass_env),
                **self.extra_env,
                **request.env,
                "NSBI_INSTANCE_ID": iid,
            }
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpu_ids)
            rc_path = shlex.quote(str(self._rc_path(iid)))
            script = (
                "trap ':' TERM INT; "
                + shlex.join(worker_command(self.python, request))
                + f"; rc=$?; echo $rc > {rc_path}.tmp && mv {rc_path}.tmp {rc_path}"
            )
            try:
                with open(log, "ab") as logf:
                    child = subprocess.Popen(
                        ["sh", "-c", script, MARKER + iid],
                        stdin=subprocess.DEVNULL,
                        stdout=logf,
                        stderr=subprocess.STDOUT,
                        env=env,
                        cwd=self.cwd,
                        start_new_session=True,
                        close_fds=True,
                    )
            except OSError as exc:
                self._record_path(iid).unlink(missing_ok=True)
                raise LauncherError(f"local launcher: cannot start {iid}: {exc}") from exc
            self._children[iid] = child
            try:
                ctime = psutil.Process(child.pid).create_time()
            except psutil.NoSuchProcess:
                ctime = None
            self._write(rec.replace(pid=child.pid, create_time=ctime))
            return LaunchHandle(iid, self.name, detail=f"pid {child.pid}, log {log}")

    def poll(self, instance_ids: Sequence[str] | str) -> dict[str, InstanceStatus]:
        out = {}
        now = time.time()
        for iid in sequence_of(instance_ids):
            rec = self._read(iid)
            if rec is None:
                out[iid] = InstanceStatus(iid, InstanceState.GONE, None, "no such instance")
                continue
            st = self._status(rec)
            if st.state.is_alive():
                if rec.deadline is not None and now > rec.deadline and rec.term_sent_at is None:
                    self._signal(
                        rec,
                        signal.SIGTERM,
                        f"time limit of {rec.deadline - rec.started_at:.0f} s exceeded",
                    )
                elif (
                    rec.term_sent_at is not None
                    and not rec.killed
                    and now > rec.term_sent_at + self.grace_s
                ):
                    self._signal(
                        rec,
                        signal.SIGKILL,
                        rec.term_reason + f"; killed after {self.grace_s:.0f} s grace",
                    )
                st = self._status(self._read(iid) or rec)
            out[iid] = st
        return out

    def _signal(self, rec: _Record, sig: int, reason: str) -> None:
        if rec.pid is not None:
            try:
                os.killpg(rec.pid, sig)
            except ProcessLookupError:
                pass
            except PermissionError as exc:
                raise LauncherError(
                    f"local launcher: cannot signal {rec.instance_id} (pgid {rec.pid}): {exc}"
                ) from exc
        if sig == signal.SIGKILL:
            rec = rec.replace(killed=True, term_reason=reason)
        else:
            rec = rec.replace(term_sent_at=time.time(), term_reason=reason)
        self._write(rec)

    def cancel(self, instance_id: str, *, reason: str = "cancelled") -> None:
        """SIGTERM the instance's process group now; a later ``poll`` sends SIGKILL after the grace."""
        rec = self._read(instance_id)
        if rec is None or rec.term_sent_at is not None:
            return
        if self._status(rec).state.is_alive():
            self._signal(rec, signal.SIGTERM, reason)

    def kill(self, instance_id: str) -> None:
        """SIGKILL the whole process group immediately."""
        rec = self._read(instance_id)
        if rec is not None:
            self._signal(rec, signal.SIGKILL, rec.term_reason or "killed")

    def list_instances(self, campaign: str | None = None) -> list[InstanceStatus]:
        return [
            self._status(r) for r in self._records() if campaign is None or r.campaign == campaign
        ]

    def forget(self, instance_id: str) -> None:
        """Drop the record of a finished instance (keeps the log).

        Only for instances whose end is recorded elsewhere: launching the same name again
        afterwards would start a new process. The exit status file goes first, so a crash in
        between leaves a record that reads as gone and is forgotten again, never an orphan.
        """
        with self._lock():
            rec = self._read(instance_id)
            if rec is not None and self._status(rec).state.is_alive():
                raise LauncherError(
                    f"local launcher: {instance_id} is still running; cancel it first"
                )
            self._rc_path(instance_id).unlink(missing_ok=True)
            self._record_path(instance_id).unlink(missing_ok=True)
            self._record_path(instance_id).with_suffix(".json.tmp").unlink(
                missing_ok=True
            )  # a crashed write
            self._children.pop(instance_id, None)

    # ------------------------------------------------------------------ who can see an instance
    @property
    def location(self) -> str:
        """Where this launcher keeps its instance records, ``host:folder``. The controller
        stores it on each attempt: only a launcher on the same host, reading the same folder
        (see :meth:`observer`), can tell whether the instance is alive, so a controller with
        another NSBI_HOME never declares an instance "gone" just because it has no record."""
        return f"{socket.gethostname()}:{self.var_dir.resolve()}"

    def observer(self, location: str) -> LocalLauncher | None:
        """A launcher reading the records at ``location``: this one, one over another folder of
        this host (an earlier leader's NSBI_HOME), or None for another host (its instances
        cannot be seen from here; the controller then judges them through the store)."""
        if location == self.location:
            return self
        host, _, folder = location.partition(":")
        if host != socket.gethostname() or not folder or not Path(folder).is_dir():
            return None
        return LocalLauncher(
            folder,
            max_concurrent=self.max_concurrent,
            gpus=self.gpus,
            grace_s=self.grace_s,
            python=self.python,
            extra_env=self.extra_env,
            cwd=self.cwd,
            pass_env=self.pass_env,
        )

    def log_path(self, instance_id: str) -> Path:
        return self.logs_dir / f"{instance_id}.log"

    def worker_pids(self, instance_id: str) -> list[int]:
        """Pids of the worker processes under the wrapper (for tests and diagnostics)."""
        rec = self._read(instance_id)
        proc = self._process(rec) if rec else None
        if proc is None:
            return []
        try:
            return [c.pid for c in proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
