"""Every environment variable the control plane, the workers and the dashboard read, in one place.

Nothing here touches the disk or a database at import time: `get_settings()` builds a frozen
`Settings` on demand so tests can point `NSBI_HOME` / `DATABASE_URL` elsewhere per process.
Every variable is parsed when the settings are built; one that is set to a value that does not
parse raises `SettingsError` naming the variable and the value. The README's "Configuration"
section lists them all in one table (keep the two in step).

This module is a leaf: it imports nothing from the project, so any module may import it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_GCE_IMAGE = (
    "projects/deeplearning-platform-release/global/images/family/common-cu124-debian-11-py310"
)
# OAuth scopes of a worker VM: the store (and pulling the worker image from Artifact Registry),
# logs and metrics; what the account may then do is decided by its IAM roles (docs/gcp.md)
GCE_SCOPE_PREFIX = "https://www.googleapis.com/auth/"
DEFAULT_GCE_SCOPES = tuple(
    GCE_SCOPE_PREFIX + s for s in ("devstorage.read_write", "logging.write", "monitoring.write")
)


class SettingsError(ValueError):
    """An environment variable is set to a value that does not parse (the message names both)."""


# ----------------------------------------------------------------------------- parsing
# Each helper reads one variable from `env`; "unset" means absent from the mapping.


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    """The value as given (an empty value stays empty); `default` when unset."""
    return env.get(name, default)


def _optional(env: Mapping[str, str], name: str) -> str | None:
    """The value, or None when unset or empty."""
    return env.get(name) or None


def _number(env: Mapping[str, str], name: str, default: str, cast: type, what: str) -> int | float:
    raw = env.get(name, default)
    try:
        return cast(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected {what}") from None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    return int(_number(env, name, str(default), int, "an integer"))


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    return float(_number(env, name, str(default), float, "a number"))


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """1/true/yes/on or 0/false/no/off (any case); an empty value is false."""
    raw = env.get(name)
    if raw is None:
        return default
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name}={raw!r}: expected true/false")


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated items, blanks dropped; () when unset."""
    return tuple(item.strip() for item in env.get(name, "").split(",") if item.strip())


# ----------------------------------------------------------------------------- groups


@dataclass(frozen=True)
class LocalLauncherSettings:
    """The local launcher (worker subprocesses on this machine)."""

    max_concurrent: int = 2  # NSBI_LOCAL_MAX_CONCURRENT: attempts running at once
    grace_s: float = 25.0  # NSBI_LOCAL_GRACE_S: SIGTERM -> SIGKILL grace of a worker
    # NSBI_LOCAL_PASS_ENV: names of further variables a worker inherits from the controller
    # (on top of the allow-list in backend/launchers/local.py), e.g. a plug-in's own setting
    pass_env: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LocalLauncherSettings:
        return cls(
            max_concurrent=_int(env, "NSBI_LOCAL_MAX_CONCURRENT", 2),
            grace_s=_float(env, "NSBI_LOCAL_GRACE_S", 25.0),
            pass_env=_list(env, "NSBI_LOCAL_PASS_ENV"),
        )


@dataclass(frozen=True)
class ControllerSettings:
    """The controller's leader lease: one controller per database (see backend/leader.py)."""

    # NSBI_CONTROLLER_LEASE_TTL_S: a lease not renewed for this long may be taken over
    lease_ttl_s: float = 10.0
    # NSBI_CONTROLLER_LEASE_RENEW_S: seconds between the leader's renewals (and a standby's tries)
    lease_renew_s: float = 3.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ControllerSettings:
        return cls(
            lease_ttl_s=_float(env, "NSBI_CONTROLLER_LEASE_TTL_S", 10.0),
            lease_renew_s=_float(env, "NSBI_CONTROLLER_LEASE_RENEW_S", 3.0),
        )


