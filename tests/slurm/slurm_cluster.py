"""A real single-node Slurm for the tests: munged, slurmctld and slurmd on loopback.

`start_cluster(folder)` writes slurm.conf into `folder` (free, non-default ports; state, spool,
pid and log files inside it), starts a munged of its own (its socket in a folder of its own,
named by slurm.conf's ``AuthInfo``), then the Slurm daemons as root without systemd, and waits
until `sinfo` shows the node idle; `SlurmCluster.stop()` ends only the processes it started.
Nothing is shared with the machine's munged or another cluster, so test processes running in
parallel (pytest-xdist) may each start one.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

# slurmctld checks time limits every PERIODIC_TIMEOUT (30 s, compiled in) and sends a job's
# --signal warning at the first check where end_time - now <= warning time + 30 s; it logs
# "send_job_warn_signal: warning signal 15 to JobId=<array>_<task>(<id>)" at debug level
TIME_LIMIT_CHECK_S = 30
_WARN_LINE = re.compile(r"^\[([0-9T:.-]+)\].*warning signal (\d+) to JobId=(\d+_\d+)\b")

BINARIES = ("slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo", "munged")
MUNGE_SOCKET = "munge.socket"  # inside the cluster's munge_dir


def missing_binaries() -> list[str]:
    found = {b: shutil.which(b) or _sbin(b) for b in BINARIES}
    return [b for b, path in found.items() if not path]


def _sbin(name: str) -> str | None:
    for folder in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        path = Path(folder) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def _exe(name: str) -> str:
    path = shutil.which(name) or _sbin(name)
    if path is None:
        raise FileNotFoundError(name)
    return path


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


@dataclass
class SlurmCluster:
    folder: Path
    conf: Path
    node: str
    cpus: int
    env: dict[str, str]
    munge_dir: Path
    pids: list[int] = field(default_factory=list)

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        proc = subprocess.run(
            list(args), env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: rc {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def node_state(self) -> str:
        return self.run("sinfo", "-h", "-N", "-o", "%T", check=False).strip()

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` of one job (or array task) as {field: value}."""
        text = self.run("scontrol", "-o", "show", "job", job_id)
        return dict(f.split("=", 1) for f in text.split() if "=" in f)

    def warning_signals(self) -> dict[str, tuple[float, int]]:
        """{job id: (time, signal)} of the warnings slurmctld's time-limit check sent
        (``--signal``: ``send_job_warn_signal``, logged at ``SlurmctldDebug=debug``)."""
        out: dict[str, tuple[float, int]] = {}
        for line in (self.folder / "slurmctld.log").read_text(errors="replace").splitlines():
            m = _WARN_LINE.match(line)
            if m:
                out.setdefault(m.group(3), (slurm_time(m.group(1)), int(m.group(2))))
        return out

    def stop(self) -> None:
        for pid in reversed(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 15
        for pid in reversed(self.pids):
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.2)
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.pids.clear()
        shutil.rmtree(self.munge_dir, ignore_errors=True)


def slurm_time(text: str) -> float:
    """Epoch seconds of a Slurm timestamp (``2026-12-06T20:21:54[.346]``, local time)."""
    return datetime.fromisoformat(text).timestamp()


def freeze(pid: int) -> bool:
    """SIGSTOP a worker: it stays mid-job until SIGCONT (which slurmctld sends right before a
    time limit's warning signal). False if it has ended already."""
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return False
    return True


def thaw(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def is_stopped(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] == "T"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours counts as ended
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _pid_from(path: Path, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            text = path.read_text().strip()
            if text:
                return int(text)
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"no pid file {path} within {timeout} s")


def munge_folder() -> Path:
    """A folder for a munged of one cluster's own, outside pytest's root-only tmp folders:
    munged runs as the munge user and wants every folder above its socket searchable."""
    folder = Path(tempfile.mkdtemp(prefix="nsbi-munge-"))
    folder.chmod(0o755)
    shutil.chown(folder, "munge", "munge")
    return folder


def _start_munged(cluster: SlurmCluster) -> None:
    """munged as the munge user with the machine's key (/etc/munge/munge.key), its socket, pid,
    seed and log in ``cluster.munge_dir``."""
    folder = cluster.munge_dir
    socket_path = folder / MUNGE_SOCKET
    argv = [
        _exe("munged"),
        f"--socket={socket_path}",
        f"--pid-file={folder / 'munged.pid'}",
        f"--seed-file={folder / 'munged.seed'}",
        f"--log-file={folder / 'munged.log'}",
    ]
    subprocess.run(["su", "-s", "/bin/sh", "munge", "-c", shlex.join(argv)], check=True, timeout=30)
    cluster.pids.append(_pid_from(folder / "munged.pid"))
    probe = ["munge", "-n", f"--socket={socket_path}"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if subprocess.run(probe, capture_output=True, timeout=10).returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"munged did not answer on {socket_path} within 15 s")


def write_conf(folder: Path, node: str, cpus: int, ports: list[int], munge_socket: Path) -> Path:
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    conf = folder / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=nsbitest",
                f"AuthInfo=socket={munge_socket}",  # auth/munge and cred/munge alike
                f"SlurmctldHost={node}(127.0.0.1)",
                "SlurmUser=root",
                f"SlurmctldPort={ports[0]}",
                f"SlurmdPort={ports[1]}",
                f"StateSaveLocation={folder / 'state'}",
                f"SlurmdSpoolDir={folder / 'spool'}",
                f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
                f"SlurmdPidFile={folder / 'slurmd.pid'}",
                f"SlurmctldLogFile={folder / 'slurmctld.log'}",
                f"SlurmdLogFile={folder / 'slurmd.log'}",
                "SlurmctldDebug=debug",  # logs the time limit's warnings (the tests read them)
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_CPU",
                "SlurmdParameters=config_overrides",
                "AccountingStorageType=accounting_storage/none",
                "JobAcctGatherType=jobacct_gather/none",
                "JobCompType=jobcomp/none",
                "MpiDefault=none",
                "ReturnToService=2",
                "MinJobAge=600",
                "KillWait=20",
                "InactiveLimit=0",
                # array jobs start only when the scheduler runs: right after a submission
                # (batch_sched_delay, default 3 s) and at least every second
                "SchedulerParameters=sched_interval=1,batch_sched_delay=0",
                f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=8000 State=UNKNOWN",
                f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )
    return conf


def start_cluster(folder: Path, cpus: int = 4, timeout: float = 60) -> SlurmCluster:
    node = socket.gethostname()
    munge_dir = munge_folder()
    conf = write_conf(folder, node, cpus, free_ports(2), munge_dir / MUNGE_SOCKET)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cluster = SlurmCluster(folder, conf, node, cpus, env, munge_dir)
    try:
        _start_munged(cluster)
        subprocess.run([_exe("slurmctld"), "-f", str(conf)], env=env, check=True, timeout=30)
        cluster.pids.append(_pid_from(folder / "slurmctld.pid"))
        subprocess.run([_exe("slurmd"), "-f", str(conf)], env=env, check=True, timeout=30)
        cluster.pids.append(_pid_from(folder / "slurmd.pid"))
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = cluster.node_state()
            if state == "idle":
                return cluster
            time.sleep(0.5)
        logs = "".join(
            (folder / f).read_text()[-2000:]
            for f in ("slurmctld.log", "slurmd.log")
            if (folder / f).exists()
        )
        raise RuntimeError(f"node not idle within {timeout} s (sinfo: {state!r})\n{logs}")
    except BaseException:
        cluster.stop()
        raise
