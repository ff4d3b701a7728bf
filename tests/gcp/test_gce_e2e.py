"""End to end on the `gce` backend: the real controller launches a small campaign through the
GCE launcher against the fake Compute service; each "VM" runs the real startup script, which
runs the real worker against the emulated GCS bucket.

One job is preempted mid-training and must resume from its checkpoint; the first zone has a
stockout on the first insert; one job is cancelled while running; no VM may be left behind.
Uses the fast test job kind ("noop", from ``nsbi_testing.jobkinds``, named to the worker
through the launcher's environment) to stay quick. The second test runs a real tiny
JAX training campaign, preempted after its first checkpoint and resumed on a new VM.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlmodel import Session, select

from backend.controller import Controller, ControllerConfig
from backend.db import create_engine, init_db
from backend.db.models import Attempt, Campaign, Job
from backend.launchers.gce import GceLauncher
from backend.launchers.gce_spec import GceConfig
from backend.states import CampaignStatus, DesiredState, JobStatus
from backend.stores import layout, list_segments
from backend.stores.gcs import GCSStore
from nsbi_testing import JOB_KIND_MODULES
from nsbi_testing.gce_fake import FakeCompute

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ZONES = ("us-central1-a", "us-central1-b")

JOBS = {  # name -> noop params
    "steady": {"steps": 5, "step_s": 0.2},
    "victim": {"steps": 24, "step_s": 0.25, "checkpoint_every": 1},
    "doomed": {"steps": 5000, "step_s": 0.2},
}


def _campaign(engine) -> int:
    with Session(engine, expire_on_commit=False) as s:
        camp = Campaign(
            name="gce e2e",
            config_hash=uuid.uuid4().hex,
            status=CampaignStatus.ACTIVE,
            launcher="gce",
            max_concurrency=3,
        )
        s.add(camp)
        s.flush()
        for name, params in JOBS.items():
            s.add(
                Job(
                    campaign_id=camp.id,
                    name=name,
                    kind="noop",
                    spec={"kind": "noop", "name": name, "params": params},
                    desired_state=DesiredState.RUN,
                    launcher="gce",
                    machine_type="n1-standard-4",
                    gpu_type="nvidia-tesla-t4",
                    gpu_count=1,
                    spot=True,
                    max_retries=0,
                )
            )
        s.commit()
        return camp.id


def _jobs(engine) -> dict[str, Job]:
    with Session(engine, expire_on_commit=False) as s:
        return {j.name: j for j in s.exec(select(Job))}


def _attempts(engine, name: str) -> list[Attempt]:
    with Session(engine, expire_on_commit=False) as s:
        return list(
            s.exec(
                select(Attempt)
                .join(Job, Job.id == Attempt.job_id)
                .where(Job.name == name)
                .order_by(Attempt.attempt_no)
            )
        )


def test_campaign_on_gce_survives_preemption_stockout_and_cancel(gcs_emulator, tmp_path, waiter):
    engine = init_db(create_engine(f"sqlite:///{tmp_path / 'nsbi.db'}"))
    store = GCSStore(f"gs://b/e2e-{uuid.uuid4().hex[:8]}")
    fake = FakeCompute(boot=True, grace_s=3.0, workdir=tmp_path, boot_env={"PYTHONPATH": str(REPO)})
    fake.start()
    fake.fail_zone(ZONES[0], "ZONE_RESOURCE_POOL_EXHAUSTED", times=1)
    launcher = GceLauncher(
        GceConfig(
            project=fake.project,
            zones=ZONES,
            endpoint=fake.endpoint,
            url_scheme="http",
            runtime="python",
            python=sys.executable,
            list_ttl_s=0.2,
            service_account=f"nsbi-worker@{fake.project}.iam.gserviceaccount.com",
            env={
                "STORAGE_EMULATOR_HOST": gcs_emulator,
                "NSBI_WORKER_INTERVAL_S": "0.2",
                "NSBI_JOB_KIND_MODULES": JOB_KIND_MODULES,
            },
        )
    )
    controller = Controller(
        engine,
        store,
        {"gce": launcher},
        ControllerConfig(tick_interval_s=0.2, heartbeat_timeout_s=60, startup_timeout_s=120),
    )
    _campaign(engine)
    preempted_vm, cancelled = None, False
    try:
        t0 = time.time()
        while time.time() - t0 < 150:
            report = controller.tick()
            assert not report.errors, report.errors
            jobs = _jobs(engine)
            victim = jobs["victim"]
            if preempted_vm is None and victim.status == JobStatus.RUNNING and victim.uri:
                vstore = store.child(victim.uri[len(store.uri) + 1 :])
                if (
                    max(
                        (step for step, _ in list_segments(vstore, layout.checkpoints_prefix(1))),
                        default=0,
                    )
                    >= 3
                ):
                    preempted_vm = _attempts(engine, "victim")[0].instance_id
                    fake.preempt(preempted_vm)
            doomed = jobs["doomed"]
            if (
                not cancelled
                and doomed.status == JobStatus.RUNNING
                and doomed.last_heartbeat is not None
            ):
                with Session(engine) as s:
                    row = s.get(Job, doomed.id)
                    row.cancel_requested = True
                    s.add(row)
                    s.commit()
                cancelled = True
            if all(JobStatus(j.status).is_terminal() for j in jobs.values()):
                break
            time.sleep(0.2)
        states = {n: j.status for n, j in _jobs(engine).items()}
        logs = {vm.name: fake.log_of(vm.name)[-500:] for vm in fake.instances()}
        assert states == {
            "steady": JobStatus.SUCCEEDED,
            "victim": JobStatus.SUCCEEDED,
            "doomed": JobStatus.CANCELLED,
        }, (states, logs)

        # the preempted member resumed from its checkpoint on a new VM
        attempts = _attempts(engine, "victim")
        assert [a.status for a in attempts] == [JobStatus.PREEMPTED, JobStatus.SUCCEEDED]
        assert attempts[0].instance_id == preempted_vm and attempts[1].instance_id != preempted_vm
        jobs = _jobs(engine)
        vstore = store.child(jobs["victim"].uri[len(store.uri) + 1 :])
        result = json.loads(vstore.get_bytes(layout.result_key(2)))
        resumed = result["summary"]["resumed_from"]
        assert resumed is not None and resumed >= 3
        assert result["summary"]["steps_run"] == JOBS["victim"]["steps"] - resumed
        assert json.loads(vstore.get_bytes(layout.exit_key(1)))["status"] == "preempted"

        # every finished job has its artifacts in the emulated bucket (read back by a fresh store)
        fresh = GCSStore(store.uri)
        for name in ("steady", "victim"):
            job = jobs[name]
            key = (
                job.uri[len(store.uri) + 1 :]
                + f"/{layout.artifacts_prefix(job.current_attempt)}/noop.json"
            )
            assert json.loads(fresh.get_bytes(key)) == {"steps": JOBS[name]["steps"]}

        # the stockout in the first zone fell over to the second, and the reason was kept
        assert fake.stats.refused_by_zone == {ZONES[0]: 1}
        notes = [k for k in fresh.list("campaigns/") if k.endswith("/provision.json")]
        assert len(notes) == 1
        note = json.loads(fresh.get_bytes(notes[0]))
        assert (
            note["refusals"] == [f"{ZONES[0]}: ZONE_RESOURCE_POOL_EXHAUSTED"]
            and note["zone"] == ZONES[1]
        )
        assert (
            fake.stats.inserts_by_zone[ZONES[1]] >= 1 and fake.stats.inserts_by_zone[ZONES[0]] >= 2
        )

        # cancel deleted the VM, and nothing is left behind
        doomed_attempt = _attempts(engine, "doomed")[-1]
        assert doomed_attempt.status == JobStatus.CANCELLED
        assert doomed_attempt.instance_id in fake.stats.deleted
        waiter(lambda: fake.instances() == [], timeout=20, what="no VM left")
        assert [s for s in launcher.list_instances() if s.state.is_alive()] == []
        assert fake.stats.bad_requests == []
    finally:
        launcher.close()
        fake.stop()
        engine.dispose()


# the demo training: 1-2 ms a step on 2 busy cores, so 4-8 s of steps, with a checkpoint at every
# evaluation; the preemption lands within ~2 evaluations of the first checkpoint (measured: 400-600)
STEPS, EVERY = 4000, 200


def test_demo_training_campaign_created_by_the_service_runs_on_gce(gcs_emulator, tmp_path, waiter):
    """A real (tiny) training campaign from a config: service -> controller -> VM -> JAX worker
    -> ensemble in the emulated bucket. The fit stage is left out to keep it short.

    The training job's spot VM is preempted once its first checkpoint is in the bucket; the
    worker stops at the next evaluation boundary, saves a checkpoint and exits "preempted", and
    the controller relaunches it on a new VM, which resumes from that checkpoint. The training
    lasts a few seconds past the first checkpoint (many steps, checkpoint every evaluation) so
    the preemption always lands mid-training."""
    from backend import service

    engine = init_db(create_engine(f"sqlite:///{tmp_path / 'nsbi.db'}"))

    def demo(process: str, seed: int) -> dict:
        return {"demo": {"process": process, "n": 3000, "seed": seed}}

    config = {
        "name": "gce demo",
        "backend": {
            "launcher": "gce",
            "machine_type": "n1-standard-4",
            "gpu_type": "nvidia-tesla-t4",
            "gpu_count": 1,
            "spot": True,
            "zones": list(ZONES),
            "max_concurrency": 2,
            "retry_limit": 0,
        },
        "processes": {"S": demo("S", 1), "B": demo("B", 3)},
        "reference": "B",
        "training": {
            "ensemble_size": 2,
            "members_per_job": 2,
            "params": {
                "hidden_layers": 2,
                "width": 64,
                "max_steps": STEPS,
                "eval_every": EVERY,
                "batch_size": 1024,
                "checkpoint_every": EVERY,
                "patience": 10_000,
            },
        },
        "fit": {"enabled": False},
        "impacts": {"enabled": False},
        "scan": {"enabled": False},
    }
    campaign_id = service.create_campaign(config, engine=engine)
    service.request_launch(campaign_id, engine=engine)
    store = GCSStore(f"gs://b/demo-{uuid.uuid4().hex[:8]}")
    fake = FakeCompute(boot=True, grace_s=3.0, workdir=tmp_path, boot_env={"PYTHONPATH": str(REPO)})
    fake.start()
    launcher = GceLauncher(
        GceConfig(
            project=fake.project,
            zones=ZONES,
            endpoint=fake.endpoint,
            url_scheme="http",
            runtime="python",
            python=sys.executable,
            list_ttl_s=0.2,
            service_account=f"nsbi-worker@{fake.project}.iam.gserviceaccount.com",
            env={"STORAGE_EMULATOR_HOST": gcs_emulator, "NSBI_WORKER_INTERVAL_S": "0.5"},
        )
    )
    controller = Controller(
        engine,
        store,
        {"gce": launcher},
        ControllerConfig(tick_interval_s=0.3, heartbeat_timeout_s=120, startup_timeout_s=240),
    )
    preempted: dict[str, object] = {}  # vm, first checkpoint step, time
    try:

        def finished() -> bool:
            assert not controller.tick().errors
            jobs = list(_jobs(engine).values())
            if (
                not preempted
                and len(jobs) == 1
                and jobs[0].status == JobStatus.RUNNING
                and jobs[0].uri
            ):
                steps = [
                    step
                    for step, _ in list_segments(
                        GCSStore(jobs[0].uri), layout.checkpoints_prefix(1)
                    )
                ]
                if steps:  # the first checkpoint is in the bucket: preempt the spot VM now
                    vm = _attempts(engine, jobs[0].name)[0].instance_id
                    fake.preempt(vm, grace_s=20.0)
                    preempted.update(vm=vm, first=min(steps), at=time.time())
            return all(JobStatus(j.status).is_terminal() for j in jobs)

        t0 = time.time()
        waiter(finished, timeout=240, every=0.3, what="campaign finished")
        jobs = _jobs(engine)
        logs = {p.name: p.read_text()[-800:] for p in tmp_path.glob("*.log")}
        assert {j.status for j in jobs.values()} == {JobStatus.SUCCEEDED}, (jobs, logs)
        (job,) = jobs.values()
        assert job.kind == "train" and job.machine_type == "n1-standard-4"
        assert preempted, "the training job never had a checkpoint to be preempted after"

        # the first attempt was preempted mid-training; the second, on a new VM, resumed from
        # its checkpoint and ran only the remaining steps
        attempts = _attempts(engine, job.name)
        assert [a.status for a in attempts] == [JobStatus.PREEMPTED, JobStatus.SUCCEEDED], logs
        assert (
            attempts[0].instance_id == preempted["vm"]
            and attempts[1].instance_id != preempted["vm"]
        )
        jstore = GCSStore(job.uri)
        assert json.loads(jstore.get_bytes(layout.exit_key(1)))["status"] == "preempted"
        saved = [step for step, _ in list_segments(jstore, layout.checkpoints_prefix(1))]
        result = json.loads(jstore.get_bytes(layout.result_key(2)))
        summary = result["summary"]
        print(
            f"first checkpoint {preempted['first']}, attempt-1 checkpoints {saved}, resumed_from "
            f"{summary['resumed_from']}, steps_run {summary['steps_run']} of {summary['steps_total']}, "
            f"preempted {preempted['at'] - t0:.1f} s in, campaign {time.time() - t0:.1f} s"
        )
        assert summary["resumed_from"] is not None and summary["resumed_from"] >= preempted["first"]
        assert summary["resumed_from"] == max(saved) < STEPS  # the checkpoint written on SIGTERM
        assert summary["steps_total"] == STEPS  # 2 members, one pack; patience never ends it early
        assert 0 < summary["steps_run"] == STEPS - summary["resumed_from"] < STEPS

        ensemble_uri = result["artifacts"]["ensemble"]
        assert ensemble_uri.startswith(store.uri + "/campaigns/")
        parent, _, name = ensemble_uri.rpartition("/")
        assert len(GCSStore(parent).get_bytes(name)) > 100
        assert fake.stats.inserts_by_zone == {ZONES[0]: 2}
        waiter(lambda: fake.instances() == [], timeout=20, what="no VM left")
        assert [s for s in launcher.list_instances() if s.state.is_alive()] == []
    finally:
        launcher.close()
        fake.stop()
        engine.dispose()
