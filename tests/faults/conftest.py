"""Fixtures for the fault tests (`tests/faults`): each test runs a small real campaign with a
real `nsbi controller` process and real worker processes, and injects one fault with real
parts (a PostgreSQL cluster of its own restarted, the storage emulator stopped, a full tmpfs,
SIGSTOP, libfaketime).

- `noop_kind` (autouse): workers know the test-only "noop" job kind (as in tests/backend).
- `pg_cluster`: a throw-away PostgreSQL cluster (initdb + pg_ctl, as the `postgres` user when
  run as root) on a free loopback port, so restarting it disturbs no other test; skips when
  the server binaries are not installed (fails instead in CI: `fault_kit.unavailable`).

The campaign helpers of the controller tests (`nsbi_ctl_testkit`: JobDef, make_campaign, ...)
are reused from tests/backend.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backend"))  # nsbi_ctl_testkit

from fault_kit import PgCluster, postgres_binaries, unavailable  # noqa: E402

from nsbi_testing import worker_env  # noqa: E402


@pytest.fixture(autouse=True)
def noop_kind(monkeypatch):
    for name, value in worker_env().items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def pg_cluster():
    why = postgres_binaries()
    if isinstance(why, str):
        unavailable(why)
    cluster = PgCluster(why)
    try:
        cluster.init()
        yield cluster
    finally:
        cluster.close()
