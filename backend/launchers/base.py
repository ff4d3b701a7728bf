"""The launcher interface: how the controller starts, watches and stops job attempts.

Everything backend-specific (a local process, a GCE VM, ...) stays behind :class:`Launcher`;
the controller only sees the dataclasses below and :class:`InstanceState`. Launchers are
idempotent by a deterministic instance name (``<campaign>-<job>-<attempt>``), so a controller
restarted after a crash finds the instance it started instead of starting a second one.

Optional extras the controller uses where a launcher has them: ``launch_batch(requests)``
(start a pass's attempts together, e.g. as one Slurm job array; ``launch`` then finds them),
``price_per_hour(options, gpus)`` (the launcher prices an attempt instead of the price
catalogue), ``batch_queue = True`` (a batch system: queue time is neither billed, the worker's
own running time is, nor held against the startup timeout), ``forget``, ``kill``,
``location``/``observer`` and ``log_path``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class LauncherError(Exception):
    """A launcher could not do what was asked (names the instance and the reason)."""


class CapacityError(LauncherError):
    """No free slot (concurrency limit, GPUs, quota); try again on a later tick."""


class InstanceState(enum.StrEnum):
    """Where an instance is, mapped from each backend's raw states."""

    PENDING = "pending"  # accepted, not yet running (VM provisioning, process starting)
    RUNNING = "running"  # the worker process/VM is alive
    EXITED = "exited"  # finished on its own; ``exit_code`` says how
    PREEMPTED = "preempted"  # stopped by the platform (spot preemption) or by our SIGTERM
    GONE = "gone"  # unknown to the backend: never started, or vanished without trace

    def is_alive(self) -> bool:
        return self in (InstanceState.PENDING, InstanceState.RUNNING)


_NAME_BAD = re.compile(r"[^a-z0-9-]+")


def instance_name(campaign: str, job: str, attempt: int) -> str:
    """Deterministic, cloud-safe instance name for one attempt of one job.

    Lower-case letters, digits and '-' only (a GCE constraint); different inputs that map to
    the same cleaned text are told apart by the attempt and, for the caller, by keeping
    campaign/job names simple.
    """

    def clean(s: str) -> str:
        return _NAME_BAD.sub("-", str(s).lower()).strip("-") or "x"

    return f"{clean(campaign)}-{clean(job)}-{int(attempt)}"


@dataclass(frozen=True)
class LaunchRequest:
    """Everything a launcher needs to start one attempt; the worker gets only the job URI."""

    campaign: str
    job: str
    attempt: int
    job_uri: str
    gpus: int = 0
    time_limit_s: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    # Hardware asked for by the job (cloud launchers use it; the local one ignores it).
    machine_type: str | None = None
    gpu_type: str | None = None
    spot: bool | None = None
    zones: tuple[str, ...] = ()
    # The campaign config's table for this launcher (``backend.<launcher>``, e.g. the
    # partition and account of ``backend.slurm``); launchers without such a table ignore it.
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def instance_id(self) -> str:
        return instance_name(self.campaign, self.job, self.attempt)


@dataclass(frozen=True)
class LaunchHandle:
    """What ``launch`` returns; ``instance_id`` is what the controller stores on the attempt."""

    instance_id: str
    launcher: str
    already_running: bool = False  # True when launch found an existing instance (idempotence)
    detail: str = ""


@dataclass(frozen=True)
class InstanceStatus:
    instance_id: str
    state: InstanceState
    exit_code: int | None = None
    detail: str = ""
    campaign: str | None = None
    job: str | None = None
    attempt: int | None = None


@runtime_checkable
class Launcher(Protocol):
    """One backend that runs worker processes somewhere."""

    name: str

    def launch(self, request: LaunchRequest) -> LaunchHandle:
        """Start the attempt, or return the existing instance with the same name.

        Raises :class:`CapacityError` when there is no free slot now.
        """
        ...

    def poll(self, instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
        """Current state of each instance; unknown ids map to ``GONE``."""
        ...

    def cancel(self, instance_id: str) -> None:
        """Ask the instance to stop (SIGTERM / stop VM); escalate after a grace period on later polls."""
        ...

    def list_instances(self, campaign: str | None = None) -> list[InstanceStatus]:
        """Instances this launcher knows of, optionally only those of one campaign."""
        ...

    def free_slots(self) -> int | None:
        """How many more instances may start now (None: no local limit)."""
        ...


def worker_command(python: str, request: LaunchRequest) -> list[str]:
    """The command line that runs one attempt (shared by launchers that start processes).

    Same as ``nsbi worker <job-uri> --attempt N``, but through the worker command's own entry
    so a worker neither waits for nor depends on the imports of the other command groups.
    """
    return [
        python,
        "-m",
        "backend.commands.worker",
        request.job_uri,
        "--attempt",
        str(request.attempt),
    ]


def worker_hours(exit_doc: Mapping[str, Any] | None) -> float | None:
    """Hours a worker ran by its own exit record (``started_at`` to ``finished_at``), or None.

    Attempts of launchers that hand work to a batch queue (``batch_queue = True``: Slurm) are
    charged for this time instead of launch-to-end."""
    if not exit_doc:
        return None
    start, end = exit_doc.get("started_at"), exit_doc.get("finished_at")
    if not isinstance(start, int | float) or not isinstance(end, int | float) or end < start:
        return None
    return (float(end) - float(start)) / 3600.0


def sequence_of(ids: Sequence[str] | str) -> list[str]:
    return [ids] if isinstance(ids, str) else list(ids)
