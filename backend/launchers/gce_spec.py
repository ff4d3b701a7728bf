"""What a GCE worker VM looks like: configuration, names, labels, the instance body and the
startup script. Pure functions (no network), so they are easy to test and to read.

The startup script is one constant text, identical for every VM: it reads every job value
(job URI, attempt, worker image, environment) from the instance *metadata* at boot, so no
user-supplied string is ever pasted into shell code. See docs/gcp.md for its contract.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from backend.launchers.base import LauncherError, LaunchRequest
from backend.settings import (
    DEFAULT_GCE_IMAGE,
    DEFAULT_GCE_SCOPES,
    GceSettings,
    SettingsError,
    get_settings,
)

# ----------------------------------------------------------------------------- configuration

DEFAULT_IMAGE = DEFAULT_GCE_IMAGE
COS_IMAGE = "projects/cos-cloud/global/images/family/cos-stable"
WORKER_SCOPES = DEFAULT_GCE_SCOPES  # devstorage.read_write, logging.write, monitoring.write
# the accounts a project gets by default, with the Editor role on the whole project
_DEFAULT_ACCOUNT = re.compile(
    r"^(default|\d+-compute@developer\.gserviceaccount\.com|[^@\s]+@appspot\.gserviceaccount\.com)$"
)
BUILTIN_GPU_FAMILIES = ("a2-", "a3-", "a4-", "g2-")  # machine types that come with their GPUs


@dataclass(frozen=True)
class MachineSpec:
    """The hardware of one VM (per job; defaults come from :class:`GceConfig`)."""

    machine_type: str = "n1-standard-8"
    gpu_type: str | None = "nvidia-tesla-t4"
    gpu_count: int = 1
    spot: bool = True
    zones: tuple[str, ...] = ()

    def has_builtin_gpus(self) -> bool:
        return self.machine_type.startswith(BUILTIN_GPU_FAMILIES)


@dataclass(frozen=True)
class GceConfig:
    """Everything the GCE launcher needs besides the per-job request.

    ``endpoint`` ("127.0.0.1:8080") plus ``url_scheme="http"`` point the SDK at a fake or a
    proxy; left empty, the real API is used with application-default credentials.
    """

    project: str
    zones: tuple[str, ...]
    machine: MachineSpec = field(default_factory=MachineSpec)
    image: str = DEFAULT_IMAGE
    boot_disk_gb: int = 100
    boot_disk_type: str = "pd-balanced"
    network: str = "global/networks/default"
    subnetwork: str | None = None
    external_ip: bool = False  # no public address: Cloud NAT / Private Google Access (docs/gcp.md)
    service_account: str | None = None  # the workers' own account; None: the project's default
    allow_default_service_account: bool = False  # accept the default account (refused otherwise)
    scopes: tuple[str, ...] = WORKER_SCOPES  # OAuth scopes of the VM's account
    worker_image: str = ""  # e.g. europe-docker.pkg.dev/p/nsbi/worker:1.0
    runtime: str = "docker"  # docker | python (DLVM with nsbi pip-installed)
    python: str = "python3"  # interpreter for runtime=python
    max_run_duration_s: int = 24 * 3600  # VM deleted by GCE after this (cost guard)
    time_limit_grace_s: int = 300  # added to a job's time limit for boot + upload
    owner: str = "nsbi"  # label nsbi_owner: which deployment owns a VM
    max_instances: int | None = 1000  # free_slots() limit (None: unlimited)
    insert_threads: int = 32
    watch_threads: int = 16
    provision_timeout_s: float = 900.0  # keep cycling through zones this long
    capacity_backoff_s: float = 60.0  # pause after every zone said no
    list_ttl_s: float = 1.0  # reuse one aggregated listing this long
    endpoint: str | None = None
    url_scheme: str = "https"
    env: Mapping[str, str] = field(default_factory=dict)  # extra worker environment

    def __post_init__(self) -> None:
        if not self.project:
            raise LauncherError("gce launcher: no project configured (set NSBI_GCE_PROJECT)")
        if not self.zones:
            raise LauncherError(
                "gce launcher: no zones configured (set NSBI_GCE_ZONES=zone-a,zone-b)"
            )
        if self.runtime not in ("docker", "python"):
            raise LauncherError(
                f"gce launcher: runtime must be 'docker' or 'python', got {self.runtime!r}"
            )
        if self.runtime == "docker" and not self.worker_image:
            raise LauncherError(
                "gce launcher: runtime 'docker' needs a worker image (set NSBI_GCE_WORKER_IMAGE)"
            )
        check_env(self.env, "GceConfig.env")
        if is_default_service_account(self.service_account):
            if not self.allow_default_service_account:
                raise LauncherError(
                    "gce launcher: the worker VMs would run as "
                    + (
                        f"the default account {self.service_account!r}"
                        if self.service_account
                        else "the project's default compute service account "
                        "(NSBI_GCE_SERVICE_ACCOUNT is not set)"
                    )
                    + ", which holds the Editor role on the whole project. Create a worker "
                    "account with only the roles it needs (docs/gcp.md, 'Service accounts and "
                    "roles') and set NSBI_GCE_SERVICE_ACCOUNT=nsbi-worker@PROJECT.iam.gserviceaccount.com, "
                    "or set NSBI_GCE_ALLOW_DEFAULT_SA=1 to accept the default account"
                )
        if not self.scopes:
            raise LauncherError(
                "gce launcher: no OAuth scopes for the worker VMs (NSBI_GCE_SCOPES)"
            )


def config_from_settings(gce: GceSettings, **overrides: Any) -> GceConfig:
    """Build a :class:`GceConfig` from the ``NSBI_GCE_*`` settings; keyword overrides win."""
    machine = MachineSpec(gce.machine_type, gce.gpu_type, gce.gpu_count, gce.spot, gce.zones)
    kwargs: dict[str, Any] = dict(
        project=gce.project,
        zones=gce.zones,
        machine=machine,
        image=gce.image,
        boot_disk_gb=gce.boot_disk_gb,
        service_account=gce.service_account,
        allow_default_service_account=gce.allow_default_service_account,
        scopes=gce.scopes,
        worker_image=gce.worker_image,
        runtime=gce.runtime,
        python=gce.python,
        network=gce.network,
        subnetwork=gce.subnetwork,
        external_ip=gce.external_ip,
        max_run_duration_s=int(gce.max_run_hours * 3600),
        owner=gce.owner,
        max_instances=gce.max_instances,
        insert_threads=gce.insert_threads,
        endpoint=gce.endpoint,
        url_scheme=gce.url_scheme,
    )
    kwargs.update(overrides)
    return GceConfig(**kwargs)


def config_from_env(env: Mapping[str, str] | None = None, **overrides: Any) -> GceConfig:
    """Build a :class:`GceConfig` from ``NSBI_GCE_*`` variables in ``env`` (default: this
    process's settings; see docs/gcp.md). A value that does not parse is a LauncherError."""
    try:
        gce = get_settings().gce if env is None else GceSettings.from_env(env)
    except SettingsError as exc:
        raise LauncherError(str(exc)) from None
    return config_from_settings(gce, **overrides)


def is_default_service_account(email: str | None) -> bool:
    """No account given, ``default``, or a project's default compute
    (``<number>-compute@developer.gserviceaccount.com``) or App Engine
    (``<project>@appspot.gserviceaccount.com``) account: each has the Editor role on the whole
    project unless someone took it away."""
    return not email or bool(_DEFAULT_ACCOUNT.match(email.strip().lower()))


# ----------------------------------------------------------------------------- names and labels

_NAME_OK = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def vm_name(instance_id: str) -> str:
    """A valid GCE instance name for ``instance_id``: itself when valid, else a cleaned,
    shortened form with a hash of the original (deterministic, so launches stay idempotent)."""
    if _NAME_OK.match(instance_id):
        return instance_id
    clean = re.sub(r"[^a-z0-9-]+", "-", instance_id.lower()).strip("-")
    if not clean or not clean[0].isalpha():
        clean = "n-" + clean
    digest = hashlib.sha1(instance_id.encode()).hexdigest()[:8]
    return f"{clean[:54].rstrip('-')}-{digest}"


def label_value(text: Any) -> str:
    """GCE label value: lower-case letters, digits, '_' and '-', at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]+", "-", str(text).lower())[:63]


def label_key(text: str) -> str:
    key = re.sub(r"[^a-z0-9_-]+", "_", str(text).lower())[:63]
    return key if key[:1].isalpha() else f"x_{key}"[:63]


def labels_for(request: LaunchRequest, owner: str) -> dict[str, str]:
    """Labels that let the launcher find its VMs by one filtered, aggregated listing."""
    labels = {label_key(k): label_value(v) for k, v in request.labels.items()}
    labels.update(
        {
            "nsbi_owner": label_value(owner),
            "nsbi_campaign": label_value(request.campaign),
            "nsbi_job": label_value(request.job),
            "nsbi_attempt": str(int(request.attempt)),
        }
    )
    return labels


def check_env(env: Mapping[str, str], where: str) -> None:
    for k, v in env.items():
        if not _ENV_KEY.match(str(k)):
            raise LauncherError(f"{where}: environment name {k!r} is not a valid variable name")
        if "\n" in str(v) or "\0" in str(v):
            raise LauncherError(f"{where}: environment value of {k} contains a newline or NUL")


def machine_for(
    request: LaunchRequest, default: MachineSpec, config_zones: Sequence[str]
) -> MachineSpec:
    """The request's hardware where it says (attributes machine_type, gpu_type, spot, zones, as
    the controller passes them from the job row), the launcher's defaults elsewhere."""
    spec = default
    mt = getattr(request, "machine_type", None)
    if mt and mt != "local":  # the job row names its machine: take its GPUs as they are
        spec = replace(
            spec,
            machine_type=str(mt),
            gpu_type=getattr(request, "gpu_type", None) or None,
            gpu_count=int(request.gpus),
        )
    elif request.gpus:
        spec = replace(spec, gpu_count=int(request.gpus))
    if getattr(request, "spot", None) is not None:
        spec = replace(spec, spot=bool(request.spot))
    zones = tuple(getattr(request, "zones", None) or ()) or tuple(spec.zones) or tuple(config_zones)
    spec = replace(spec, zones=zones)
    if spec.gpu_count and not spec.gpu_type and not spec.has_builtin_gpus():
        raise LauncherError(
            f"gce launcher: {request.instance_id} asks for {spec.gpu_count} GPU(s) "
            f"but no gpu_type, and {spec.machine_type} has no built-in GPUs"
        )
    return spec