@dataclass(frozen=True)
class GceSettings:
    """The GCE launcher's deployment defaults, `NSBI_GCE_<FIELD>` (see docs/gcp.md).

    Read as given: whether they suffice (a project, zones, a worker image for the docker
    runtime) is checked by `backend.launchers.gce_spec.GceConfig` when the launcher is built.
    """

    project: str = ""  # NSBI_GCE_PROJECT, else GOOGLE_CLOUD_PROJECT
    zones: tuple[str, ...] = ()  # NSBI_GCE_ZONES: comma-separated, in order of preference
    machine_type: str = "n1-standard-8"  # NSBI_GCE_MACHINE_TYPE
    gpu_type: str | None = "nvidia-tesla-t4"  # NSBI_GCE_GPU_TYPE; set empty: no attached GPU
    gpu_count: int = 1  # NSBI_GCE_GPU_COUNT; default 1, or 0 without a gpu_type
    spot: bool = True  # NSBI_GCE_SPOT
    image: str = DEFAULT_GCE_IMAGE  # NSBI_GCE_IMAGE: boot image
    boot_disk_gb: int = 100  # NSBI_GCE_BOOT_DISK_GB
    service_account: str | None = None  # NSBI_GCE_SERVICE_ACCOUNT: the workers' own account
    # NSBI_GCE_ALLOW_DEFAULT_SA: accept the project's default compute account (or none given)
    allow_default_service_account: bool = False
    scopes: tuple[str, ...] = DEFAULT_GCE_SCOPES  # NSBI_GCE_SCOPES: short names or URLs
    worker_image: str = ""  # NSBI_GCE_WORKER_IMAGE
    runtime: str = "docker"  # NSBI_GCE_RUNTIME: docker | python
    python: str = "python3"  # NSBI_GCE_PYTHON: interpreter for runtime=python
    network: str = "global/networks/default"  # NSBI_GCE_NETWORK
    subnetwork: str | None = None  # NSBI_GCE_SUBNETWORK
    external_ip: bool = False  # NSBI_GCE_EXTERNAL_IP (without: Cloud NAT / Private Google Access)
    max_run_hours: float = 24.0  # NSBI_GCE_MAX_RUN_HOURS: GCE deletes a VM after this
    owner: str = "nsbi"  # NSBI_GCE_OWNER: the nsbi_owner label
    max_instances: int | None = 1000  # NSBI_GCE_MAX_INSTANCES; set empty: unlimited
    insert_threads: int = 32  # NSBI_GCE_INSERT_THREADS
    endpoint: str | None = None  # NSBI_GCE_ENDPOINT: host:port of a fake or proxy API
    url_scheme: str = "https"  # NSBI_GCE_URL_SCHEME

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GceSettings:
        gpu_type = _text(env, "NSBI_GCE_GPU_TYPE", "nvidia-tesla-t4") or None
        unlimited = not _text(env, "NSBI_GCE_MAX_INSTANCES", "1000").strip()
        return cls(
            project=env.get("NSBI_GCE_PROJECT") or env.get("GOOGLE_CLOUD_PROJECT", ""),
            zones=_list(env, "NSBI_GCE_ZONES"),
            machine_type=_text(env, "NSBI_GCE_MACHINE_TYPE", "n1-standard-8"),
            gpu_type=gpu_type,
            gpu_count=_int(env, "NSBI_GCE_GPU_COUNT", 1 if gpu_type else 0),
            spot=_bool(env, "NSBI_GCE_SPOT", True),
            image=_text(env, "NSBI_GCE_IMAGE", DEFAULT_GCE_IMAGE),
            boot_disk_gb=_int(env, "NSBI_GCE_BOOT_DISK_GB", 100),
            service_account=_optional(env, "NSBI_GCE_SERVICE_ACCOUNT"),
            allow_default_service_account=_bool(env, "NSBI_GCE_ALLOW_DEFAULT_SA", False),
            scopes=tuple(
                s if "://" in s else GCE_SCOPE_PREFIX + s for s in _list(env, "NSBI_GCE_SCOPES")
            )
            or DEFAULT_GCE_SCOPES,
            worker_image=_text(env, "NSBI_GCE_WORKER_IMAGE", ""),
            runtime=_text(env, "NSBI_GCE_RUNTIME", "docker"),
            python=_text(env, "NSBI_GCE_PYTHON", "python3"),
            network=_text(env, "NSBI_GCE_NETWORK", "global/networks/default"),
            subnetwork=_optional(env, "NSBI_GCE_SUBNETWORK"),
            external_ip=_bool(env, "NSBI_GCE_EXTERNAL_IP", False),
            max_run_hours=_float(env, "NSBI_GCE_MAX_RUN_HOURS", 24.0),
            owner=_text(env, "NSBI_GCE_OWNER", "nsbi"),
            max_instances=None if unlimited else _int(env, "NSBI_GCE_MAX_INSTANCES", 1000),
            insert_threads=_int(env, "NSBI_GCE_INSERT_THREADS", 32),
            endpoint=_optional(env, "NSBI_GCE_ENDPOINT"),
            url_scheme=_text(env, "NSBI_GCE_URL_SCHEME", "https"),
        )


@dataclass(frozen=True)
class GcsSettings:
    """The Google Cloud Storage artifact store (`NSBI_STORE=gs://bucket/prefix`)."""

    project: str | None = None  # NSBI_GCS_PROJECT: the client's project (None: from credentials)
    retry_deadline_s: float = 120.0  # NSBI_GCS_RETRY_DEADLINE_S: how long one call keeps retrying
    emulator_host: str | None = None  # STORAGE_EMULATOR_HOST: talk to this emulator, anonymously

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GcsSettings:
        return cls(
            project=_optional(env, "NSBI_GCS_PROJECT"),
            retry_deadline_s=_float(env, "NSBI_GCS_RETRY_DEADLINE_S", 120.0),
            emulator_host=_optional(env, "STORAGE_EMULATOR_HOST"),
        )


