"""GCE launcher: one spot VM per job attempt, found again by its labels.

How it maps the :class:`~backend.launchers.base.Launcher` contract onto Compute Engine:

- **launch** queues an ``instances.insert`` on a thread pool and returns at once, so the
  controller can request hundreds of VMs per tick; :meth:`GceLauncher.launch_many` waits until
  every insert has been accepted. The VM name is the deterministic instance id, and before
  inserting the launcher consults one aggregated listing of its own VMs (label ``nsbi_owner``),
  so a restarted controller finds the VM it started instead of starting a second one.
- **zones**: the insert's operation is watched on a second pool; a stockout or quota error
  (``ZONE_RESOURCE_POOL_EXHAUSTED``, ``QUOTA_EXCEEDED``, synchronous or in the operation) moves
  on to the next configured zone and the reason is kept (``InstanceStatus.detail`` and
  ``attempts/<n>/provision.json`` in the store). When every zone said no, it waits
  ``capacity_backoff_s`` and tries them again until ``provision_timeout_s``.
- **poll** lists the owner's VMs once (aggregated list filtered by label) and maps raw states:
  PROVISIONING/STAGING -> PENDING, RUNNING/STOPPING -> RUNNING, TERMINATED (the startup script
  powers the VM off when the worker exits) -> EXITED and the VM is deleted. A VM that vanished
  is PREEMPTED when a ``compute.instances.preempted`` zone operation names it, or when it
  vanished without an ``exit.json`` in the store (spot VMs with termination action DELETE
  disappear on preemption); GONE when it outlived its max run duration or never existed.
- **cancel** deletes the VM: GCE powers it off gracefully first (ACPI), which sends the worker
  SIGTERM so it checkpoints.

The google-cloud-compute SDK is imported inside this module only.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from backend.launchers.base import (
    CapacityError,
    InstanceState,
    InstanceStatus,
    LauncherError,
    LaunchHandle,
    LaunchRequest,
    sequence_of,
)
from backend.launchers.gce_spec import (
    GceConfig,
    MachineSpec,
    build_instance,
    capacity_code,
    config_from_env,
    label_value,
    machine_for,
    operation_errors,
    vm_name,
)
from backend.stores import layout

log = logging.getLogger("nsbi.launcher.gce")

# record phases
QUEUED, INSERTING, WATCHING, CREATED, BACKOFF, FAILED, DELETING = (
    "queued",
    "inserting",
    "watching",
    "created",
    "backoff",
    "failed",
    "deleting",
)
_ACTIVE_PHASES = (QUEUED, INSERTING, WATCHING, CREATED, BACKOFF)
_PENDING_RAW = ("PROVISIONING", "STAGING", "REPAIRING", "PENDING")
_RUNNING_RAW = ("RUNNING", "STOPPING", "SUSPENDING")
_ENDED_RAW = ("TERMINATED", "STOPPED", "SUSPENDED")
PREEMPTED_OP = "compute.instances.preempted"
LIST_PAGE_SIZE = 500  # the API's maximum page of an aggregated listing


def provision_key(attempt: int) -> str:
    """Where the zone history of an attempt is kept, next to its exit.json."""
    return f"{layout.attempt_prefix(attempt)}/provision.json"


@dataclass
class _Rec:
    """What this launcher knows about one VM beyond what the cloud listing says."""

    name: str
    campaign: str
    job: str
    attempt: int
    job_uri: str
    machine: MachineSpec | None = None
    request: LaunchRequest | None = None
    phase: str = QUEUED
    zone: str | None = None
    op: str | None = None
    zone_index: int = 0
    tries: int = 0
    reasons: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    next_try: float = 0.0
    max_run_s: float | None = None
    seen_in_cloud: bool = False
    ended: str = ""  # why we deleted it ("exited", "cancelled", ...)
    final: InstanceStatus | None = None  # settled verdict once the VM is gone
    inserted: threading.Event = field(default_factory=threading.Event)

    def common(self) -> dict[str, Any]:
        return {"campaign": self.campaign, "job": self.job, "attempt": self.attempt}


@dataclass(frozen=True)
class _CloudVM:
    name: str
    zone: str
    status: str
    labels: Mapping[str, str]
    metadata: Mapping[str, str]
    created: str


class GceLauncher:
    """Runs each attempt on its own Compute Engine VM (see the module docstring)."""

    name = "gce"

    def __init__(
        self,
        config: GceConfig,
        *,
        instances_client: Any = None,
        operations_client: Any = None,
        credentials: Any = None,
        store_opener: Any = None,
    ) -> None:
        self.config = config
        self._instances = instances_client
        self._operations = operations_client
        self._credentials = credentials
        self._store_opener = store_opener
        self._lock = threading.RLock()
        self._recs: dict[str, _Rec] = {}
        self._cloud: dict[str, _CloudVM] = {}
        self._cloud_at = 0.0
        self._list_lock = threading.Lock()
        self._client_lock = threading.Lock()
        self._insert_pool = ThreadPoolExecutor(
            config.insert_threads, thread_name_prefix="gce-insert"
        )
        self._watch_pool = ThreadPoolExecutor(config.watch_threads, thread_name_prefix="gce-watch")
        self._closed = False

    # ------------------------------------------------------------------ SDK clients
    def _transport_kwargs(self) -> dict[str, Any]:
        if self.config.endpoint:
            from google.auth.credentials import AnonymousCredentials

            creds = self._credentials or AnonymousCredentials()
            return {
                "host": self.config.endpoint,
                "credentials": creds,
                "url_scheme": self.config.url_scheme,
            }
        return {"credentials": self._credentials} if self._credentials else {}

    def _widen_pool(self, transport: Any) -> None:
        """Let every pool thread keep its own connection (requests defaults to 10)."""
        session = getattr(transport, "_session", None)
        if session is not None:
            from requests.adapters import HTTPAdapter

            size = self.config.insert_threads + self.config.watch_threads + 4
            for prefix in ("http://", "https://"):
                session.mount(prefix, HTTPAdapter(pool_connections=4, pool_maxsize=size))

    @property
    def instances(self) -> Any:
        with self._client_lock:
            return self._instances_client()

    @property
    def operations(self) -> Any:
        with self._client_lock:
            return self._operations_client()

    def _instances_client(self) -> Any:
        if self._instances is None:
            from google.cloud import compute_v1
            from google.cloud.compute_v1.services.instances.transports.rest import (
                InstancesRestTransport,
            )

            transport = InstancesRestTransport(**self._transport_kwargs())
            self._widen_pool(transport)
            self._instances = compute_v1.InstancesClient(transport=transport)
        return self._instances

    def _operations_client(self) -> Any:
        if self._operations is None:
            from google.cloud import compute_v1
            from google.cloud.compute_v1.services.zone_operations.transports.rest import (
                ZoneOperationsRestTransport,
            )

            transport = ZoneOperationsRestTransport(**self._transport_kwargs())
            self._widen_pool(transport)
            self._operations = compute_v1.ZoneOperationsClient(transport=transport)
        return self._operations

    # ------------------------------------------------------------------ listing
    def _refresh(self, *, force: bool = False) -> dict[str, _CloudVM]:
        """One aggregated listing of this owner's VMs (reused for ``list_ttl_s``)."""
        with self._list_lock:
            if not force and time.monotonic() - self._cloud_at < self.config.list_ttl_s:
                return self._cloud
            from google.api_core import exceptions as gexc

            out: dict[str, _CloudVM] = {}
            try:
                pager = self.instances.aggregated_list(
                    request={
                        "project": self.config.project,
                        "max_results": LIST_PAGE_SIZE,
                        "filter": f'labels.nsbi_owner = "{label_value(self.config.owner)}"',
                    }
                )
                for scope, scoped in pager:
                    for inst in scoped.instances:
                        zone = (
                            inst.zone.rsplit("/", 1)[-1] if inst.zone else scope.rsplit("/", 1)[-1]
                        )
                        meta = (
                            {i.key: i.value for i in inst.metadata.items} if inst.metadata else {}
                        )
                        meta.pop("startup-script", None)
                        out[inst.name] = _CloudVM(
                            inst.name,
                            zone,
                            inst.status,
                            dict(inst.labels),
                            meta,
                            inst.creation_timestamp,
                        )
            except gexc.GoogleAPICallError as exc:
                raise LauncherError(
                    f"gce launcher: listing instances of project {self.config.project} "
                    f"failed: {exc}"
                ) from exc
            self._cloud, self._cloud_at = out, time.monotonic()
            with self._lock:
                for vm in out.values():
                    rec = self._recs.get(vm.name)
                    if rec is None:
                        rec = self._rec_from_cloud(vm)
                        self._recs[vm.name] = rec
                    rec.seen_in_cloud = True
                    rec.zone = vm.zone
            return out

    def _rec_from_cloud(self, vm: _CloudVM) -> _Rec:
        """A VM started by an earlier launcher process (controller restart)."""
        return _Rec(
            name=vm.name,
            campaign=vm.labels.get("nsbi_campaign", ""),
            job=vm.labels.get("nsbi_job", ""),
            attempt=int(vm.labels.get("nsbi_attempt", "0") or 0),
            job_uri=vm.metadata.get("nsbi-job-uri", ""),
            phase=CREATED,
            zone=vm.zone,
            seen_in_cloud=True,
        )

    # ------------------------------------------------------------------ launch
    def launch(self, request: LaunchRequest) -> LaunchHandle:
        """Queue the VM insert (see module docstring); idempotent by VM name."""
        if self._closed:
            raise LauncherError("gce launcher: closed")
        name = vm_name(request.instance_id)
        with self._lock:
            rec = self._recs.get(name)
        if rec is None:
            self._refresh()
            with self._lock:
                rec = self._recs.get(name)
        if rec is not None and rec.phase != FAILED:
            return LaunchHandle(
                name,
                self.name,
                already_running=True,
                detail=f"VM {name} already {rec.phase}" + (f" in {rec.zone}" if rec.zone else ""),
            )
        slots = self.free_slots(refresh=False)
        if slots is not None and slots <= 0:
            raise CapacityError(
                f"gce launcher: {self.config.max_instances} VMs already requested; {name} waits"
            )
        machine = machine_for(request, self.config.machine, self.config.zones)
        build_instance(
            self.config, request, machine, machine.zones[0]
        )  # fail fast on a bad request
        limit = (
            (request.time_limit_s + self.config.time_limit_grace_s)
            if request.time_limit_s
            else None
        )
        rec = _Rec(
            name=name,
            campaign=request.campaign,
            job=request.job,
            attempt=request.attempt,
            job_uri=request.job_uri,
            machine=machine,
            request=request,
            max_run_s=min(limit or self.config.max_run_duration_s, self.config.max_run_duration_s),
        )
        with self._lock:
            self._recs[name] = rec
        self._insert_pool.submit(self._provision, rec)
        return LaunchHandle(
            name, self.name, detail=f"insert queued (zones {', '.join(machine.zones)})"
        )

    def launch_many(
        self, requests: Iterable[LaunchRequest], *, timeout: float | None = None
    ) -> list[LaunchHandle]:
        """Launch all, then wait until every insert request has been accepted (or refused)."""
        handles = [self.launch(r) for r in requests]
        deadline = None if timeout is None else time.monotonic() + timeout
        for h in handles:
            rec = self._recs.get(h.instance_id)
            if rec is not None and not h.already_running:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not rec.inserted.wait(left):
                    raise LauncherError(
                        f"gce launcher: insert of {h.instance_id} not answered within {timeout} s"
                    )
        return handles

    def _provision(self, rec: _Rec) -> None:
        """Insert ``rec`` in the next zone that accepts it (runs on the insert pool)."""
        from google.api_core import exceptions as gexc

        machine, request = rec.machine, rec.request
        if machine is None or request is None:  # (only launch() queues a VM, with both)
            raise LauncherError(f"gce launcher: {rec.name} has no launch request to insert")
        zones = machine.zones
        while rec.zone_index < len(zones):
            zone = zones[rec.zone_index]
            rec.phase, rec.zone = INSERTING, zone
            body = build_instance(self.config, request, machine, zone)
            rec.tries += 1  # a new id per try: GCE would answer a repeated id with the old (failed) operation
            request_id = str(
                uuid.uuid5(
                    uuid.NAMESPACE_URL,
                    f"{self.config.project}/{zone}/{rec.name}/{rec.started}/{rec.tries}",
                )
            )
            try:
                op = self._insert_with_retry(zone, body, request_id)
            except gexc.Conflict:
                rec.phase = CREATED  # it exists in this zone already (an earlier try got through)
                rec.inserted.set()
                return
            except gexc.GoogleAPICallError as exc:
                code = capacity_code(f"{exc} {getattr(exc, 'errors', '')}")
                if code is None:
                    self._fail(rec, f"insert in {zone} refused: {exc}")
                    return
                self._note(rec, zone, code, str(exc))
                rec.zone_index += 1
                continue
            except Exception as exc:  # network down etc.: report, do not kill the pool thread
                self._fail(rec, f"insert in {zone} failed: {type(exc).__name__}: {exc}")
                return
            rec.op, rec.phase = op.name, WATCHING
            rec.inserted.set()
            self._watch_pool.submit(self._watch, rec, zone, op)
            return
        self._all_zones_refused(rec)

    def _insert_with_retry(self, zone: str, body: Any, request_id: str) -> Any:
        """Insert; retry 429/5xx a few times (safe: the name and request id make it idempotent)."""
        from google.api_core import exceptions as gexc
        from google.cloud import compute_v1

        delay = 0.5
        for i in range(5):
            try:
                return self.instances.insert_unary(
                    request=compute_v1.InsertInstanceRequest(
                        project=self.config.project,
                        zone=zone,
                        instance_resource=body,
                        request_id=request_id,
                    )
                )
            except (
                gexc.TooManyRequests,
                gexc.ServiceUnavailable,
                gexc.InternalServerError,
                gexc.BadGateway,
            ):
                if i == 4:
                    raise
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def _watch(self, rec: _Rec, zone: str, op: Any) -> None:
        """Wait for the insert operation; on a capacity error go on to the next zone."""
        from google.cloud import compute_v1

        deadline = time.monotonic() + 600
        try:
            while op.status != compute_v1.Operation.Status.DONE and time.monotonic() < deadline:
                op = self.operations.wait(project=self.config.project, zone=zone, operation=op.name)
        except Exception as exc:
            rec.phase = CREATED  # unknown; the listing will tell
            log.warning(
                "gce launcher: watching the insert of %s in %s failed: %s", rec.name, zone, exc
            )
            return
        errors = operation_errors(op)
        if not errors:
            rec.phase = CREATED
            if rec.reasons:
                self._record_provision(rec)
            return
        text = "; ".join(f"{c}: {m}" for c, m in errors)
        code = next(
            (capacity_code(c) or capacity_code(m) for c, m in errors if capacity_code(f"{c} {m}")),
            None,
        )
        if code is None:
            self._fail(rec, f"insert in {zone} failed: {text}")
            return
        self._note(rec, zone, code, text)
        rec.zone_index += 1
        if rec.zone_index < len(rec.machine.zones if rec.machine else ()):
            self._insert_pool.submit(self._provision, rec)
        else:
            self._all_zones_refused(rec)

    def _note(self, rec: _Rec, zone: str, code: str, message: str) -> None:
        reason = f"{zone}: {code}"
        rec.reasons.append(reason)
        log.info(
            "gce launcher: %s: %s (%s); trying the next zone",
            rec.name,
            reason,
            message.splitlines()[0][:200],
        )
        self._record_provision(rec)

    def _all_zones_refused(self, rec: _Rec) -> None:
        rec.inserted.set()
        if (
            time.time() - rec.started + self.config.capacity_backoff_s
            > self.config.provision_timeout_s
        ):
            self._fail(
                rec,
                "no zone had capacity within the provisioning timeout: " + "; ".join(rec.reasons),
            )
            return
        rec.phase, rec.zone, rec.next_try = (
            BACKOFF,
            None,
            time.time() + self.config.capacity_backoff_s,
        )

    def _fail(self, rec: _Rec, why: str) -> None:
        rec.reasons.append(why)
        rec.phase = FAILED
        rec.inserted.set()
        log.warning("gce launcher: %s: %s", rec.name, why)
        self._record_provision(rec)

    def _record_provision(self, rec: _Rec) -> None:
        """Keep the zone history next to the attempt (best effort: the launch goes on without it)."""
        if not rec.job_uri:
            return
        try:
            store = self._open_store(rec.job_uri)
            from backend.stores.base import put_json

            put_json(
                store,
                provision_key(rec.attempt),
                {
                    "instance": rec.name,
                    "zones": list(rec.machine.zones) if rec.machine else [],
                    "refusals": list(rec.reasons),
                    "phase": rec.phase,
                    "zone": rec.zone,
                    "t": time.time(),
                },
            )
        except Exception as exc:
            log.warning(
                "gce launcher: could not record the provisioning history of %s: %s", rec.name, exc
            )

    def _open_store(self, uri: str) -> Any:
        if self._store_opener is not None:
            return self._store_opener(uri)
        from backend.stores import open_store

        return open_store(uri)

    def _retry_backoffs(self) -> None:
        now = time.time()
        with self._lock:
            due = [r for r in self._recs.values() if r.phase == BACKOFF and r.next_try <= now]
            for r in due:
                r.phase, r.zone_index = QUEUED, 0
        for r in due:
            self._insert_pool.submit(self._provision, r)

    # ------------------------------------------------------------------ status
    def _exit_recorded(self, rec: _Rec) -> bool:
        if not rec.job_uri:
            return False
        try:
            return self._open_store(rec.job_uri).exists(layout.exit_key(rec.attempt))
        except Exception:
            return False

    def _preempted_ops(self, zones: set[str]) -> dict[str, str]:
        """VM name -> zone for every ``compute.instances.preempted`` operation in ``zones``."""
        out: dict[str, str] = {}
        for zone in sorted(zones):
            try:
                for op in self.operations.list(
                    request={
                        "project": self.config.project,
                        "zone": zone,
                        "filter": f'operationType = "{PREEMPTED_OP}"',
                    }
                ):
                    out[op.target_link.rsplit("/", 1)[-1]] = zone
            except Exception as exc:
                log.warning("gce launcher: cannot list preemptions in %s: %s", zone, exc)
        return out

    def _status_of(
        self, name: str, cloud: Mapping[str, _CloudVM], preempted: Mapping[str, str] | None
    ) -> InstanceStatus:
        with self._lock:
            rec = self._recs.get(name)
        vm = cloud.get(name)
        common = rec.common() if rec else {}
        if vm is not None:
            if rec is not None and rec.ended == "exited":
                return InstanceStatus(
                    name,
                    InstanceState.EXITED,
                    None,
                    f"VM powered off in {vm.zone}; being deleted",
                    **common,
                )
            if vm.status in _PENDING_RAW:
                return InstanceStatus(
                    name, InstanceState.PENDING, None, f"{vm.status} in {vm.zone}", **common
                )
            if vm.status in _RUNNING_RAW:
                return InstanceStatus(
                    name, InstanceState.RUNNING, None, f"{vm.status} in {vm.zone}", **common
                )
            if vm.status in _ENDED_RAW:
                if preempted and name in preempted:
                    self._delete_async(name, vm.zone, "preempted")
                    return InstanceStatus(
                        name,
                        InstanceState.PREEMPTED,
                        None,
                        f"spot VM preempted in {vm.zone}",
                        **common,
                    )
                self._delete_async(name, vm.zone, "exited")
                return InstanceStatus(
                    name,
                    InstanceState.EXITED,
                    None,
                    f"VM powered off in {vm.zone}; deleting it",
                    **common,
                )
            return InstanceStatus(
                name, InstanceState.RUNNING, None, f"{vm.status} in {vm.zone}", **common
            )
        if rec is None:
            if preempted is not None and name in preempted:
                return InstanceStatus(
                    name,
                    InstanceState.PREEMPTED,
                    None,
                    f"spot VM preempted in {preempted[name]} (seen in its zone's operations)",
                )
            return InstanceStatus(name, InstanceState.GONE, None, "no such VM")
        if rec.final is not None:
            return rec.final
        st = self._vanished_status(rec, preempted)
        if st.state is not InstanceState.PENDING and rec.phase not in (
            QUEUED,
            INSERTING,
            WATCHING,
            BACKOFF,
        ):
            rec.final = st  # settled: later polls answer the same, and it no longer takes a slot
        return st

    def _vanished_status(self, rec: _Rec, preempted: Mapping[str, str] | None) -> InstanceStatus:
        """Status of a VM the listing does not show (queued, refused, deleted or vanished)."""
        name, common = rec.name, rec.common()
        history = f" (after {'; '.join(rec.reasons)})" if rec.reasons else ""
        if rec.phase in (QUEUED, INSERTING, WATCHING):
            where = f" in {rec.zone}" if rec.zone else ""
            return InstanceStatus(
                name, InstanceState.PENDING, None, f"requesting VM{where}{history}", **common
            )
        if rec.phase == BACKOFF:
            return InstanceStatus(
                name,
                InstanceState.PENDING,
                None,
                f"waiting for capacity; refused by {'; '.join(rec.reasons)}",
                **common,
            )
        if rec.phase == FAILED:
            return InstanceStatus(
                name,
                InstanceState.GONE,
                None,
                rec.reasons[-1] if rec.reasons else "failed",
                **common,
            )
        if rec.ended == "preempted":
            return InstanceStatus(
                name, InstanceState.PREEMPTED, None, "spot VM preempted", **common
            )
        if rec.ended:
            return InstanceStatus(
                name, InstanceState.EXITED, None, f"VM deleted ({rec.ended})", **common
            )
        # created (or seen) and now missing from the listing, not deleted by us
        if not rec.seen_in_cloud and time.time() - rec.started < 30:
            return InstanceStatus(
                name, InstanceState.PENDING, None, "inserted; not listed yet", **common
            )
        if preempted is not None and name in preempted:
            return InstanceStatus(
                name,
                InstanceState.PREEMPTED,
                None,
                f"spot VM preempted in {preempted[name]}{history}",
                **common,
            )
        if rec.max_run_s and time.time() - rec.started >= rec.max_run_s:
            return InstanceStatus(
                name,
                InstanceState.GONE,
                None,
                f"deleted by GCE after its max run duration of {rec.max_run_s:.0f} s",
                **common,
            )
        if self._exit_recorded(rec):
            return InstanceStatus(
                name,
                InstanceState.EXITED,
                None,
                "VM gone after the worker wrote exit.json",
                **common,
            )
        return InstanceStatus(
            name,
            InstanceState.PREEMPTED,
            None,
            "VM vanished without an exit record (spot VMs are deleted on preemption)",
            **common,
        )

    def _statuses(self, ids: Sequence[str]) -> dict[str, InstanceStatus]:
        """Statuses keyed by the ids given (raw instance ids or VM names alike)."""
        self._retry_backoffs()
        names = [vm_name(i) for i in ids]
        cloud = self._refresh()
        with self._lock:
            vanished_zones = {
                r.zone
                for n in names
                if (r := self._recs.get(n))
                and r.zone
                and n not in cloud
                and r.phase == CREATED
                and not r.ended
            }
            ended_zones = {
                cloud[n].zone for n in names if n in cloud and cloud[n].status in _ENDED_RAW
            }
            unknown = any(n not in cloud and n not in self._recs for n in names)
        # a VM this process never saw (controller restarted after it vanished): look everywhere
        zones = vanished_zones | ended_zones | (set(self.config.zones) if unknown else set())
        preempted = self._preempted_ops(zones) if zones else None
        return {i: self._status_of(n, cloud, preempted) for i, n in zip(ids, names)}

    def poll(self, instance_ids: Sequence[str] | str) -> dict[str, InstanceStatus]:
        return self._statuses(sequence_of(instance_ids))

    def list_instances(self, campaign: str | None = None) -> list[InstanceStatus]:
        cloud = self._refresh()
        with self._lock:
            names = sorted(
                set(cloud) | {n for n, r in self._recs.items() if r.phase in _ACTIVE_PHASES}
            )
        want = label_value(campaign) if campaign is not None else None
        out = []
        for st in self._statuses(names).values():
            if want is None or label_value(st.campaign or "") == want:
                out.append(st)
        return out

    def free_slots(self, *, refresh: bool = True) -> int | None:
        if self.config.max_instances is None:
            return None
        cloud = self._refresh() if refresh else self._cloud
        with self._lock:
            busy = {
                n
                for n, r in self._recs.items()
                if r.phase in _ACTIVE_PHASES and not r.ended and r.final is None
            }
        busy |= {n for n, vm in cloud.items() if vm.status not in _ENDED_RAW}
        return max(0, self.config.max_instances - len(busy))

    # ------------------------------------------------------------------ stop
    def _delete_async(self, name: str, zone: str, why: str) -> None:
        with self._lock:
            rec = self._recs.get(name)
            if rec is not None:
                if rec.ended:
                    return
                rec.ended = why
        self._watch_pool.submit(self._delete, name, zone)

    def _delete(self, name: str, zone: str) -> None:
        from google.api_core import exceptions as gexc

        try:
            self.instances.delete_unary(project=self.config.project, zone=zone, instance=name)
        except gexc.NotFound:
            pass
        except Exception as exc:
            log.warning(
                "gce launcher: deleting %s in %s failed: %s (retried on the next poll)",
                name,
                zone,
                exc,
            )
            with self._lock:
                rec = self._recs.get(name)
                if rec is not None:
                    rec.ended = ""

    def cancel(self, instance_id: str, *, reason: str = "cancelled") -> None:
        """Delete the VM (GCE shuts it down gracefully first); a queued insert is dropped."""
        name = vm_name(instance_id)
        cloud = self._refresh(force=True)
        with self._lock:
            rec = self._recs.get(name)
            if rec is not None and rec.phase in (QUEUED, BACKOFF):
                rec.phase, rec.ended = FAILED, reason
                rec.reasons.append(reason)
                rec.inserted.set()
                return
        zone = cloud[name].zone if name in cloud else (rec.zone if rec else None)
        if zone is None:
            return
        if rec is not None and rec.phase in (INSERTING, WATCHING):
            rec.inserted.wait(30)
        self._delete_async(name, zone, reason)

    kill = cancel

    def close(self, *, wait_pending: bool = False) -> None:
        """Stop the thread pools (running inserts finish)."""
        self._closed = True
        self._insert_pool.shutdown(wait=wait_pending, cancel_futures=not wait_pending)
        self._watch_pool.shutdown(wait=wait_pending, cancel_futures=not wait_pending)

    def delete_all(self, campaign: str | None = None, *, timeout: float = 60.0) -> int:
        """Delete every VM of this owner (optionally one campaign); return how many were asked."""
        cloud = self._refresh(force=True)
        want = label_value(campaign) if campaign is not None else None
        names = [
            n for n, vm in cloud.items() if want is None or vm.labels.get("nsbi_campaign") == want
        ]
        futures = [self._watch_pool.submit(self._delete, n, cloud[n].zone) for n in names]
        with self._lock:
            for n in names:
                if n in self._recs:
                    self._recs[n].ended = self._recs[n].ended or "deleted"
        wait(futures, timeout=timeout)
        return len(names)

    def provision_history(self, instance_id: str) -> list[str]:
        """Zone refusals seen for this VM ("zone: CODE"), oldest first."""
        rec = self._recs.get(vm_name(instance_id))
        return list(rec.reasons) if rec else []

    def __repr__(self) -> str:
        return f"GceLauncher(project={self.config.project!r}, zones={list(self.config.zones)!r})"


def from_settings(settings: Any, **overrides: Any) -> GceLauncher:
    """Registry factory: config from ``get_settings().gce`` (``NSBI_GCE_*`` of this process's
    environment, see docs/gcp.md) or from an ``env_vars`` mapping; keyword overrides win.

    Overrides that are not :class:`GceConfig` fields (``instances_client``,
    ``operations_client``, ``credentials``, ``store_opener``) go to the launcher itself.
    """
    extra = {
        k: overrides.pop(k)
        for k in ("instances_client", "operations_client", "credentials", "store_opener")
        if k in overrides
    }
    env = dict(overrides.pop("env_vars", {}) or {})
    config = overrides.pop("config", None) or config_from_env(env or None, **overrides)
    return GceLauncher(config, **extra)