# ----------------------------------------------------------------------------- startup script

STARTUP_SCRIPT = r"""#!/bin/bash
# nsbi-workbench worker startup script. Identical on every VM: all job values come from the
# instance metadata (nsbi-job-uri, nsbi-attempt, nsbi-runtime, nsbi-worker-image, nsbi-python,
# nsbi-env), are kept in quoted variables and are never evaluated as shell code.
set -u
MD="${NSBI_METADATA_URL:-http://metadata.google.internal/computeMetadata/v1}"
md() { curl -sSf --retry 5 --retry-connrefused -H "Metadata-Flavor: Google" "$MD/instance/attributes/$1" 2>/dev/null; }
child=""
trap 'if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; fi' TERM INT
JOB_URI="$(md nsbi-job-uri)" || { echo "nsbi: no nsbi-job-uri in metadata" >&2; exit 2; }
ATTEMPT="$(md nsbi-attempt)" || { echo "nsbi: no nsbi-attempt in metadata" >&2; exit 2; }
RUNTIME="$(md nsbi-runtime)" || RUNTIME=docker
NAME="$(curl -sSf -H "Metadata-Flavor: Google" "$MD/instance/name" 2>/dev/null)" || NAME="$(hostname)"
ENVFILE="$(mktemp)"
md nsbi-env > "$ENVFILE" || : > "$ENVFILE"
echo "NSBI_INSTANCE_ID=$NAME" >> "$ENVFILE"
GPUS="$(md nsbi-gpus)" || GPUS=0
if [ "$GPUS" != "0" ] && ! command -v cos-extensions >/dev/null 2>&1; then
  # Deep Learning VM images install the driver at first boot, possibly after this script starts
  waited=0
  until nvidia-smi >/dev/null 2>&1 || [ "$waited" -ge "${NSBI_GPU_WAIT_S:-300}" ]; do sleep 5; waited=$((waited + 5)); done
fi
if [ "$RUNTIME" = "docker" ]; then
  IMAGE="$(md nsbi-worker-image)" || { echo "nsbi: no nsbi-worker-image in metadata" >&2; exit 2; }
  REGISTRY="${IMAGE%%/*}"
  if command -v cos-extensions >/dev/null 2>&1 && [ "$GPUS" != "0" ]; then
    cos-extensions install gpu && mount --bind /var/lib/nvidia /var/lib/nvidia && mount -o remount,exec /var/lib/nvidia
    GPU_FLAGS=(--volume /var/lib/nvidia/lib64:/usr/local/nvidia/lib64 --volume /var/lib/nvidia/bin:/usr/local/nvidia/bin
               --device /dev/nvidia0:/dev/nvidia0 --device /dev/nvidia-uvm:/dev/nvidia-uvm --device /dev/nvidiactl:/dev/nvidiactl)
  elif command -v nvidia-smi >/dev/null 2>&1; then
    GPU_FLAGS=(--gpus all)
  else
    GPU_FLAGS=()
  fi
  if command -v docker-credential-gcr >/dev/null 2>&1; then
    docker-credential-gcr configure-docker --registries="$REGISTRY" >/dev/null 2>&1 || true
  elif command -v gcloud >/dev/null 2>&1; then
    gcloud auth configure-docker "$REGISTRY" --quiet >/dev/null 2>&1 || true
  fi
  docker run --rm --name nsbi-worker --network host --stop-timeout 25 "${GPU_FLAGS[@]}" \
    --env-file "$ENVFILE" --entrypoint python "$IMAGE" -m backend.commands.worker "$JOB_URI" --attempt "$ATTEMPT" &
  child=$!
else
  PY="$(md nsbi-python)" || PY=python3
  (
    while IFS= read -r line; do
      case "$line" in [A-Za-z_]*=*) export "$line" ;; esac
    done < "$ENVFILE"
    exec "$PY" -m backend.commands.worker "$JOB_URI" --attempt "$ATTEMPT"
  ) &
  child=$!
fi
rc=0
wait "$child" || rc=$?
while kill -0 "$child" 2>/dev/null; do wait "$child"; rc=$?; done
echo "nsbi: worker exited with status $rc"
if [ -z "${NSBI_NO_POWEROFF:-}" ]; then shutdown -h now; fi
exit "$rc"
"""


