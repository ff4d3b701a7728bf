"""The demo campaign through the slurm launcher on a real Slurm, end to end.

The controller submits the two trainings as one job array. Once one training has written a
checkpoint, its worker is frozen mid-training (SIGSTOP, so the short demo training is still
running when Slurm acts) and its time limit is cut (``scontrol update TimeLimit=``) so that
slurmctld's own time-limit check sends the ``--signal=B:TERM@<signal_before_s>`` warning:
SIGCONT, then SIGTERM to the batch shell, which is the worker. The worker checkpoints and
exits, the attempt ends PREEMPTED and the next attempt resumes from the checkpoint. The
controller is restarted meanwhile; the fit runs after the trainings; the campaign SUCCEEDS and
each attempt is charged for its worker's running time at the configured rate."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
from slurm_cluster import TIME_LIMIT_CHECK_S, freeze, is_stopped, slurm_time, thaw
from sqlmodel import Session, select

from backend.stores import layout, open_store
from backend.stores.base import get_json, list_segments

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

MAX_STEPS = 2000
# The cut limit leaves 60-120 s, so with 90 s the warning comes at slurmctld's very next
# time-limit check (end_time - now <= signal_before_s + 30), within 30 s of the cut.
SIGNAL_BEFORE_S = 90


def slurm_demo_config() -> dict:
    """The demo campaign shrunk like the thin path (tests/e2e), run by the slurm launcher."""
    from backend.campaigns import DEMO_CONFIG

    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["name"] = "slurm-demo"
    cfg["systematics"] = []
    for proc in cfg["processes"].values():
        proc["demo"]["n"] = 6000
    cfg["training"].update(ensemble_size=2, members_per_job=2)
    cfg["training"]["params"].update(
        hidden_layers=2,
        width=16,
        max_steps=MAX_STEPS,
        eval_every=100,
        patience=100_000,  # no early stop: the training is interrupted mid-way
        batch_size=512,
        checkpoint_every=100,
    )
    cfg["fit"]["nuisances"] = ["lumi"]
    for stage in ("impacts", "scan", "toys"):
        cfg[stage]["enabled"] = False
    cfg["backend"].update(launcher="slurm", max_concurrency=2)
    cfg["backend"]["slurm"] = {
        "partition": "debug",
        "time_limit": "15",
        "signal_before_s": SIGNAL_BEFORE_S,
        "cpus_per_task": 1,
        "cpu_hour_usd": 1.0,
    }
    return cfg


@pytest.fixture
def control_plane(slurm_cluster, tmp_path, monkeypatch):
    from backend.db import dispose_engines, get_engine, init_db

    url = f"sqlite:///{tmp_path / 'nsbi.db'}"
    monkeypatch.setenv("NSBI_HOME", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("NSBI_STORE", f"file://{tmp_path / 'store'}")
    (tmp_path / "store").mkdir()
    engine = get_engine(url)
    init_db(engine)
    yield engine, tmp_path
    dispose_engines()


def freeze_after_first_checkpoint(job_store, timeout: float = 120) -> tuple[int, int]:
    """Wait for attempt 1's first checkpoint, then SIGSTOP its worker: (pid, newest step)."""
    deadline = time.monotonic() + timeout
    while not list_segments(job_store, layout.checkpoints_prefix(1)):
        assert time.monotonic() < deadline, "the training wrote no checkpoint"
        time.sleep(0.05)
    beats = list_segments(job_store, layout.heartbeat_prefix(1))
    pid = int(get_json(job_store, beats[-1][1])["pid"])
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    assert b"backend.commands.worker" in cmdline, cmdline  # the batch shell exec'd the worker
    assert freeze(pid), "the training ended before it was frozen"
    step = list_segments(job_store, layout.checkpoints_prefix(1))[-1][0]
    return pid, step