@dataclass(frozen=True)
class WorkerSettings:
    """A worker process (`nsbi worker`); the launcher sets the last two for it."""

    interval_s: float = 5.0  # NSBI_WORKER_INTERVAL_S: seconds between heartbeats/flushes
    stop_grace_s: float = 15.0  # NSBI_WORKER_STOP_GRACE_S: checkpoint time after a stop request
    instance_id: str | None = None  # NSBI_INSTANCE_ID (set by the launcher)
    # CUDA_VISIBLE_DEVICES (set by the local launcher): its numeric entries; None when unset (all GPUs)
    visible_gpus: tuple[int, ...] | None = None
    # NSBI_JOB_KIND_MODULES: importable modules whose `KINDS` dicts add job kinds (tests, plug-ins)
    job_kind_modules: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WorkerSettings:
        cuda = env.get("CUDA_VISIBLE_DEVICES")
        visible = (
            None
            if cuda is None
            else tuple(int(p) for p in (s.strip() for s in cuda.split(",")) if p.isdecimal())
        )
        return cls(
            interval_s=_float(env, "NSBI_WORKER_INTERVAL_S", 5.0),
            stop_grace_s=_float(env, "NSBI_WORKER_STOP_GRACE_S", 15.0),
            instance_id=_optional(env, "NSBI_INSTANCE_ID"),
            visible_gpus=visible,
            job_kind_modules=tuple(
                m.strip() for m in env.get("NSBI_JOB_KIND_MODULES", "").split(",") if m.strip()
            ),
        )


@dataclass(frozen=True)
class DashboardSettings:
    """The Streamlit dashboard."""

    # NSBI_DASHBOARD_PASSWORD: the login when bound to a non-loopback address (secrets.toml's
    # dashboard_password wins); kept out of repr so it never lands in a log
    password: str | None = field(default=None, repr=False)
    # NSBI_DASHBOARD_ALLOWED_HOSTS: host names the dashboard answers to besides the loopback
    # names (Streamlit's server.allowedHosts, set by `nsbi up`); () means the bind address, or
    # for all interfaces this machine's names and addresses; `*` turns the check off
    allowed_hosts: tuple[str, ...] = ()
    # NSBI_ANALYSIS_DIR: the only folder whose analysis files the dashboard opens by path
    # (None: <NSBI_HOME>/analyses, where uploads are kept; see `Settings.analysis_dir`)
    analysis_dir: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DashboardSettings:
        folder = _optional(env, "NSBI_ANALYSIS_DIR")
        return cls(
            password=_optional(env, "NSBI_DASHBOARD_PASSWORD"),
            allowed_hosts=_list(env, "NSBI_DASHBOARD_ALLOWED_HOSTS"),
            analysis_dir=Path(folder).expanduser().resolve() if folder else None,
        )


# ----------------------------------------------------------------------------- all of them


@dataclass(frozen=True)
class Settings:
    """Every setting of this process.

    home: `NSBI_HOME` (default `./var`), the root for the default database and store.
    database_url: `DATABASE_URL` (default `sqlite:///<home>/nsbi.db`, WAL mode).
    store_uri: `NSBI_STORE` (default `file://<home>/store`), the artifact store root.
    prices: `NSBI_PRICES` (default None: the shipped `backend/data/prices.toml`).
    browser_path: `BROWSER_PATH` (default None: look for Chromium), the browser kaleido drives.
    local, controller, gce, gcs, worker, dashboard: the groups above.
    """

    home: Path
    database_url: str
    store_uri: str
    prices: Path | None = None
    browser_path: str | None = None
    local: LocalLauncherSettings = field(default_factory=LocalLauncherSettings)
    controller: ControllerSettings = field(default_factory=ControllerSettings)
    gce: GceSettings = field(default_factory=GceSettings)
    gcs: GcsSettings = field(default_factory=GcsSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env.get("NSBI_HOME") or "var").expanduser().resolve()
        database_url = env.get("DATABASE_URL") or f"sqlite:///{home / 'nsbi.db'}"
        store_uri = env.get("NSBI_STORE") or f"file://{home / 'store'}"
        prices = _optional(env, "NSBI_PRICES")
        return cls(
            home=home,
            database_url=database_url,
            store_uri=store_uri,
            prices=Path(prices) if prices else None,
            browser_path=_optional(env, "BROWSER_PATH"),
            local=LocalLauncherSettings.from_env(env),
            controller=ControllerSettings.from_env(env),
            gce=GceSettings.from_env(env),
            gcs=GcsSettings.from_env(env),
            worker=WorkerSettings.from_env(env),
            dashboard=DashboardSettings.from_env(env),
        )

    @property
    def analysis_dir(self) -> Path:
        """The folder the dashboard opens analysis files from (`NSBI_ANALYSIS_DIR`, else
        `<home>/analyses`, the folder uploads are kept in)."""
        return self.dashboard.analysis_dir or self.home / "analyses"


def get_settings() -> Settings:
    """The settings of the current process environment (read afresh on every call)."""
    return Settings.from_env()
