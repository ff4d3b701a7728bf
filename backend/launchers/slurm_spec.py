"""What a Slurm job array of workers looks like: the campaign's ``backend.slurm`` options, the
batch script, Slurm's time format, and Slurm's job states mapped onto :class:`InstanceState`.

Pure functions (no subprocess), so they are easy to test and to read; the launcher that runs
``sbatch``/``squeue``/``scontrol``/``scancel`` is :mod:`backend.launchers.slurm`.

The batch script runs one attempt per array task: every per-task value (instance id, job URI,
attempt number) is a shell-quoted element of a bash array indexed by ``SLURM_ARRAY_TASK_ID``,
and the script ``exec``\\ s the worker, so the worker *is* the batch shell and receives the
``--signal=B:TERM@<seconds>`` warning itself (the worker's SIGTERM handler writes a checkpoint
and exits with ``EXIT_PREEMPTED``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backend.launchers.base import InstanceState, LauncherError, LaunchRequest, worker_command

# ----------------------------------------------------------------------------- time limits

_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def slurm_time_seconds(text: str) -> int:
    """Seconds of a Slurm time limit: "minutes", "minutes:seconds", "hours:minutes:seconds",
    "days-hours", "days-hours:minutes" or "days-hours:minutes:seconds" (as ``sbatch --time``).
    Raises ValueError for anything else, and for 0 (Slurm reads it as "no limit")."""
    m = _TIME.match(str(text).strip())
    if m is None:
        raise ValueError(
            f"{text!r} is not a Slurm time (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS)"
        )
    days, a, b, c = m.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        seconds = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:  # HH:MM:SS
        seconds = int(a) * 3600 + int(b) * 60 + int(c)
    elif b is not None:  # MM:SS
        seconds = int(a) * 60 + int(b)
    else:  # minutes
        seconds = int(a) * 60
    if seconds <= 0:
        raise ValueError(f"{text!r}: a time limit must be positive (0 means no limit to Slurm)")
    return seconds


def slurm_time_text(seconds: float) -> str:
    """``--time`` text for a limit in seconds, rounded up to whole minutes (Slurm's unit)."""
    minutes = max(1, -(-int(seconds) // 60))
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    return f"{days}-{hours:02d}:{mins:02d}:00" if days else f"{hours:02d}:{mins:02d}:00"


# ----------------------------------------------------------------------------- options

# sbatch options the launcher sets itself: an `extra_sbatch` line may not set them
RESERVED_OPTIONS = (
    "--array",
    "--job-name",
    "--output",
    "--error",
    "--signal",
    "--parsable",
    "--export",
    "--requeue",
    "--no-requeue",
    "--wrap",
    "--chdir",
    "-a",
    "-J",
    "-o",
    "-e",
    "-D",
)
_WORD = re.compile(r"^[!-~]+$")  # printable ASCII, no space: partitions, accounts, features
_LINE = re.compile(r"^-[ -~]*$")  # one sbatch option: printable ASCII, no control characters
_MEM = re.compile(r"^\d+[KMGT]?$")


def extra_line_problem(line: str) -> str | None:
    """None if ``line`` may be an extra ``#SBATCH`` line, else what is wrong with it."""
    if not isinstance(line, str) or not _LINE.match(line):
        return (
            f"{line!r} is not one sbatch option (it must start with '-' and hold printable "
            "characters only, e.g. '--exclusive' or '--mail-type=END')"
        )
    name = line.split("=", 1)[0].split(" ", 1)[0]
    if name in RESERVED_OPTIONS:
        return f"{line!r}: {name} is set by the slurm launcher itself"
    return None


@dataclass(frozen=True)
class SlurmOptions:
    """A campaign's ``backend.slurm`` table (see docs/hpc.md for each key)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_limit: str | None = None  # Slurm time text; None: the job's own limit or the cluster's
    constraint: str | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    gpu_gres: str = "gpu"  # the GRES name GPUs are asked for by (--gres=<name>[:type]:N)
    gpu_type: str | None = None  # GRES type, e.g. "a100"
    signal_before_s: int = 300  # SIGTERM this long before the time limit (checkpoint and exit)
    extra_sbatch: tuple[str, ...] = ()
    gpu_hour_usd: float = 0.0  # price of one GPU-hour of worker time
    cpu_hour_usd: float = 0.0  # price of one CPU-hour (cpus_per_task) of worker time

    @classmethod
    def from_config(cls, block: Mapping[str, Any] | None) -> SlurmOptions:
        """Options from a (validated) ``backend.slurm`` table; None or {} gives the defaults."""
        block = dict(block or {})
        unknown = sorted(set(block) - set(cls.__dataclass_fields__))
        if unknown:
            raise LauncherError(f"slurm launcher: unknown backend.slurm keys {unknown}")
        if "extra_sbatch" in block:
            block["extra_sbatch"] = tuple(block["extra_sbatch"] or ())
        opts = cls(**block)
        problem = opts.problem()
        if problem:
            raise LauncherError(f"slurm launcher: backend.slurm.{problem}")
        return opts

    def problem(self) -> str | None:
        """None if the options are usable, else "key: what is wrong"."""
        for key in ("partition", "account", "qos", "constraint", "gpu_gres", "gpu_type"):
            value = getattr(self, key)
            if value is not None and not _WORD.match(str(value)):
                return f"{key}: {value!r} must be one word of printable characters"
        if self.mem is not None and not _MEM.match(self.mem):
            return f"mem: {self.mem!r} is not a Slurm memory size (e.g. 16G, 4000M)"
        if self.cpus_per_task is not None and self.cpus_per_task < 1:
            return f"cpus_per_task: {self.cpus_per_task} must be >= 1"
        if self.signal_before_s < 0:
            return f"signal_before_s: {self.signal_before_s} must be >= 0"
        if self.time_limit is not None:
            try:
                limit = slurm_time_seconds(self.time_limit)
            except ValueError as exc:
                return f"time_limit: {exc}"
            if self.signal_before_s >= limit:
                return (
                    f"signal_before_s: {self.signal_before_s} s is not before the time limit "
                    f"{self.time_limit!r} ({limit} s)"
                )
        for line in self.extra_sbatch:
            why = extra_line_problem(line)
            if why:
                return f"extra_sbatch: {why}"
        for key in ("gpu_hour_usd", "cpu_hour_usd"):
            if getattr(self, key) < 0:
                return f"{key}: must be >= 0"
        return None

    def price_per_hour(self, gpus: int) -> float:
        """What one hour of a task with ``gpus`` GPUs costs at the configured rates."""
        return self.gpu_hour_usd * max(0, int(gpus)) + self.cpu_hour_usd * (self.cpus_per_task or 1)


def options_of(request: LaunchRequest) -> SlurmOptions:
    return SlurmOptions.from_config(request.options)


def time_limit_of(request: LaunchRequest, opts: SlurmOptions) -> int | None:
    """The task's time limit in seconds: the campaign's ``time_limit``, else the job's own."""
    if opts.time_limit is not None:
        return slurm_time_seconds(opts.time_limit)
    if request.time_limit_s:
        return max(60, int(request.time_limit_s))
    return None


def sbatch_options(request: LaunchRequest) -> tuple[str, ...]:
    """The ``#SBATCH`` options of one task, apart from the array, its name and log files.
    Requests with equal options share one job array."""
    opts = options_of(request)
    out: list[str] = ["--no-requeue"]
    for key, flag in (
        ("partition", "--partition"),
        ("account", "--account"),
        ("qos", "--qos"),
        ("constraint", "--constraint"),
        ("mem", "--mem"),
    ):
        value = getattr(opts, key)
        if value is not None:
            out.append(f"{flag}={value}")
    out.append(f"--cpus-per-task={opts.cpus_per_task or 1}")
    if request.gpus > 0:
        kind = f"{opts.gpu_type}:" if opts.gpu_type else ""
        out.append(f"--gres={opts.gpu_gres}:{kind}{int(request.gpus)}")
    limit = time_limit_of(request, opts)
    if limit is not None:
        out.append(f"--time={slurm_time_text(limit)}")
        before = min(opts.signal_before_s, max(0, limit - 30))
        if before > 0:
            out.append(f"--signal=B:TERM@{before}")
    out.extend(opts.extra_sbatch)
    return tuple(out)


# ----------------------------------------------------------------------------- the script


@dataclass(frozen=True)
class ArrayTask:
    """One array task: which attempt it runs."""

    instance_id: str
    job_uri: str
    attempt: int
    env: Mapping[str, str] = field(default_factory=dict)


def build_script(
    *,
    name: str,
    options: Sequence[str],
    tasks: Sequence[ArrayTask],
    python: str,
    log_dir: str,
    env: Mapping[str, str],
    cwd: str | None = None,
) -> str:
    """The batch script of one job array (``--array=0-<n-1>``), one attempt per task."""
    if not tasks:
        raise LauncherError("slurm launcher: a job array needs at least one task")
    for line in options:
        if "\n" in line or "\r" in line:
            raise LauncherError(f"slurm launcher: sbatch option {line!r} spans lines")
    header = [
        "#!/bin/bash",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --array=0-{len(tasks) - 1}",
        f"#SBATCH --output={log_dir}/%x-%a.log",
        *(f"#SBATCH {line}" for line in options),
        "# written by nsbi's slurm launcher (backend/launchers/slurm.py): one attempt per task",
        "set -u",
    ]
    body = []
    for key, value in sorted(env.items()):
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise LauncherError(f"slurm launcher: {key!r} is not an environment variable name")
        body.append(f"export {key}={shlex.quote(str(value))}")
    if cwd:
        body.append(f"cd {shlex.quote(cwd)}")

    def array(var: str, values: Sequence[str]) -> str:
        return f"{var}=(" + " ".join(shlex.quote(v) for v in values) + ")"

    body += [
        array("NSBI_IDS", [t.instance_id for t in tasks]),
        array("NSBI_URIS", [t.job_uri for t in tasks]),
        array("NSBI_ATTEMPTS", [str(int(t.attempt)) for t in tasks]),
        "i=${SLURM_ARRAY_TASK_ID:-0}",
        'export NSBI_INSTANCE_ID="${NSBI_IDS[$i]}"',
        # <instance id>.log names this task's output (%x-%a.log) for the dashboard's job view
        f'ln -sfn {shlex.quote(name)}-"$i".log {shlex.quote(log_dir)}/"$NSBI_INSTANCE_ID".log'
        " 2>/dev/null || true",
    ]
    for idx, t in ((i, t) for i, t in enumerate(tasks) if t.env):
        exports = "; ".join(f"export {k}={shlex.quote(str(v))}" for k, v in sorted(t.env.items()))
        body.append(f'if [ "$i" = {idx} ]; then {exports}; fi')
    # exec: the worker becomes the batch shell, so --signal=B:TERM reaches it directly
    cmd = worker_command(python, LaunchRequest("", "", 0, "URI"))[:-3]  # without uri, attempt
    body.append(f"exec {shlex.join(cmd)} " + '"${NSBI_URIS[$i]}" --attempt "${NSBI_ATTEMPTS[$i]}"')
    return "\n".join(header + body) + "\n"


# ----------------------------------------------------------------------------- states

_PENDING_RAW = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESV_DEL_HOLD",
        "SPECIAL_EXIT",
    }
)
_RUNNING_RAW = frozenset(
    {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING", "SUSPENDED", "STOPPED"}
)
_EXITED_RAW = frozenset({"COMPLETED", "FAILED", "OUT_OF_MEMORY", "CANCELLED"})
# ended by the cluster, not by the worker: the attempt resumes from its checkpoint
_PREEMPTED_RAW = frozenset({"TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL"})


def map_state(raw: str) -> InstanceState:
    """Slurm's job state (``squeue %T`` / ``scontrol JobState``) as an :class:`InstanceState`.

    TIMEOUT, PREEMPTED, NODE_FAIL and BOOT_FAIL are PREEMPTED (the cluster ended the attempt,
    which resumes from its checkpoint); COMPLETED, FAILED, OUT_OF_MEMORY and CANCELLED are
    EXITED (the worker's exit.json, read by the controller, says how); DEADLINE and anything
    unknown are GONE.
    """
    state = raw.strip().upper().split(" ")[0].rstrip("+")
    if state in _PENDING_RAW:
        return InstanceState.PENDING
    if state in _RUNNING_RAW:
        return InstanceState.RUNNING
    if state in _EXITED_RAW:
        return InstanceState.EXITED
    if state in _PREEMPTED_RAW:
        return InstanceState.PREEMPTED
    return InstanceState.GONE


@dataclass(frozen=True)
class SlurmJob:
    """One array task as Slurm reports it."""

    job_id: str  # "<array job id>_<task id>"
    state: str
    reason: str = ""
    exit_code: int | None = None


def parse_squeue(text: str) -> dict[str, SlurmJob]:
    """``squeue -h -r --states=all -o '%i|%T|%r'`` output -> job id -> task."""
    out = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 2 and parts[0]:
            out[parts[0]] = SlurmJob(parts[0], parts[1], parts[2] if len(parts) > 2 else "")
    return out


_FIELD = re.compile(r"(\w+)=(\S*)")


def parse_scontrol(text: str) -> dict[str, SlurmJob]:
    """``scontrol -o show job <id>`` output (one record per line) -> job id -> task."""
    out = {}
    for line in text.splitlines():
        fields = dict(_FIELD.findall(line))
        if "JobId" not in fields:
            continue
        array_id, task = fields.get("ArrayJobId"), fields.get("ArrayTaskId")
        job_id = f"{array_id}_{task}" if array_id and task and task.isdigit() else fields["JobId"]
        code = fields.get("ExitCode", "")
        exit_code = int(code.split(":")[0]) if code.split(":")[0].isdigit() else None
        out[job_id] = SlurmJob(
            job_id, fields.get("JobState", ""), fields.get("Reason", ""), exit_code
        )
    return out
