"""Pure pieces of the GCE launcher: names, labels, the instance body, error codes, config."""

from __future__ import annotations

import re
import subprocess

import pytest

from backend.launchers import LauncherError, LaunchRequest
from backend.launchers.gce_spec import (
    STARTUP_SCRIPT,
    GceConfig,
    MachineSpec,
    build_instance,
    capacity_code,
    config_from_env,
    labels_for,
    machine_for,
    vm_name,
)

NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


@pytest.mark.parametrize("iid", ["camp-j-1", "9camp-j-1", "x" * 80 + "-1", "Camp_Ü-j-1", "-a-"])
def test_vm_names_are_valid_deterministic_and_distinct(iid):
    name = vm_name(iid)
    assert NAME_RE.match(name) and name == vm_name(iid)
    if NAME_RE.match(iid):
        assert name == iid
    assert vm_name(iid + "x") != name


def test_long_ids_differing_only_at_the_end_get_different_names():
    a, b = "c" * 70 + "-job-1", "c" * 70 + "-job-2"
    assert vm_name(a) != vm_name(b) and len(vm_name(a)) <= 63


def test_labels_are_cleaned_and_carry_campaign_job_attempt():
    req = LaunchRequest(
        "My Campaign-3-abc", "Train/Member 7", 2, "gs://b/x", labels={"Campaign ID": "12"}
    )
    labels = labels_for(req, "Team A")
    assert labels == {
        "campaign_id": "12",
        "nsbi_owner": "team-a",
        "nsbi_campaign": "my-campaign-3-abc",
        "nsbi_job": "train-member-7",
        "nsbi_attempt": "2",
    }
    assert all(
        re.match(r"^[a-z][a-z0-9_-]{0,62}$", k) and re.match(r"^[a-z0-9_-]{0,63}$", v)
        for k, v in labels.items()
    )


def _config(**kw):
    base = dict(
        project="p",
        zones=("us-central1-a", "us-central1-b"),
        worker_image="us-docker.pkg.dev/p/r/w:1",
        service_account="nsbi-worker@p.iam.gserviceaccount.com",
    )
    base.update(kw)
    return GceConfig(**base)


def test_builtin_gpu_machine_types_get_no_accelerator_config():
    cfg = _config()
    req = LaunchRequest("c", "j", 1, "gs://b/j", gpus=1)
    inst = build_instance(
        cfg, req, MachineSpec("g2-standard-8", "nvidia-l4", 1, True, cfg.zones), "us-central1-b"
    )
    assert (
        list(inst.guest_accelerators) == []
        and inst.machine_type == "zones/us-central1-b/machineTypes/g2-standard-8"
    )
    inst = build_instance(
        cfg,
        req,
        MachineSpec("n1-standard-8", "nvidia-tesla-t4", 1, False, cfg.zones),
        "us-central1-b",
    )
    assert (
        inst.guest_accelerators[0].accelerator_type
        == "zones/us-central1-b/acceleratorTypes/nvidia-tesla-t4"
    )
    assert (
        inst.scheduling.provisioning_model == "STANDARD"
        and inst.scheduling.on_host_maintenance == "TERMINATE"
    )
    meta = {i.key: i.value for i in inst.metadata.items}
    assert meta["nsbi-job-uri"] == "gs://b/j" and meta["nsbi-worker-image"] == cfg.worker_image
    assert meta["startup-script"] == STARTUP_SCRIPT and "gs://b/j" not in STARTUP_SCRIPT


def test_time_limits_are_clamped_to_the_max_run_duration():
    cfg = _config(max_run_duration_s=3600)
    m = MachineSpec(zones=cfg.zones)
    long = build_instance(
        cfg, LaunchRequest("c", "j", 1, "gs://b/j", time_limit_s=10 * 3600), m, "us-central1-a"
    )
    short = build_instance(
        cfg, LaunchRequest("c", "j", 1, "gs://b/j", time_limit_s=60), m, "us-central1-a"
    )
    none = build_instance(cfg, LaunchRequest("c", "j", 1, "gs://b/j"), m, "us-central1-a")
    assert [i.scheduling.max_run_duration.seconds for i in (long, short, none)] == [3600, 360, 3600]


