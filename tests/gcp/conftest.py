"""Fixtures for the Google Cloud backend tests, all on loopback (no internet).

- ``gcs_emulator``: a gcp-storage-emulator (in memory, bucket ``b``) for the session, with
  ``STORAGE_EMULATOR_HOST`` pointing at it; ``gcs_store`` is a fresh ``gs://b/<uuid>`` store.
- ``flaky_proxy``: an HTTP proxy in front of the emulator that answers 503 to chosen requests
  (transient errors for the retry tests) and records every request line.
- ``fake_compute``: the fake Compute Engine service (``nsbi_testing.gce_fake``) that boots
  VMs by running their startup script locally; ``stub_python`` is an executable that stands in
  for the VM's Python and records what it was given.
- ``make_launcher``: a ``GceLauncher`` pointed at the fake through the real SDK client.
"""

from __future__ import annotations

import http.client
import os
import socket
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from nsbi_testing.gce_fake import LoopbackServer

REPO = Path(__file__).resolve().parents[2]
ZONES = ("us-central1-a", "us-central1-b")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_emulator():
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="b")
    server.start()
    old = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    yield f"http://127.0.0.1:{port}"
    if old is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = old
    server.stop()


@pytest.fixture
def gcs_store(gcs_emulator):
    from backend.stores.gcs import GCSStore

    return GCSStore(f"gs://b/t-{uuid.uuid4().hex[:10]}")


class FlakyProxy:
    """Forwards to the emulator; ``fail_every`` = n answers 503 to every n-th request."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.split("//", 1)[1]
        self.fail_every = 0
        self.fail_all = False
        self.lines: list[str] = []
        self.failed = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _forward(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                with proxy.lock:
                    proxy.lines.append(f"{self.command} {self.path}")
                    count = len(proxy.lines)
                    fail = proxy.fail_all or (proxy.fail_every and count % proxy.fail_every == 0)
                    if fail:
                        proxy.failed += 1
                if fail:
                    data = b'{"error": {"code": 503, "message": "backend unavailable (test)"}}'
                    self.send_response(503)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
                }
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() in (
                        "content-length",
                        "transfer-encoding",
                        "connection",
                        "server",
                        "date",
                    ):
                        continue
                    if k.lower() == "location":
                        v = v.replace(proxy.upstream, f"127.0.0.1:{proxy.port}")
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward

        self.server = LoopbackServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flaky_proxy(gcs_emulator):
    proxy = FlakyProxy(gcs_emulator)
    yield proxy
    proxy.stop()


@pytest.fixture
def proxied_store(flaky_proxy):
    """A GCSStore whose client talks to the emulator through ``flaky_proxy``."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from backend.stores.gcs import GCSStore

    client = storage.Client(
        project="nsbi-test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": f"http://127.0.0.1:{flaky_proxy.port}"},
    )
    return GCSStore(f"gs://b/p-{uuid.uuid4().hex[:10]}", client=client, retry_deadline_s=20)


@pytest.fixture
def fake_compute(tmp_path):
    from nsbi_testing.gce_fake import FakeCompute

    fake = FakeCompute(
        boot=True, grace_s=2.0, workdir=tmp_path / "vms", boot_env={"PYTHONPATH": str(REPO)}
    )
    (tmp_path / "vms").mkdir()
    fake.start()
    yield fake
    fake.stop()


STUB = """\
#!{python}
# Stands in for the VM's python: records argv and environment, then behaves as the job URI says.
import json, os, signal, sys, time
out = os.environ["STUB_OUT_DIR"]
name = os.environ.get("NSBI_INSTANCE_ID", "unknown")
rec = {{"argv": sys.argv[1:], "env": {{k: v for k, v in os.environ.items() if k.startswith(("NSBI_", "STUB_", "X_"))}}}}
with open(os.path.join(out, name + ".json.tmp"), "w") as fh:
    json.dump(rec, fh)
os.replace(os.path.join(out, name + ".json.tmp"), os.path.join(out, name + ".json"))  # readers never see half
uri = sys.argv[3] if len(sys.argv) > 3 else ""
if "sleep" in uri:
    def on_term(signum, frame):
        open(os.path.join(out, name + ".sigterm"), "w").write("TERM")
        sys.exit(75)
    signal.signal(signal.SIGTERM, on_term)
    time.sleep(120)
sys.exit(3 if "exit3" in uri else 0)
"""


@pytest.fixture
def stub_python(tmp_path):
    """(path of the stub interpreter, folder where it writes <instance>.json)."""
    out = tmp_path / "stub-out"
    out.mkdir()
    path = tmp_path / "stub-python"
    path.write_text(STUB.format(python=sys.executable))
    path.chmod(0o755)
    return path, out


@pytest.fixture
def make_launcher(fake_compute, stub_python, tmp_path):
    """Factory: ``make_launcher(**GceConfig overrides)``; closes every launcher afterwards."""
    from backend.launchers.gce import GceLauncher
    from backend.launchers.gce_spec import GceConfig
    from backend.stores.local import LocalStore

    made = []
    store_root = tmp_path / "store"

    def opener(uri: str):
        return (
            LocalStore(uri, create=True)
            if uri.startswith("file://")
            else LocalStore(store_root, create=True)
        )

    def factory(**overrides):
        kw = dict(
            project=fake_compute.project,
            zones=ZONES,
            endpoint=fake_compute.endpoint,
            url_scheme="http",
            runtime="python",
            python=str(stub_python[0]),
            env={"STUB_OUT_DIR": str(stub_python[1])},
            list_ttl_s=0.0,
            service_account=f"nsbi-worker@{fake_compute.project}.iam.gserviceaccount.com",
        )
        kw.update(overrides)
        launcher = GceLauncher(GceConfig(**kw), store_opener=opener)
        made.append(launcher)
        return launcher

    yield factory
    for launcher in made:
        launcher.close()


def wait_for(predicate, timeout: float = 20.0, every: float = 0.1, what: str = "condition"):
    import time

    t0 = time.time()
    while time.time() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what} not reached within {timeout} s")


@pytest.fixture
def waiter():
    return wait_for
