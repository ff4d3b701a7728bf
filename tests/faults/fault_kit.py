"""Helpers for the fault tests: a throw-away PostgreSQL cluster, real controller processes,
waiting, and the audit every fault test ends with (plain functions, not fixtures).

The audit (`audit`) is what "nothing lost" means here, for a campaign of "noop" jobs (each
step writes two metric points, ``loss`` and ``train_loss``, flushes them, then checkpoints):

- the campaign is final: SUCCEEDED, or FAILED with every failed job carrying a reason;
- no attempt of a job ran while another of the same job did: in the database each attempt
  ended before the next was launched, and in the store each attempt's last heartbeat (the
  worker's clock) is older than the next attempt's first;
- metric points lost = 0: every point any worker wrote to the store is in the database, and
  every step a job completed (all steps of a SUCCEEDED job; up to its newest checkpoint for
  one that failed) has its two points in the database.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from nsbi_ctl_testkit import FAST_ENV
from sqlmodel import Session, select

from backend.db.models import Attempt, Campaign, ControllerLease, Job, MetricPoint
from backend.states import CampaignStatus, JobStatus
from backend.stores import layout, open_store
from backend.stores.base import decode_jsonl, get_json, list_segments
from nsbi_testing import worker_env

REPO = Path(__file__).resolve().parents[2]
METRICS_PER_STEP = ("loss", "train_loss")  # what the noop kind writes at every step
FINAL = (CampaignStatus.SUCCEEDED, CampaignStatus.FAILED, CampaignStatus.CANCELLED)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def figures(name: str, **values: Any) -> None:
    """Print the figures of one fault run (the table in docs/reliability.md comes from these;
    run pytest with -s to see them) and append them to $NSBI_FAULT_FIGURES if set."""
    line = json.dumps({"fault": name, **values}, sort_keys=True, default=str)
    print(f"FAULT-FIGURES {line}")
    path = os.environ.get("NSBI_FAULT_FIGURES")
    if path:
        with open(path, "a") as fh:
            fh.write(line + "\n")


def unavailable(why: str) -> None:
    """Skip a fault test whose real part is missing here; fail in CI (which installs faketime
    and has PostgreSQL and root)."""
    from nsbi_testing import unavailable as skip_or_fail

    skip_or_fail(f"fault test: {why}")


# ----------------------------------------------------------------------------- PostgreSQL


def postgres_binaries() -> Path | str:
    """The newest PostgreSQL server bin folder, or why the cluster cannot be made here."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: p.split("/")[-3])
    if not found:
        return "PostgreSQL server binaries (/usr/lib/postgresql/*/bin) are not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a 'postgres' user to run initdb as"
    return Path(found[-1]).parent


