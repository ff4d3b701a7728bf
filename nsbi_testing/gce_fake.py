"""A loopback fake of the Compute Engine REST API, for tests and ``nsbi bench launch``.

The real google-cloud-compute client talks to it (REST transport, ``url_scheme="http"``,
``host="127.0.0.1:<port>"``, anonymous credentials). It keeps instances and zone operations,
parses every request body into the ``compute_v1`` message types (unknown or malformed fields
are a 400, as with the real API), answers aggregated listings with label filters, and can:

- **boot** a VM by running its ``startup-script`` metadata as a local ``bash`` process, with
  ``NSBI_METADATA_URL`` pointing at a per-VM metadata endpoint served here (``boot=True``);
  when the script exits the VM goes TERMINATED, as after the guest's ``shutdown -h now``;
- **preempt** a VM: SIGTERM to its process group, SIGKILL after ``grace_s``, a
  ``compute.instances.preempted`` operation, then deletion (termination action DELETE);
- refuse inserts in a zone with ``ZONE_RESOURCE_POOL_EXHAUSTED`` (in the operation, as GCE
  does) or ``QUOTA_EXCEEDED`` (a synchronous 403 or an operation error), or answer them with a
  transient 503 (``BACKEND_ERROR``).

With ``boot=False`` (the bench) VMs go straight to RUNNING and nothing is started.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_ZONE = re.compile(r"^[a-z]+-[a-z]+\d+-[a-z]$")
_API = "/compute/v1/projects/"


class LoopbackServer(ThreadingHTTPServer):
    """A threaded loopback HTTP server for fakes: a deep accept queue (hundreds of concurrent
    inserts), daemon threads, and silence when a client drops its connection at shutdown."""

    request_queue_size = 512
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001 - socketserver's signature
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


class ApiError(Exception):
    def __init__(self, code: int, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason

    def body(self) -> dict:
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "errors": [{"message": self.message, "domain": "global", "reason": self.reason}],
            }
        }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class FakeVM:
    name: str
    zone: str
    body: dict
    status: str = "PROVISIONING"
    proc: subprocess.Popen | None = None
    exit_code: int | None = None
    stopping: bool = False

    @property
    def metadata(self) -> dict[str, str]:
        return {
            i.get("key"): i.get("value", "")
            for i in (self.body.get("metadata") or {}).get("items", [])
        }

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.body.get("labels") or {})


@dataclass
class ZoneFailure:
    code: str  # ZONE_RESOURCE_POOL_EXHAUSTED | QUOTA_EXCEEDED | BACKEND_ERROR (a 503)
    sync: bool = False  # a synchronous HTTP error instead of a failed operation
    remaining: int | None = None  # None: every insert; n: the next n inserts


@dataclass
class FakeStats:
    inserts: int = 0
    inserts_by_zone: dict[str, int] = field(default_factory=dict)
    refused_by_zone: dict[str, int] = field(default_factory=dict)
    deletes: int = 0
    deleted: list[str] = field(default_factory=list)  # VM names deleted through the API
    requests: int = 0
    bad_requests: list[str] = field(default_factory=list)


class FakeCompute:
    """The fake service; ``start()`` returns the ``host:port`` to give the REST transport."""

    def __init__(
        self,
        *,
        project: str = "nsbi-test",
        boot: bool = False,
        grace_s: float = 2.0,
        boot_env: Mapping[str, str] | None = None,
        workdir: str | Path | None = None,
        op_delay_s: float = 0.0,
    ) -> None:
        self.project = project
        self.boot = boot
        self.grace_s = grace_s
        self.boot_env = dict(boot_env or {})
        self.op_delay_s = op_delay_s
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="fake-gce-"))
        self.vms: dict[tuple[str, str], FakeVM] = {}
        self.ops: dict[tuple[str, str], dict] = {}
        self.failures: dict[str, ZoneFailure] = {}
        self.stats = FakeStats()
        self.lock = threading.RLock()
        self._ids = itertools.count(1000)
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self, port: int = 0) -> str:
        fake = self

        class Handler(_Handler):
            service = fake

        self._server = LoopbackServer(("127.0.0.1", port), Handler)
        t = threading.Thread(target=self._server.serve_forever, name="fake-gce", daemon=True)
        t.start()
        return self.endpoint

    @property
    def port(self) -> int:
        assert self._server is not None, "FakeCompute not started"
        return self._server.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Kill every VM process still running and stop serving."""
        with self.lock:
            vms = list(self.vms.values())
        for vm in vms:
            self._signal(vm, signal.SIGKILL)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeCompute:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ injections
    def fail_zone(
        self,
        zone: str,
        code: str = "ZONE_RESOURCE_POOL_EXHAUSTED",
        *,
        sync: bool = False,
        times: int | None = None,
    ) -> None:
        """Refuse inserts in ``zone`` with ``code`` (every insert, or the next ``times``)."""
        with self.lock:
            self.failures[zone] = ZoneFailure(code, sync, times)

    def clear_failures(self) -> None:
        with self.lock:
            self.failures.clear()

    def find(self, name: str) -> FakeVM | None:
        with self.lock:
            return next((vm for (z, n), vm in self.vms.items() if n == name), None)

    def instances(self) -> list[FakeVM]:
        with self.lock:
            return list(self.vms.values())

    def preempt(self, name: str, *, grace_s: float | None = None) -> threading.Thread:
        """Preempt a spot VM as GCE does (SIGTERM, grace, SIGKILL, preempted op, delete)."""
        vm = self.find(name)
        if vm is None:
            raise KeyError(f"fake GCE: no VM named {name}")
        t = threading.Thread(
            target=self._preempt,
            args=(vm, self.grace_s if grace_s is None else grace_s),
            name=f"preempt-{name}",
            daemon=True,
        )
        t.start()
        self._threads.append(t)
        return t

    def _preempt(self, vm: FakeVM, grace: float) -> None:
        self._shutdown(vm, grace)
        self._new_op(vm.zone, "compute.instances.preempted", vm.name, done=True)
        action = (
            (vm.body.get("scheduling") or {}).get("instanceTerminationAction") or "STOP"
        ).upper()
        with self.lock:
            if action == "DELETE":
                self.vms.pop((vm.zone, vm.name), None)
            else:
                vm.status = "TERMINATED"

    # ------------------------------------------------------------------ VM processes
    def _signal(self, vm: FakeVM, sig: int) -> None:
        if vm.proc is not None and vm.proc.poll() is None:
            try:
                os.killpg(vm.proc.pid, sig)
            except ProcessLookupError:
                pass

    def _shutdown(self, vm: FakeVM, grace: float) -> None:
        """ACPI soft-off: SIGTERM the guest's processes, SIGKILL what is left after ``grace``."""
        with self.lock:
            vm.stopping = True
            vm.status = "STOPPING"
        if vm.proc is not None and vm.proc.poll() is None:
            self._signal(vm, signal.SIGTERM)
            try:
                vm.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal(vm, signal.SIGKILL)
                vm.proc.wait()

    def _boot(self, vm: FakeVM) -> None:
        script = vm.metadata.get("startup-script")
        if not script:
            with self.lock:
                vm.status = "RUNNING"
            return
        path = self.workdir / f"{vm.zone}-{vm.name}.sh"
        path.write_text(script)
        env = {
            **os.environ,
            "NSBI_GPU_WAIT_S": "0",
            **self.boot_env,
            "NSBI_NO_POWEROFF": "1",
            "NSBI_METADATA_URL": f"http://{self.endpoint}/fake-metadata/{vm.zone}/{vm.name}/computeMetadata/v1",
        }
        log = open(self.workdir / f"{vm.zone}-{vm.name}.log", "ab")
        with self.lock:
            vm.proc = subprocess.Popen(
                ["bash", str(path)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
            vm.status = "RUNNING"
        log.close()
        t = threading.Thread(target=self._reap, args=(vm,), name=f"vm-{vm.name}", daemon=True)
        t.start()

    def _reap(self, vm: FakeVM) -> None:
        proc = vm.proc
        assert proc is not None  # _boot sets vm.proc before it starts this thread
        rc = proc.wait()
        with self.lock:
            vm.exit_code = rc
            if not vm.stopping and self.vms.get((vm.zone, vm.name)) is vm:
                vm.status = "TERMINATED"  # the guest shut itself down

    def log_of(self, name: str) -> str:
        vm = self.find(name)
        if vm is None:
            hits = sorted(self.workdir.glob(f"*-{name}.log"))
            return hits[-1].read_text() if hits else ""
        p = self.workdir / f"{vm.zone}-{vm.name}.log"
        return p.read_text() if p.exists() else ""

    # ------------------------------------------------------------------ operations
    def _new_op(
        self,
        zone: str,
        kind: str,
        target: str,
        *,
        done: bool,
        error: dict | None = None,
        http_status: int | None = None,
    ) -> dict:
        name = f"operation-{next(self._ids)}-{kind.rsplit('.', 1)[-1]}"
        base = f"https://www.googleapis.com/compute/v1/projects/{self.project}/zones/{zone}"
        op: dict[str, Any] = {
            "kind": "compute#operation",
            "id": str(next(self._ids)),
            "name": name,
            "zone": base,
            "operationType": kind,
            "targetLink": f"{base}/instances/{target}",
            "status": "DONE" if done else "RUNNING",
            "progress": 100 if done else 0,
            "insertTime": _now(),
            "selfLink": f"{base}/operations/{name}",
        }
        if done:
            op["endTime"] = _now()
        if error:
            op["error"] = error
            op["httpErrorStatusCode"] = http_status or 503
            op["httpErrorMessage"] = (
                "SERVICE UNAVAILABLE" if (http_status or 503) == 503 else "FORBIDDEN"
            )
        with self.lock:
            self.ops[(zone, name)] = op
        return op

    def _finish_op(self, zone: str, name: str) -> None:
        with self.lock:
            op = self.ops[(zone, name)]
            op.update(status="DONE", progress=100, endTime=_now())

    # ------------------------------------------------------------------ API handlers
    def insert(self, project: str, zone: str, raw: bytes) -> dict:
        from google.cloud import compute_v1
        from google.protobuf.json_format import ParseError

        try:
            text = raw.decode()
            compute_v1.Instance.from_json(text)  # unknown fields / wrong types -> ParseError
            body = json.loads(text)
        except (ParseError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(
                400, f"Invalid JSON payload received. {str(exc).splitlines()[0]}", "badRequest"
            ) from exc
        self._validate(zone, body)
        name = body["name"]
        with self.lock:
            self.stats.inserts += 1
            self.stats.inserts_by_zone[zone] = self.stats.inserts_by_zone.get(zone, 0) + 1
            fail = self.failures.get(zone)
            if fail is not None and fail.remaining is not None:
                fail.remaining -= 1
                if fail.remaining < 0:
                    self.failures.pop(zone, None)
                    fail = None
            if fail is not None:
                self.stats.refused_by_zone[zone] = self.stats.refused_by_zone.get(zone, 0) + 1
                if (
                    fail.code == "BACKEND_ERROR"
                ):  # a transient server error, as GCE sometimes answers
                    raise ApiError(
                        503,
                        "Internal error. Please try again or contact Google Support.",
                        "backendError",
                    )
                if fail.sync:
                    raise ApiError(
                        403,
                        f"Quota 'NVIDIA_T4_GPUS' exceeded. Limit: 0.0 in region {zone[:-2]}.",
                        "quotaExceeded",
                    )
                msg = (
                    f"The zone 'projects/{project}/zones/{zone}' does not have enough resources available "
                    "to fulfill the request. Try a different zone, or try again later."
                    if fail.code.startswith("ZONE_RESOURCE_POOL")
                    else f"Quota 'NVIDIA_T4_GPUS' exceeded. Limit: 0.0 in region {zone[:-2]}."
                )
                return self._new_op(
                    zone,
                    "insert",
                    name,
                    done=True,
                    error={"errors": [{"code": fail.code, "message": msg}]},
                    http_status=503 if fail.code.startswith("ZONE") else 403,
                )
            if (zone, name) in self.vms:
                raise ApiError(
                    409,
                    f"The resource 'projects/{project}/zones/{zone}/instances/{name}' "
                    "already exists",
                    "alreadyExists",
                )
            base = f"https://www.googleapis.com/compute/v1/projects/{project}/zones/{zone}"
            body.update(
                kind="compute#instance",
                id=str(next(self._ids)),
                zone=base,
                status="PROVISIONING",
                selfLink=f"{base}/instances/{name}",
                creationTimestamp=_now(),
            )
            vm = FakeVM(name, zone, body)
            self.vms[(zone, name)] = vm
            op = self._new_op(zone, "insert", name, done=self.op_delay_s <= 0)
        if self.op_delay_s > 0:
            threading.Timer(self.op_delay_s, self._created, args=(vm, op["name"])).start()
        else:
            self._created(vm, None)
        return dict(op)

    def _created(self, vm: FakeVM, op_name: str | None) -> None:
        if self.boot:
            self._boot(vm)
        else:
            with self.lock:
                vm.status = "RUNNING"
        if op_name:
            self._finish_op(vm.zone, op_name)

    def _validate(self, zone: str, body: dict) -> None:
        """The checks the real API makes that our launcher could get wrong."""
        name = body.get("name", "")
        if not _NAME.match(name):
            raise ApiError(
                400,
                f"Invalid value for field 'resource.name': '{name}'. Must be a match of regex "
                "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'",
            )
        mt = body.get("machineType", "")
        if not re.search(rf"(^|/)zones/{re.escape(zone)}/machineTypes/[a-z0-9-]+$", mt):
            raise ApiError(400, f"Invalid value for field 'resource.machineType': '{mt}'.")
        disks = body.get("disks") or []
        if sum(1 for d in disks if d.get("boot")) != 1:
            raise ApiError(
                400, "Invalid value for field 'resource.disks': exactly one boot disk is required."
            )
        for d in disks:
            if d.get("boot") and not (d.get("initializeParams") or {}).get("sourceImage"):
                raise ApiError(
                    400, "Invalid value for field 'resource.disks[0].initializeParams.sourceImage'."
                )
        sched = body.get("scheduling") or {}
        accels = body.get("guestAccelerators") or []
        builtin = re.search(r"/machineTypes/(a2|a3|a4|g2)-", mt)
        if (accels or builtin) and (sched.get("onHostMaintenance") or "MIGRATE") != "TERMINATE":
            raise ApiError(400, "Instances with guest accelerators do not support live migration.")
        for a in accels:
            if not re.search(
                rf"(^|/)zones/{re.escape(zone)}/acceleratorTypes/[a-z0-9-]+$",
                a.get("acceleratorType", ""),
            ):
                raise ApiError(
                    400,
                    f"Invalid value for field 'resource.guestAccelerators[0].acceleratorType': "
                    f"'{a.get('acceleratorType')}'.",
                )
        if sched.get("provisioningModel") == "SPOT" and sched.get("automaticRestart"):
            raise ApiError(
                400,
                "Invalid value for field 'resource.scheduling.automaticRestart': Spot VMs "
                "cannot restart automatically.",
            )
        if sched.get("maxRunDuration") and not sched.get("instanceTerminationAction"):
            raise ApiError(400, "maxRunDuration requires instanceTerminationAction.")
        for k, v in (body.get("labels") or {}).items():
            if not re.match(r"^[a-z][a-z0-9_-]{0,62}$", k) or not re.match(
                r"^[a-z0-9_-]{0,63}$", v
            ):
                raise ApiError(400, f"Invalid value for field 'resource.labels': '{k}={v}'.")
        if not body.get("networkInterfaces"):
            raise ApiError(400, "At least one network interface is required.")
        for i, nic in enumerate(body["networkInterfaces"]):
            for j, ac in enumerate(nic.get("accessConfigs") or []):
                if ac.get("type", "ONE_TO_ONE_NAT") not in ("ONE_TO_ONE_NAT", "DIRECT_IPV6"):
                    raise ApiError(
                        400,
                        f"Invalid value for field 'resource.networkInterfaces[{i}]"
                        f".accessConfigs[{j}].type': '{ac.get('type')}'.",
                    )
        accounts = body.get("serviceAccounts") or []
        if len(accounts) > 1:
            raise ApiError(400, "At most one service account may be attached to an instance.")
        for sa in accounts:
            email = sa.get("email", "")
            if email != "default" and not re.match(r"^[^@\s]+@[^@\s]+$", email):
                raise ApiError(
                    400, f"Invalid value for field 'resource.serviceAccounts[0].email': '{email}'."
                )
            for j, scope in enumerate(sa.get("scopes") or []):
                if not scope.startswith("https://www.googleapis.com/auth/"):
                    raise ApiError(
                        400,
                        f"Invalid value for field 'resource.serviceAccounts[0].scopes[{j}]': "
                        f"'{scope}'.",
                    )

    def delete(self, zone: str, name: str) -> dict:
        with self.lock:
            vm = self.vms.get((zone, name))
            if vm is None:
                raise ApiError(
                    404,
                    f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}' "
                    "was not found",
                    "notFound",
                )
            self.stats.deletes += 1
            self.stats.deleted.append(name)
            op = self._new_op(zone, "delete", name, done=False)

        def work() -> None:
            self._shutdown(vm, self.grace_s)
            with self.lock:
                self.vms.pop((zone, name), None)
            self._finish_op(zone, op["name"])

        t = threading.Thread(target=work, name=f"delete-{name}", daemon=True)
        t.start()
        self._threads.append(t)
        return dict(op)

    def get(self, zone: str, name: str) -> dict:
        with self.lock:
            vm = self.vms.get((zone, name))
            if vm is None:
                raise ApiError(
                    404,
                    f"The resource 'projects/{self.project}/zones/{zone}/instances/{name}' "
                    "was not found",
                    "notFound",
                )
            return {**vm.body, "status": vm.status}

    def aggregated(self, query: dict[str, list[str]]) -> dict:
        flt = _Filter.parse((query.get("filter") or [""])[0])
        with self.lock:
            rows = sorted(
                ((vm.zone, vm.name, {**vm.body, "status": vm.status}) for vm in self.vms.values()),
                key=lambda r: (r[0], r[1]),
            )
        rows = [r for r in rows if flt.match(r[2])]
        start = int((query.get("pageToken") or ["0"])[0])
        size = int((query.get("maxResults") or ["500"])[0])
        page = rows[start : start + size]
        items: dict[str, dict] = {}
        for zone, _name, body in page:
            items.setdefault(f"zones/{zone}", {"instances": []})["instances"].append(body)
        out: dict[str, Any] = {
            "kind": "compute#instanceAggregatedList",
            "id": f"projects/{self.project}/aggregated/instances",
            "items": items,
        }
        if start + size < len(rows):
            out["nextPageToken"] = str(start + size)
        return out

    def list_zone(self, zone: str, query: dict[str, list[str]]) -> dict:
        flt = _Filter.parse((query.get("filter") or [""])[0])
        with self.lock:
            rows = [
                {**vm.body, "status": vm.status}
                for (z, _), vm in sorted(self.vms.items())
                if z == zone
            ]
        return {"kind": "compute#instanceList", "items": [r for r in rows if flt.match(r)]}

    def operation(self, zone: str, name: str, *, wait_s: float = 0.0) -> dict:
        deadline = time.monotonic() + wait_s
        while True:
            with self.lock:
                op = self.ops.get((zone, name))
                if op is None:
                    raise ApiError(
                        404,
                        f"The resource 'projects/{self.project}/zones/{zone}/operations/{name}' "
                        "was not found",
                        "notFound",
                    )
                if op["status"] == "DONE" or time.monotonic() >= deadline:
                    return dict(op)
            time.sleep(0.02)

    def list_ops(self, zone: str, query: dict[str, list[str]]) -> dict:
        flt = _Filter.parse((query.get("filter") or [""])[0])
        with self.lock:
            ops = [dict(op) for (z, _), op in sorted(self.ops.items()) if z == zone]
        return {"kind": "compute#operationList", "items": [op for op in ops if flt.match(op)]}

    def metadata_value(self, zone: str, name: str, path: str) -> str:
        with self.lock:
            vm = self.vms.get((zone, name))
            if vm is None:
                raise ApiError(404, "no such VM", "notFound")
            if path == "instance/name":
                return vm.name
            if path.startswith("instance/attributes/"):
                key = path[len("instance/attributes/") :]
                meta = vm.metadata
                if key in meta:
                    return meta[key]
        raise ApiError(404, f"metadata {path} not found", "notFound")


class _Filter:
    """The tiny part of the Compute filter language the launcher uses: ``field = "value"``
    terms (``=``, ``!=``, ``eq``, ``ne``), joined by AND or spaces; ``labels.k`` reaches labels."""

    TERM = re.compile(r'\(?\s*([A-Za-z_][\w.\-]*)\s*(=|!=|\beq\b|\bne\b)\s*"?([^"\s)]*)"?\s*\)?')
    FIELDS = {"name", "status", "zone", "operationType", "targetLink", "machineType"}

    def __init__(self, terms: list[tuple[str, str, str]]) -> None:
        self.terms = terms

    @classmethod
    def parse(cls, text: str) -> _Filter:
        text = text.strip()
        terms: list[tuple[str, str, str]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].lstrip().upper().startswith("AND "):
                pos = len(text) - len(text[pos:].lstrip()) + 4
                continue
            m = cls.TERM.match(text, pos)
            if not m or m.end() == pos:
                raise ApiError(
                    400,
                    f"Invalid value for field 'filter': '{text}'. Invalid list filter expression.",
                )
            path, op, value = m.groups()
            if path.split(".")[0] not in cls.FIELDS and not path.startswith("labels."):
                raise ApiError(
                    400, f"Invalid value for field 'filter': '{text}'. Invalid field name '{path}'."
                )
            terms.append((path, op, value))
            pos = m.end()
            while pos < len(text) and text[pos] == " ":
                pos += 1
        return cls(terms)

    def match(self, row: dict) -> bool:
        for path, op, value in self.terms:
            cur: Any = row
            for part in path.split("."):
                cur = cur.get(part) if isinstance(cur, dict) else None
            actual = "" if cur is None else str(cur)
            if op in ("=", "eq"):
                ok = actual == value if op == "=" else re.fullmatch(value, actual) is not None
            else:
                ok = actual != value if op == "!=" else re.fullmatch(value, actual) is None
            if not ok:
                return False
        return True


class _Handler(BaseHTTPRequestHandler):
    service: FakeCompute
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, code: int, payload: Any, *, text: bool = False) -> None:
        data = payload.encode() if text else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain" if text else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _route(self, method: str) -> None:
        svc = self.service
        url = urlparse(self.path)
        query = parse_qs(url.query)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        body = self._body() if method in ("POST", "PUT", "PATCH") else b""
        with svc.lock:
            svc.stats.requests += 1
        try:
            if parts[:1] == ["fake-metadata"] and len(parts) >= 5:
                if self.headers.get("Metadata-Flavor") != "Google":
                    raise ApiError(403, "Missing Metadata-Flavor:Google header", "forbidden")
                zone, name = parts[1], parts[2]
                path = "/".join(parts[5:]) if parts[3:5] == ["computeMetadata", "v1"] else ""
                return self._send(200, svc.metadata_value(zone, name, path), text=True)
            if parts[:3] != ["compute", "v1", "projects"] or len(parts) < 5:
                raise ApiError(404, f"no such endpoint {method} {url.path}", "notFound")
            project = parts[3]
            if project != svc.project:
                raise ApiError(404, f"The resource 'projects/{project}' was not found", "notFound")
            rest = parts[4:]
            if rest == ["aggregated", "instances"] and method == "GET":
                return self._send(200, svc.aggregated(query))
            if len(rest) >= 3 and rest[0] == "zones":
                zone = rest[1]
                if not _ZONE.match(zone):
                    raise ApiError(400, f"Invalid value for field 'zone': '{zone}'. Unknown zone.")
                tail = rest[2:]
                if tail == ["instances"] and method == "POST":
                    return self._send(200, svc.insert(project, zone, body))
                if tail == ["instances"] and method == "GET":
                    return self._send(200, svc.list_zone(zone, query))
                if len(tail) == 2 and tail[0] == "instances" and method == "GET":
                    return self._send(200, svc.get(zone, tail[1]))
                if len(tail) == 2 and tail[0] == "instances" and method == "DELETE":
                    return self._send(200, svc.delete(zone, tail[1]))
                if tail == ["operations"] and method == "GET":
                    return self._send(200, svc.list_ops(zone, query))
                if len(tail) == 2 and tail[0] == "operations" and method == "GET":
                    return self._send(200, svc.operation(zone, tail[1]))
                if (
                    len(tail) == 3
                    and tail[0] == "operations"
                    and tail[2] == "wait"
                    and method == "POST"
                ):
                    return self._send(200, svc.operation(zone, tail[1], wait_s=2.0))
            raise ApiError(404, f"no such endpoint {method} {url.path}", "notFound")
        except ApiError as exc:
            if exc.code == 400:
                with svc.lock:
                    svc.stats.bad_requests.append(exc.message)
            return self._send(exc.code, exc.body())

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")
