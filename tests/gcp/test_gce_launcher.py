"""GceLauncher through the real google-cloud-compute client against the loopback fake service.

VMs "boot" by running the real startup script, with a stub standing in for the VM's Python
(see conftest.py): it records its argv and environment and behaves as the job URI says
("sleep" waits for SIGTERM, "exit3" exits 3, anything else exits 0).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from backend.launchers import CapacityError, InstanceState, LaunchRequest, get_launcher
from nsbi_testing.gce_fake import FakeCompute


def _request(tmp_path, job: str, attempt: int = 1, *, behaviour: str = "ok", **kw) -> LaunchRequest:
    uri = (tmp_path / "store" / "campaigns" / "camp" / "jobs" / f"{job}-{behaviour}").as_uri()
    return LaunchRequest(campaign="camp", job=job, attempt=attempt, job_uri=uri, **kw)


def _record(stub, name):
    return json.loads((stub[1] / f"{name}.json").read_text())


def test_a_launched_vm_has_the_spot_gpu_body_and_runs_the_worker_command(
    make_launcher, fake_compute, stub_python, tmp_path, waiter
):
    launcher = make_launcher()
    req = _request(tmp_path, "j1", gpus=2, time_limit_s=600, env={"X_SEED": "7"})
    handle = launcher.launch(req)
    assert handle.instance_id == "camp-j1-1" and not handle.already_running
    vm = waiter(lambda: fake_compute.find("camp-j1-1"), what="VM inserted")
    body = vm.body
    assert body["machineType"].endswith("zones/us-central1-a/machineTypes/n1-standard-8")
    sched = body["scheduling"]
    assert sched["provisioningModel"] == "SPOT" and sched["instanceTerminationAction"] == "DELETE"
    assert (
        sched["onHostMaintenance"] == "TERMINATE"
        and int(sched["maxRunDuration"]["seconds"]) == 600 + 300
    )
    assert body["guestAccelerators"] == [
        {
            "acceleratorType": "zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4",
            "acceleratorCount": 2,
        }
    ]
    assert body["labels"] == {
        "nsbi_owner": "nsbi",
        "nsbi_campaign": "camp",
        "nsbi_job": "j1",
        "nsbi_attempt": "1",
    }
    assert body["serviceAccounts"][0]["scopes"] == [
        "https://www.googleapis.com/auth/devstorage.read_write",
        "https://www.googleapis.com/auth/logging.write",
        "https://www.googleapis.com/auth/monitoring.write",
    ]
    assert fake_compute.stats.bad_requests == []
    # the stub "python" ran with the worker's command line and the configured environment
    rec = waiter(
        lambda: (stub_python[1] / "camp-j1-1.json").exists() and _record(stub_python, "camp-j1-1")
    )
    assert rec["argv"] == ["-m", "backend.commands.worker", req.job_uri, "--attempt", "1"]
    assert rec["env"]["X_SEED"] == "7" and rec["env"]["NSBI_INSTANCE_ID"] == "camp-j1-1"
    # the worker exits 0 -> the guest powers off -> EXITED, and the launcher deletes the VM
    st = waiter(
        lambda: (
            (s := launcher.poll(["camp-j1-1"])["camp-j1-1"]).state is InstanceState.EXITED and s
        ),
        what="EXITED",
    )
    assert st.campaign == "camp" and st.job == "j1" and st.attempt == 1
    waiter(lambda: fake_compute.find("camp-j1-1") is None, what="VM deleted after exit")
    assert launcher.poll(["camp-j1-1"])["camp-j1-1"].state is InstanceState.EXITED


def test_user_strings_never_reach_a_shell(
    make_launcher, fake_compute, stub_python, tmp_path, waiter
):
    launcher = make_launcher()
    evil = f"; touch {tmp_path}/pwned1; $(touch {tmp_path}/pwned2) `touch {tmp_path}/pwned3` 'q' \"d\" \\"
    req = LaunchRequest("camp", "evil", 1, job_uri=f"file:///x{evil}", env={"X_EVIL": evil})
    launcher.launch(req)
    rec = waiter(
        lambda: (
            (stub_python[1] / "camp-evil-1.json").exists() and _record(stub_python, "camp-evil-1")
        )
    )
    assert rec["argv"][2] == req.job_uri
    assert rec["env"]["X_EVIL"] == evil
    script = fake_compute.find("camp-evil-1") or None
    assert not any((tmp_path / f"pwned{i}").exists() for i in (1, 2, 3))
    if script is not None:
        assert evil not in script.metadata["startup-script"]


def test_launch_is_idempotent_across_launcher_restarts(
    make_launcher, fake_compute, tmp_path, waiter
):
    req = _request(tmp_path, "idem", behaviour="sleep")
    first = make_launcher()
    first.launch(req)
    waiter(
        lambda: first.poll([req.instance_id])[req.instance_id].state is InstanceState.RUNNING,
        what="RUNNING",
    )
    assert first.launch(req).already_running
    second = make_launcher()  # a restarted controller: knows nothing but the cloud's labels
    again = second.launch(req)
    assert again.already_running and "us-central1-a" in again.detail
    st = second.poll([req.instance_id])[req.instance_id]
    assert st.state is InstanceState.RUNNING and (st.campaign, st.job, st.attempt) == (
        "camp",
        "idem",
        1,
    )
    assert fake_compute.stats.inserts == 1
    assert [s.instance_id for s in second.list_instances("camp")] == [req.instance_id]
    assert second.list_instances("other") == []


def test_stockout_falls_over_to_the_next_zone_and_the_reason_is_stored(
    make_launcher, fake_compute, tmp_path, waiter
):
    fake_compute.fail_zone("us-central1-a", "ZONE_RESOURCE_POOL_EXHAUSTED")
    launcher = make_launcher()
    req = _request(tmp_path, "so", behaviour="sleep")
    launcher.launch_many([req])
    vm = waiter(lambda: fake_compute.find(req.instance_id), what="VM in the second zone")
    assert vm.zone == "us-central1-b"
    st = waiter(
        lambda: (
            (s := launcher.poll([req.instance_id])[req.instance_id]).state is InstanceState.RUNNING
            and s
        )
    )
    assert "us-central1-b" in st.detail
    assert launcher.provision_history(req.instance_id) == [
        "us-central1-a: ZONE_RESOURCE_POOL_EXHAUSTED"
    ]
    path = tmp_path / "store/campaigns/camp/jobs/so-sleep/attempts/1/provision.json"
    note = waiter(
        lambda: path.exists() and (n := json.loads(path.read_text()))["phase"] == "created" and n,
        what="provision.json of the VM created in the second zone",
    )
    assert (
        note["refusals"] == ["us-central1-a: ZONE_RESOURCE_POOL_EXHAUSTED"]
        and note["zone"] == "us-central1-b"
    )
    assert fake_compute.stats.refused_by_zone == {"us-central1-a": 1}


def test_a_synchronous_quota_error_also_moves_on(make_launcher, fake_compute, tmp_path, waiter):
    fake_compute.fail_zone("us-central1-a", "QUOTA_EXCEEDED", sync=True)
    launcher = make_launcher()
    req = _request(tmp_path, "quota", behaviour="sleep")
    launcher.launch_many([req])
    assert waiter(lambda: fake_compute.find(req.instance_id)).zone == "us-central1-b"
    assert launcher.provision_history(req.instance_id) == ["us-central1-a: QUOTA_EXCEEDED"]


def test_no_capacity_anywhere_waits_then_gives_up_with_every_reason(
    make_launcher, fake_compute, tmp_path, waiter
):
    fake_compute.fail_zone("us-central1-a", "ZONE_RESOURCE_POOL_EXHAUSTED")
    fake_compute.fail_zone("us-central1-b", "QUOTA_EXCEEDED")
    launcher = make_launcher(capacity_backoff_s=0.3, provision_timeout_s=1.0)
    req = _request(tmp_path, "none")
    launcher.launch_many([req])
    st = waiter(
        lambda: (
            (s := launcher.poll([req.instance_id])[req.instance_id]).state is InstanceState.PENDING
            and "waiting for capacity" in s.detail
            and s
        ),
        what="backoff",
    )
    assert (
        "us-central1-a: ZONE_RESOURCE_POOL_EXHAUSTED" in st.detail
        and "us-central1-b: QUOTA_EXCEEDED" in st.detail
    )
    final = waiter(
        lambda: (
            (s := launcher.poll([req.instance_id])[req.instance_id]).state is InstanceState.GONE
            and s
        ),
        what="GONE after the provisioning timeout",
    )
    assert "no zone had capacity" in final.detail
    assert fake_compute.stats.inserts >= 4  # both zones tried at least twice
    assert fake_compute.instances() == []


def test_preemption_sends_sigterm_and_is_reported(
    make_launcher, fake_compute, stub_python, tmp_path, waiter
):
    launcher = make_launcher()
    req = _request(tmp_path, "pre", behaviour="sleep")
    launcher.launch(req)
    waiter(lambda: (stub_python[1] / f"{req.instance_id}.json").exists(), what="worker started")
    assert launcher.poll([req.instance_id])[req.instance_id].state is InstanceState.RUNNING
    fake_compute.preempt(req.instance_id).join(10)
    assert (stub_python[1] / f"{req.instance_id}.sigterm").read_text() == "TERM"
    st = launcher.poll([req.instance_id])[req.instance_id]
    assert st.state is InstanceState.PREEMPTED and "preempted in us-central1-a" in st.detail
    assert fake_compute.instances() == []


def test_a_vm_gone_without_exit_record_is_preempted_with_one_it_exited(
    make_launcher, fake_compute, tmp_path, waiter
):
    launcher = make_launcher()
    lost, done = (
        _request(tmp_path, "lost", behaviour="sleep"),
        _request(tmp_path, "done", behaviour="sleep"),
    )
    launcher.launch_many([lost, done])
    waiter(
        lambda: all(
            s.state is InstanceState.RUNNING
            for s in launcher.poll([lost.instance_id, done.instance_id]).values()
        )
    )
    exit_json = tmp_path / "store/campaigns/camp/jobs/done-sleep/attempts/1/exit.json"
    exit_json.parent.mkdir(parents=True)
    exit_json.write_text('{"status": "succeeded", "exit_code": 0}')
    with fake_compute.lock:  # vanish without a preemption record (e.g. a host error)
        for vm in fake_compute.instances():
            fake_compute._signal(vm, 9)
            fake_compute.vms.pop((vm.zone, vm.name))
    got = launcher.poll([lost.instance_id, done.instance_id])
    assert (
        got[lost.instance_id].state is InstanceState.PREEMPTED
        and "without an exit record" in got[lost.instance_id].detail
    )
    assert got[done.instance_id].state is InstanceState.EXITED


def test_cancel_deletes_the_vm_gracefully(
    make_launcher, fake_compute, stub_python, tmp_path, waiter
):
    launcher = make_launcher()
    req = _request(tmp_path, "cx", behaviour="sleep")
    launcher.launch(req)
    waiter(lambda: (stub_python[1] / f"{req.instance_id}.json").exists(), what="worker started")
    launcher.cancel(req.instance_id)
    waiter(lambda: fake_compute.find(req.instance_id) is None, what="VM deleted")
    assert (stub_python[1] / f"{req.instance_id}.sigterm").exists()
    st = launcher.poll([req.instance_id])[req.instance_id]
    assert st.state is InstanceState.EXITED and "cancelled" in st.detail
    assert fake_compute.stats.deletes == 1


def test_free_slots_limit_raises_capacity_error(make_launcher, fake_compute, tmp_path):
    launcher = make_launcher(max_instances=2)
    assert launcher.free_slots() == 2
    launcher.launch_many(
        [_request(tmp_path, "s1", behaviour="sleep"), _request(tmp_path, "s2", behaviour="sleep")]
    )
    assert launcher.free_slots() == 0
    with pytest.raises(CapacityError, match="2 VMs"):
        launcher.launch(_request(tmp_path, "s3"))
    assert fake_compute.stats.inserts == 2


def test_many_concurrent_inserts_and_paged_listing(monkeypatch, tmp_path, waiter):
    import backend.launchers.gce as gce
    from backend.launchers.gce import GceLauncher
    from backend.launchers.gce_spec import GceConfig

    monkeypatch.setattr(gce, "LIST_PAGE_SIZE", 7)  # force the pager through several pages
    with FakeCompute(boot=False) as fake:
        launcher = GceLauncher(
            GceConfig(
                project=fake.project,
                zones=("europe-west4-a",),
                endpoint=fake.endpoint,
                url_scheme="http",
                runtime="python",
                list_ttl_s=0.5,
                service_account=f"nsbi-worker@{fake.project}.iam.gserviceaccount.com",
            )
        )
        reqs = [LaunchRequest("many", f"j{i}", 1, f"gs://b/j{i}") for i in range(40)]
        t0 = time.perf_counter()
        launcher.launch_many(reqs, timeout=60)
        assert time.perf_counter() - t0 < 30
        waiter(
            lambda: (
                {s.state for s in launcher.poll([r.instance_id for r in reqs]).values()}
                == {InstanceState.RUNNING}
            ),
            what="all RUNNING",
        )
        assert len(launcher.list_instances("many")) == 40 and fake.stats.inserts == 40
        assert launcher.delete_all("many") == 40
        waiter(lambda: fake.instances() == [], what="all deleted")
        launcher.close()


def test_fake_refuses_malformed_bodies_like_the_real_api():
    with FakeCompute() as fake:
        url = f"http://{fake.endpoint}/compute/v1/projects/{fake.project}/zones/us-central1-a/instances"

        def post(body: dict) -> tuple[int, str]:
            req = urllib.request.Request(
                url,
                data=json.dumps(body).encode(),
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req) as resp:
                    return resp.status, resp.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        ok = {
            "name": "vm-1",
            "machineType": "zones/us-central1-a/machineTypes/n1-standard-4",
            "disks": [
                {"boot": True, "initializeParams": {"sourceImage": "projects/x/global/images/y"}}
            ],
            "networkInterfaces": [{"network": "global/networks/default"}],
        }
        assert post({**ok, "bogusField": 1})[0] == 400
        assert post({**ok, "name": 5})[0] == 400
        assert post({**ok, "name": "Bad_Name"})[0] == 400
        assert post({**ok, "machineType": "zones/us-east1-b/machineTypes/n1-standard-4"})[0] == 400
        assert (
            post(
                {
                    **ok,
                    "guestAccelerators": [
                        {
                            "acceleratorType": "zones/us-central1-a/acceleratorTypes/t4",
                            "acceleratorCount": 1,
                        }
                    ],
                }
            )[0]
            == 400
        )  # no TERMINATE
        code, text = post(ok)
        assert code == 200 and json.loads(text)["operationType"] == "insert"
        assert post(ok)[0] == 409
        assert len(fake.stats.bad_requests) == 5


def test_registry_builds_the_launcher_from_environment(monkeypatch, tmp_path):
    from backend.settings import Settings

    monkeypatch.setenv("NSBI_GCE_PROJECT", "p1")
    monkeypatch.setenv("NSBI_GCE_ZONES", "us-east1-c, us-east1-d")
    monkeypatch.setenv("NSBI_GCE_WORKER_IMAGE", "us-docker.pkg.dev/p1/nsbi/worker:1")
    monkeypatch.setenv("NSBI_GCE_MACHINE_TYPE", "g2-standard-8")
    monkeypatch.setenv("NSBI_GCE_SPOT", "false")
    monkeypatch.setenv("NSBI_GCE_SERVICE_ACCOUNT", "nsbi-worker@p1.iam.gserviceaccount.com")
    launcher = get_launcher("gce", Settings.from_env({"NSBI_HOME": str(tmp_path)}))
    try:
        c = launcher.config
        assert (c.project, c.zones, c.runtime) == ("p1", ("us-east1-c", "us-east1-d"), "docker")
        assert c.machine.machine_type == "g2-standard-8" and c.machine.spot is False
    finally:
        launcher.close()


DOCKER_STUB = """\
#!{python}
# Stands in for docker on a DLVM image: records the command line and the env file it was given.
import json, os, sys
args = sys.argv[1:]
env_file = args[args.index("--env-file") + 1]
env = dict(line.split("=", 1) for line in open(env_file).read().splitlines() if line)
name = env.get("NSBI_INSTANCE_ID", "unknown")
path = os.path.join({out!r}, name + ".docker.json")
with open(path + ".tmp", "w") as fh:
    json.dump({{"argv": args, "env": env}}, fh)