class PgCluster:
    """A PostgreSQL cluster of one test: its own data folder and loopback port."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        # not under pytest's tmp_path (mode 0700 for root): the postgres user must reach it
        self.dir = Path(tempfile.mkdtemp(prefix="nsbi-pg-fault-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{tool} {args}: {out.stdout}\n{out.stderr}"

    def _ctl(self, action: str) -> None:
        opts = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w", "-t", "60",
            "-m", "fast", "-o", opts, action,
        )  # fmt: skip

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self._ctl("start")

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        self._ctl("stop")

    def restart(self) -> None:
        self._ctl("restart")

    def close(self) -> None:
        with suppress(Exception):
            if (self.data / "postmaster.pid").exists():
                self._ctl("stop")
        shutil.rmtree(self.dir, ignore_errors=True)


# ----------------------------------------------------------------------------- processes


def controller_env(home: Path, db_url: str, store_uri: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        **FAST_ENV,
        **worker_env(),
        "NSBI_HOME": str(home),
        "DATABASE_URL": db_url,
        "NSBI_STORE": store_uri,
        "NSBI_LOCAL_MAX_CONCURRENT": "2",
        **extra,
    }


def start_controller(
    home: Path,
    db_url: str,
    store_uri: str,
    *,
    heartbeat_timeout_s: float = 60.0,
    wrapper: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """`nsbi controller` as users run it (its own NSBI_HOME, the leader lease), logging to
    ``<home>/controller.log``."""
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / "controller.log", "ab")  # noqa: SIM115 - the child keeps it open
    cmd = [
        *wrapper,
        sys.executable,
        "-m",
        "backend.commands.controller",
        "--interval",
        "0.2",
        "--heartbeat-timeout",
        str(heartbeat_timeout_s),
    ]
    proc = subprocess.Popen(
        cmd,
        env=controller_env(home, db_url, store_uri, **(env or {})),
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return proc


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def kill_workers(home: Path) -> None:
    """Kill what is left of the workers a controller with this home launched."""
    from backend.launchers.local import LocalLauncher

    folder = home / "launchers" / "local"
    if not folder.is_dir():
        return
    launcher = LocalLauncher(folder, gpus=[])
    for st in launcher.list_instances():
        if st.state.is_alive():
            with suppress(Exception):
                launcher.kill(st.instance_id)


def wait_for(
    what: str,
    cond: Callable[[], Any],
    timeout: float,
    procs: Sequence[subprocess.Popen] = (),
    every: float = 0.1,
) -> Any:
    """Poll ``cond`` until it returns something true; database errors count as "not yet"
    (the tests poll through the very faults they inject)."""
    t0 = time.monotonic()
    while True:
        try:
            got = cond()
        except sa.exc.DBAPIError:
            got = None
        if got:
            return got
        for p in procs:
            assert p.poll() is None, f"a controller exited (rc {p.returncode}) waiting for {what}"
        assert time.monotonic() - t0 < timeout, f"timed out after {timeout} s waiting for {what}"
        time.sleep(every)


# ----------------------------------------------------------------------------- reads


def campaign_final(engine, cid: int) -> bool:
    with Session(engine) as s:
        return s.get(Campaign, cid).status in FINAL


def metric_count(engine) -> int:
    with Session(engine) as s:
        return int(s.exec(select(sa.func.count()).select_from(MetricPoint)).one())


def job_points(engine, job_name: str, attempt_no: int | None = None) -> int:
    """Metric points of one job in the database (of one attempt if given)."""
    q = (
        select(sa.func.count())
        .select_from(MetricPoint)
        .join(Job, Job.id == MetricPoint.job_id)
        .where(Job.name == job_name)
    )
    if attempt_no is not None:
        q = q.where(MetricPoint.attempt_no == attempt_no)
    with Session(engine) as s:
        return int(s.exec(q).one())


def attempt_row(engine, job_name: str, attempt_no: int) -> Attempt | None:
    with Session(engine) as s:
        return s.exec(
            select(Attempt)
            .join(Job, Job.id == Attempt.job_id)
            .where(Job.name == job_name, Attempt.attempt_no == attempt_no)
        ).first()


def lease_row(engine) -> tuple[str | None, int] | None:
    with Session(engine) as s:
        row = s.get(ControllerLease, "controller")
        return None if row is None else (row.holder, row.token)


def log_count(home: Path, text: str) -> int:
    try:
        return (home / "controller.log").read_text(errors="replace").count(text)
    except FileNotFoundError:
        return 0


# ----------------------------------------------------------------------------- the audit


def _heartbeat_times(js, attempt_no: int) -> list[float]:
    return [
        float(get_json(js, key)["t"])
        for _, key in list_segments(js, layout.heartbeat_prefix(attempt_no))
    ]


def _stored_points(js, attempt_no: int) -> set[tuple[str, int, int, int]]:
    out = set()
    for _, key in list_segments(js, layout.metrics_prefix(attempt_no)):
        for r in decode_jsonl(js.get_bytes(key), where=key):
            out.add((r["name"], int(r["member"]), int(r["step"]), attempt_no))
    return out


def audit(engine, cid: int, steps: dict[str, int]) -> dict[str, Any]:
    """Check the campaign's end (see the module docstring) and return its figures:
    status, per-job attempts, points expected / in the database / lost."""
    with Session(engine) as s:
        campaign = s.get(Campaign, cid)
        assert campaign is not None and campaign.status in FINAL, campaign
        jobs = list(s.exec(select(Job).where(Job.campaign_id == cid).order_by(Job.id)))
        attempts = {
            j.name: list(
                s.exec(select(Attempt).where(Attempt.job_id == j.id).order_by(Attempt.attempt_no))
            )
            for j in jobs
        }
        db_points = {
            j.name: {
                (m.name, m.member, m.step, m.attempt_no)
                for m in s.exec(select(MetricPoint).where(MetricPoint.job_id == j.id))
            }
            for j in jobs
        }
        status = campaign.status
    assert status in (CampaignStatus.SUCCEEDED, CampaignStatus.FAILED), status
    expected = found = stored_missing = 0
    lost: dict[str, list] = {}
    for job in jobs:
        tries = attempts[job.name]
        if job.status == JobStatus.FAILED:
            assert job.status_reason, f"job {job.name} FAILED without a reason"
            assert all(a.failure_reason for a in tries if a.status == JobStatus.FAILED)
        # no two attempts of a job at once: the database's record ...
        for first, second in zip(tries, tries[1:]):
            assert first.ended_at is not None and second.launched_at is not None
            assert first.ended_at <= second.launched_at, (
                f"job {job.name}: attempts {first.attempt_no} and {second.attempt_no} overlap"
            )
        if not job.uri:
            assert not tries, job  # never launched (e.g. cancelled: its dependency failed)
            continue
        js = open_store(job.uri)
        # ... and the workers' own heartbeats
        spans = [(a.attempt_no, _heartbeat_times(js, a.attempt_no)) for a in tries]
        spans = [(n, ts) for n, ts in spans if ts]
        for (n1, t1), (n2, t2) in zip(spans, spans[1:]):
            assert max(t1) < min(t2), f"job {job.name}: attempts {n1} and {n2} heartbeat at once"
        # every stored point is in the database
        stored = set().union(*(_stored_points(js, a.attempt_no) for a in tries)) if tries else set()
        missing = stored - db_points[job.name]
        stored_missing += len(missing)
        # every completed step has its points
        if job.status == JobStatus.SUCCEEDED:
            done = steps[job.name]
        else:
            ckpts = [
                st
                for a in tries
                for st, _ in list_segments(js, layout.checkpoints_prefix(a.attempt_no))
            ]
            done = max(ckpts, default=0)
        want = {
            (name, -1 if name == "loss" else 0, step)
            for name in METRICS_PER_STEP
            for step in range(1, done + 1)
        }
        have = {(n, m, st) for n, m, st, _ in db_points[job.name]}
        expected += len(want)
        found += len(want & have)
        gone = sorted(want - have) + sorted(missing)
        if gone:
            lost[job.name] = gone[:10]
    assert stored_missing == 0 and not lost, f"metric points lost: {lost}"
    return {
        "status": str(status),
        "jobs": {j.name: str(j.status) for j in jobs},
        "attempts": {n: len(a) for n, a in attempts.items()},
        "reasons": {j.name: j.status_reason for j in jobs if j.status == JobStatus.FAILED},
        "points_expected": expected,
        "points_in_db": found,
        "points_lost": expected - found + stored_missing,
    }
