"""Fixtures for the Slurm tests, on a real single-node Slurm started for the session.

- ``slurm_cluster``: a munged of its own, slurmctld and slurmd on loopback with
  a slurm.conf in a temporary folder (``slurm_cluster.py``); ``SLURM_CONF`` points the client
  commands at it for the session. Skips when the Slurm binaries are absent or the session is
  not root, unless ``CI=true``: then it fails, so CI never passes by skipping.
- ``slurm_store``: a fresh file store; ``make_launcher``: a ``SlurmLauncher`` over a fresh
  folder whose workers know the test-only "noop" job kind.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from slurm_cluster import SlurmCluster, missing_binaries, start_cluster

from nsbi_testing import unavailable, worker_env

REPO = Path(__file__).resolve().parents[2]


def _unavailable(why: str) -> None:
    unavailable(f"no Slurm here: {why}", in_ci_because=".ci/run installs slurm-wlm and munge")


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> SlurmCluster:
    missing = missing_binaries()
    if missing:
        _unavailable(f"missing {', '.join(missing)} (apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        _unavailable("slurmd must run as root")
    folder = tmp_path_factory.mktemp("slurm")
    cluster = start_cluster(folder, cpus=4)
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before
        cluster.stop()


@pytest.fixture
def slurm_store(tmp_path):
    from backend.stores import open_store

    root = tmp_path / "store"
    root.mkdir()
    return open_store(f"file://{root}")


@pytest.fixture
def make_launcher(slurm_cluster, tmp_path):
    from backend.launchers import LauncherError
    from backend.launchers.slurm import SlurmLauncher

    made = []

    def make(**kw):
        kw.setdefault("extra_env", worker_env())
        kw.setdefault("cwd", str(REPO))
        kw.setdefault("poll_ttl_s", 0.2)  # squeue is cheap here: see state changes at once
        folder = kw.pop("var_dir", None) or tmp_path / f"slurm-{uuid.uuid4().hex[:6]}"
        launcher = SlurmLauncher(folder, **kw)
        made.append(launcher)
        return launcher

    yield make
    for launcher in made:  # nothing of a test outlives it
        try:
            for st in launcher.list_instances():
                if st.state.is_alive():
                    launcher.cancel(st.instance_id)
        except LauncherError:  # a launcher pointed at no Slurm on purpose
            pass