os.replace(path + ".tmp", path)
"""


def test_docker_runtime_runs_the_worker_image_with_its_env_file(
    make_launcher, fake_compute, stub_python, tmp_path, waiter
):
    import sys

    bindir = tmp_path / "bin"
    bindir.mkdir()
    docker = bindir / "docker"
    docker.write_text(DOCKER_STUB.format(python=sys.executable, out=str(stub_python[1])))
    docker.chmod(0o755)
    fake_compute.boot_env["PATH"] = f"{bindir}:/usr/bin:/bin"
    image = "us-docker.pkg.dev/p/nsbi/worker:abc"
    launcher = make_launcher(runtime="docker", worker_image=image, env={"X_MODE": "a b; $(c)"})
    req = _request(tmp_path, "dock", behaviour="ok")
    launcher.launch(req)
    path = stub_python[1] / f"{req.instance_id}.docker.json"
    rec = json.loads(waiter(lambda: path.exists() and path.read_text(), what="docker called"))
    argv = rec["argv"]
    assert argv[:1] == ["run"] and "--rm" in argv and "--network" in argv
    i = argv.index(image)
    assert argv[i - 2 : i] == ["--entrypoint", "python"]
    assert argv[i + 1 :] == ["-m", "backend.commands.worker", req.job_uri, "--attempt", "1"]
    assert rec["env"]["X_MODE"] == "a b; $(c)" and rec["env"]["NSBI_INSTANCE_ID"] == req.instance_id
    assert waiter(
        lambda: launcher.poll([req.instance_id])[req.instance_id].state is InstanceState.EXITED
    )


def test_poll_accepts_raw_instance_ids_longer_than_a_vm_name(
    make_launcher, fake_compute, tmp_path, waiter
):
    launcher = make_launcher()
    req = LaunchRequest(
        "c" * 40 + "-17-abcdef",
        "train-s-vs-b-pack-03",
        1,
        (tmp_path / "store" / "long-sleep").as_uri(),
    )
    handle = launcher.launch(req)
    assert handle.instance_id != req.instance_id and len(handle.instance_id) <= 63
    waiter(lambda: launcher.poll([req.instance_id])[req.instance_id].state is InstanceState.RUNNING)
    assert launcher.poll([handle.instance_id])[handle.instance_id].state is InstanceState.RUNNING
    launcher.cancel(req.instance_id)
    waiter(lambda: fake_compute.instances() == [], what="deleted")


def test_a_restarted_launcher_still_recognises_a_preemption_it_never_saw(
    make_launcher, fake_compute, tmp_path, waiter
):
    first = make_launcher()
    req = _request(tmp_path, "gone", behaviour="sleep")
    first.launch_many([req])
    waiter(lambda: first.poll([req.instance_id])[req.instance_id].state is InstanceState.RUNNING)
    fake_compute.preempt(req.instance_id, grace_s=0.5).join(10)
    fresh = make_launcher()  # knows nothing of the VM, which is gone from every listing
    st = fresh.poll([req.instance_id])[req.instance_id]
    assert st.state is InstanceState.PREEMPTED and "us-central1-a" in st.detail
    assert fresh.poll(["camp-never-1"])["camp-never-1"].state is InstanceState.GONE


def test_transient_insert_errors_are_retried_in_the_same_zone(
    make_launcher, fake_compute, tmp_path, waiter
):
    fake_compute.fail_zone("us-central1-a", "BACKEND_ERROR", times=2)
    launcher = make_launcher()
    req = _request(tmp_path, "flaky", behaviour="sleep")
    launcher.launch_many([req])
    assert waiter(lambda: fake_compute.find(req.instance_id)).zone == "us-central1-a"
    assert fake_compute.stats.inserts_by_zone == {"us-central1-a": 3}
    assert launcher.provision_history(req.instance_id) == []