# ----------------------------------------------------------------------------- instance body


def _zonal(zone: str, kind: str, name: str) -> str:
    return name if name.startswith(("projects/", "https://")) else f"zones/{zone}/{kind}/{name}"


def build_instance(
    config: GceConfig, request: LaunchRequest, machine: MachineSpec, zone: str
) -> Any:
    """The ``compute_v1.Instance`` for one attempt in ``zone``."""
    from google.cloud import compute_v1

    name = vm_name(request.instance_id)
    env = {**config.env, **request.env}
    check_env(request.env, f"launch request {request.instance_id}")
    env_text = "".join(f"{k}={v}\n" for k, v in sorted(env.items()))
    limit = (
        int(request.time_limit_s + config.time_limit_grace_s)
        if request.time_limit_s
        else config.max_run_duration_s
    )
    limit = max(30, min(limit, config.max_run_duration_s))
    scheduling = compute_v1.Scheduling(
        provisioning_model="SPOT" if machine.spot else "STANDARD",
        instance_termination_action="DELETE",
        on_host_maintenance="TERMINATE",
        automatic_restart=False,
        max_run_duration=compute_v1.Duration(seconds=limit),
    )
    accelerators = []
    if machine.gpu_count and machine.gpu_type and not machine.has_builtin_gpus():
        accelerators.append(
            compute_v1.AcceleratorConfig(
                accelerator_type=_zonal(zone, "acceleratorTypes", machine.gpu_type),
                accelerator_count=int(machine.gpu_count),
            )
        )
    metadata = {
        "startup-script": STARTUP_SCRIPT,
        "nsbi-job-uri": request.job_uri,
        "nsbi-attempt": str(int(request.attempt)),
        "nsbi-runtime": config.runtime,
        "nsbi-gpus": str(int(machine.gpu_count or 0)),
        "nsbi-env": env_text,
        "install-nvidia-driver": "True" if machine.gpu_count else "False",
    }
    if config.worker_image:
        metadata["nsbi-worker-image"] = config.worker_image
    if config.runtime == "python":
        metadata["nsbi-python"] = config.python
    nic = compute_v1.NetworkInterface(network=config.network)
    if config.subnetwork:
        nic.subnetwork = config.subnetwork
    if config.external_ip:
        nic.access_configs = [compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")]
    sa = compute_v1.ServiceAccount(
        email=config.service_account or "default", scopes=list(config.scopes)
    )
    return compute_v1.Instance(
        name=name,
        machine_type=_zonal(zone, "machineTypes", machine.machine_type),
        labels=labels_for(request, config.owner),
        scheduling=scheduling,
        guest_accelerators=accelerators,
        disks=[
            compute_v1.AttachedDisk(
                boot=True,
                auto_delete=True,
                type_="PERSISTENT",
                initialize_params=compute_v1.AttachedDiskInitializeParams(
                    source_image=config.image,
                    disk_size_gb=int(config.boot_disk_gb),
                    disk_type=_zonal(zone, "diskTypes", config.boot_disk_type),
                ),
            )
        ],
        network_interfaces=[nic],
        service_accounts=[sa],
        metadata=compute_v1.Metadata(
            items=[compute_v1.Items(key=k, value=v) for k, v in metadata.items()]
        ),
    )


# ----------------------------------------------------------------------------- errors

CAPACITY_CODES = (
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "RESOURCE_POOL_EXHAUSTED",
    "QUOTA_EXCEEDED",
    "quotaExceeded",
    "STOCKOUT",
    "resourcePoolExhausted",
)


def capacity_code(text: str) -> str | None:
    """The stockout/quota code named in an error text, or None (then it is not a capacity error)."""
    for code in CAPACITY_CODES:
        if code.lower() in text.lower():
            return "QUOTA_EXCEEDED" if code in ("quotaExceeded",) else code
    if re.search(r"Quota '[^']+' exceeded", text):
        return "QUOTA_EXCEEDED"
    return None


def operation_errors(op: Any) -> list[tuple[str, str]]:
    """(code, message) of each error of a finished ``compute_v1.Operation``."""
    err = getattr(op, "error", None)
    out = [(e.code, e.message) for e in (err.errors if err else [])]
    if not out:
        status = getattr(op, "http_error_status_code", 0)
        if status and status >= 400:
            out.append((str(status), op.http_error_message or "operation failed"))
    return out