def cut_time_limit(cluster, job_id: str) -> dict:
    """Shorten a running task's limit to its elapsed whole minutes plus two: 60-120 s
    are left, so slurmctld's next time-limit check sends the warning signal."""
    before = cluster.job(job_id)
    assert before["JobState"] == "RUNNING", before
    started = slurm_time(before["StartTime"])
    now = time.time()
    minutes = int((now - started) // 60) + 2
    cluster.run("scontrol", "update", f"JobId={job_id}", f"TimeLimit={minutes}")
    after = cluster.job(job_id)
    assert after["TimeLimit"] == f"00:{minutes:02d}:00", after
    end = slurm_time(after["EndTime"])
    assert end == pytest.approx(started + 60 * minutes, abs=1), after
    assert end - now <= SIGNAL_BEFORE_S + TIME_LIMIT_CHECK_S, "the next check would not warn"
    return {"set_at": now, "started": started, "end": end, "limit_min": minutes}


def test_demo_campaign_succeeds_through_slurm_with_a_resumed_job(control_plane, slurm_cluster):
    from backend import service
    from backend.controller import Controller, ControllerConfig
    from backend.db.models import Attempt, Job, MetricPoint
    from backend.launchers.base import worker_hours
    from backend.launchers.slurm import SlurmLauncher

    engine, home = control_plane
    store_uri = f"file://{home / 'store'}"
    t0 = time.time()
    campaign_id = service.create_campaign(slurm_demo_config(), engine=engine)
    service.request_launch(campaign_id, engine=engine)

    def start_controller() -> tuple[SlurmLauncher, Controller]:
        launcher = SlurmLauncher(
            home / "launchers" / "slurm",
            cwd=REPO,
            extra_env={"PYTHONPATH": str(REPO)},
            poll_ttl_s=0.5,
        )
        config = ControllerConfig(tick_interval_s=0.5, heartbeat_timeout_s=120)
        return launcher, Controller(engine, store_uri, {"slurm": launcher}, config)

    launcher, controller = start_controller()
    arrays: dict[str, str] = {}  # instance id -> Slurm job id, as first seen
    cut: dict = {}  # the interrupted training: job, Slurm id, pid, limit, steps, times
    restarted = False
    status = None
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            controller.tick()
            with Session(engine) as s:
                running = s.exec(
                    select(Job, Attempt).where(
                        Job.campaign_id == campaign_id,
                        Attempt.job_id == Job.id,
                        Attempt.status == "RUNNING",
                    )
                ).all()
            for job, attempt in running:
                if attempt.instance_id and attempt.instance_id not in arrays:
                    arrays[attempt.instance_id] = launcher.job_id(attempt.instance_id) or "?"
                if not cut and job.kind == "train" and attempt.attempt_no == 1:
                    slurm_id = arrays[attempt.instance_id]
                    pid, step = freeze_after_first_checkpoint(open_store(job.uri))
                    cut = {"job": job.id, "slurm_id": slurm_id, "pid": pid, "step": step}
                    cut.update(cut_time_limit(slurm_cluster, slurm_id))
                    # and the controller dies mid-campaign: a new one (and a new launcher
                    # object over the same records) carries on
                    launcher, controller = start_controller()
                    restarted = True
            summary = {c.id: c for c in service.list_campaigns(engine=engine)}[campaign_id]
            status = summary.status
            if status in ("SUCCEEDED", "FAILED", "CANCELLED"):
                break
            if cut and "warned" not in cut:
                warned = slurm_cluster.warning_signals().get(cut["slurm_id"])
                if warned is not None:
                    cut["warned"] = warned
                    time.sleep(1.0)
                    cut["stopped_after_warning"] = is_stopped(cut["pid"])
                elif time.time() > cut["set_at"] + TIME_LIMIT_CHECK_S + 15:
                    break  # no warning: the asserts below say so
            time.sleep(0.2)
    finally:
        if cut:
            thaw(cut["pid"])  # never leave a stopped worker behind
    controller.tick()
    t_end = time.time()

    jobs, total = service.list_jobs(campaign_id=campaign_id, engine=engine)
    states = {j.name: (j.status, j.status_reason) for j in jobs}
    assert cut and restarted, ("no training reached a checkpoint", states)
    assert "warned" in cut, ("slurmctld sent no time-limit warning", cut, states)
    assert status == "SUCCEEDED", (states, arrays, cut)
    assert total == 3 and {s for s, _ in states.values()} == {"SUCCEEDED"}

    with Session(engine) as s:
        attempts = s.exec(select(Attempt).join(Job).where(Job.campaign_id == campaign_id)).all()
        jobs_by_id = {j.id: j for j in s.exec(select(Job)).all()}
        points = s.exec(
            select(MetricPoint).where(
                MetricPoint.job_id == cut["job"], MetricPoint.name == "train_loss"
            )
        ).all()
    assert {a.launcher for a in attempts} == {"slurm"}
    # each attempt's output is readable where the dashboard shows it (Monitor, job history)
    from backend.listings import job_attempts

    logs = job_attempts(cut["job"], engine=engine)
    assert [a["attempt_no"] for a in logs] == [1, 2], logs
    for a in logs:
        assert a["output"] is not None, a["output_note"]
    assert "SIGTERM" in logs[0]["output"] or "preempt" in logs[0]["output"].lower(), logs[0]
    train_first = [
        arrays[a.instance_id]
        for a in attempts
        if jobs_by_id[a.job_id].kind == "train" and a.attempt_no == 1
    ]
    assert len(train_first) == 2 and len({j.split("_")[0] for j in train_first}) == 1, (
        "the two trainings were not submitted as one job array",
        train_first,
    )

    # the time limit's warning: SIGTERM from slurmctld's next time-limit check after the cut,
    # well before the limit itself; its SIGCONT woke the frozen worker
    warned_at, signum = cut["warned"]
    assert signum == 15, cut  # --signal=B:TERM
    assert cut["set_at"] - 1 <= warned_at <= cut["set_at"] + TIME_LIMIT_CHECK_S + 5, cut
    assert cut["end"] - warned_at >= TIME_LIMIT_CHECK_S, cut  # never killed by the limit
    assert not cut["stopped_after_warning"], ("slurmctld sent no SIGCONT before SIGTERM", cut)

    # the worker checkpointed and exited; the attempt ended PREEMPTED, not failed
    mine = sorted((a for a in attempts if a.job_id == cut["job"]), key=lambda a: a.attempt_no)
    reasons = [(a.status, a.exit_code, a.failure_reason) for a in mine]
    assert [a.status for a in mine] == ["PREEMPTED", "SUCCEEDED"], reasons
    assert mine[0].exit_code == 75 and "SIGTERM" in (mine[0].failure_reason or ""), reasons
    job_store = open_store(jobs_by_id[cut["job"]].uri)
    first_exit = get_json(job_store, layout.exit_key(1))
    assert first_exit["status"] == "preempted" and first_exit["exit_code"] == 75, first_exit
    assert "SIGTERM" in first_exit["error"], first_exit
    assert warned_at - 1 <= first_exit["finished_at"] < cut["end"], (first_exit, cut)

    # the next attempt resumed from that checkpoint: the step count continues
    stopped_at = max(step for step, _ in list_segments(job_store, layout.checkpoints_prefix(1)))
    result = get_json(job_store, layout.result_key(2))["summary"]
    assert 0 < cut["step"] <= stopped_at < MAX_STEPS, (cut, stopped_at)
    assert result["resumed_from"] == stopped_at, (result, stopped_at)
    assert result["steps_total"] == MAX_STEPS
    assert result["steps_run"] == MAX_STEPS - stopped_at
    by_attempt = {n: sorted({p.step for p in points if p.attempt_no == n}) for n in (1, 2)}
    assert by_attempt[1] and max(by_attempt[1]) <= stopped_at, by_attempt
    assert by_attempt[2][0] > stopped_at and by_attempt[2][-1] == MAX_STEPS, by_attempt
    second_exit = get_json(job_store, layout.exit_key(2))

    for a in attempts:  # charged for the worker's own time at cpu_hour_usd = 1 (1 CPU)
        assert a.price_per_hour == pytest.approx(1.0)
        exit_doc = get_json(open_store(jobs_by_id[a.job_id].uri), layout.exit_key(a.attempt_no))
        hours = worker_hours(exit_doc)
        assert hours is not None and a.cost_usd == pytest.approx(hours)
        assert a.gpu_hours == 0.0

    def at(t: float) -> float:
        return round(t - t0, 1)

    print(
        "\ntime-limit timeline (s after launch):",
        f"task {cut['slurm_id']} started {at(cut['started'])};",
        f"frozen at checkpoint step {cut['step']} and limit cut to {cut['limit_min']} min",
        f"{at(cut['set_at'])} (limit ends {at(cut['end'])});",
        f"warning SIGTERM {at(warned_at)}; attempt 1 exited {at(first_exit['finished_at'])}",
        f"at step {stopped_at}; attempt 2 started {at(second_exit['started_at'])},",
        f"first step {by_attempt[2][0]}, ended {at(second_exit['finished_at'])} at step",
        f"{result['steps_total']}; campaign SUCCEEDED {at(t_end)}",
    )