def test_request_hardware_overrides_defaults_when_the_controller_passes_it():
    default = MachineSpec("n1-standard-8", "nvidia-tesla-t4", 1, True)
    plain = LaunchRequest("c", "j", 1, "gs://b/j")
    assert machine_for(plain, default, ("z-a",)) == MachineSpec(
        "n1-standard-8", "nvidia-tesla-t4", 1, True, ("z-a",)
    )
    two = LaunchRequest("c", "j", 1, "gs://b/j", gpus=2)
    assert machine_for(two, default, ("z-a",)).gpu_count == 2

    class Rich(LaunchRequest):  # what a controller passing the job row's hardware would send
        pass

    rich = Rich("c", "j", 1, "gs://b/j", gpus=0)
    object.__setattr__(rich, "machine_type", "n2-standard-4")
    object.__setattr__(rich, "gpu_type", None)
    object.__setattr__(rich, "spot", False)
    object.__setattr__(rich, "zones", ["europe-west4-a"])
    m = machine_for(rich, default, ("z-a",))
    assert (m.machine_type, m.gpu_type, m.gpu_count, m.spot, m.zones) == (
        "n2-standard-4",
        None,
        0,
        False,
        ("europe-west4-a",),
    )


def test_bad_environment_names_and_values_are_refused():
    cfg = _config()
    m = MachineSpec(zones=cfg.zones)
    with pytest.raises(LauncherError, match="not a valid variable name"):
        build_instance(
            cfg, LaunchRequest("c", "j", 1, "gs://b/j", env={"A B": "1"}), m, "us-central1-a"
        )
    with pytest.raises(LauncherError, match="newline"):
        build_instance(
            cfg, LaunchRequest("c", "j", 1, "gs://b/j", env={"A": "1\nB=2"}), m, "us-central1-a"
        )


@pytest.mark.parametrize(
    "text,code",
    [
        (
            "ZONE_RESOURCE_POOL_EXHAUSTED: The zone does not have enough resources",
            "ZONE_RESOURCE_POOL_EXHAUSTED",
        ),
        (
            "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS: ...",
            "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
        ),
        (
            "403 Quota 'NVIDIA_T4_GPUS' exceeded. Limit: 0.0 in region us-central1.",
            "QUOTA_EXCEEDED",
        ),
        ("QUOTA_EXCEEDED: Quota 'CPUS' exceeded", "QUOTA_EXCEEDED"),
        ("400 Invalid value for field 'resource.name'", None),
        ("404 The resource 'projects/p/global/images/x' was not found", None),
    ],
)
def test_capacity_codes_are_recognised(text, code):
    assert capacity_code(text) == code


def test_config_from_env_and_its_errors():
    env = {
        "NSBI_GCE_PROJECT": "p",
        "NSBI_GCE_ZONES": "a-b1-c,a-b1-d",
        "NSBI_GCE_RUNTIME": "python",
        "NSBI_GCE_GPU_TYPE": "",
        "NSBI_GCE_MAX_RUN_HOURS": "1.5",
        "NSBI_GCE_MAX_INSTANCES": "",
        "NSBI_GCE_SERVICE_ACCOUNT": "nsbi-worker@p.iam.gserviceaccount.com",
    }
    cfg = config_from_env(env)
    assert (
        cfg.zones == ("a-b1-c", "a-b1-d")
        and cfg.machine.gpu_type is None
        and cfg.machine.gpu_count == 0
    )
    assert cfg.max_run_duration_s == 5400 and cfg.max_instances is None
    with pytest.raises(LauncherError, match="NSBI_GCE_PROJECT"):
        config_from_env({"NSBI_GCE_ZONES": "a-b1-c", "NSBI_GCE_RUNTIME": "python"})
    with pytest.raises(LauncherError, match="NSBI_GCE_ZONES"):
        config_from_env({"NSBI_GCE_PROJECT": "p", "NSBI_GCE_RUNTIME": "python"})
    with pytest.raises(LauncherError, match="worker image"):
        config_from_env({"NSBI_GCE_PROJECT": "p", "NSBI_GCE_ZONES": "a-b1-c"})
    with pytest.raises(LauncherError, match="NSBI_GCE_SPOT"):
        config_from_env({**env, "NSBI_GCE_SPOT": "maybe"})


def test_startup_script_is_valid_bash():
    proc = subprocess.run(["bash", "-n"], input=STARTUP_SCRIPT, text=True, capture_output=True)
    assert proc.returncode == 0, proc.stderr
