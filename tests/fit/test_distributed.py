"""One fit over the devices of two processes (``jax.distributed``) equals the one-device fit.

Two processes, each with two forced CPU devices, join through a coordinator on 127.0.0.1 and
JAX's Gloo CPU collectives (``sbi_engine.fit.sharding.initialize_distributed``): the mesh has
four devices in two processes, each process holds the shards of its own two. Each process runs
``nsbi fit --coordinator ... --json`` (process 0 writes the file) and then the NLL, gradient and
Hessian of ``Model(ws, devices=4)`` at a fixed point; the test compares them with one device in
this process. 3001 events are not a multiple of 4, so the sharded arrays are padded.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from backend.cli import main

ROOT = Path(__file__).resolve().parents[2]
# Gloo's note "[Gloo] Rank 2 is connected to 3 peer ranks. Expected number of connected peer
# ranks is : 3" (seen split from its prefix when two threads write at once)
GLOO_NOTE = re.compile(r"connected to \d+ peer ranks|connected peer ranks is")
N_EVENTS, N_NPS, CHUNK = 3001, 4, 512

WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from backend.cli import main

    ws_path, port, pid, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    rc = main(["fit", ws_path, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
               "--process-id", pid, "--chunk-size", "512", "--json", out])
    import jax
    from sbi_engine.fit import Model, Workspace
    from sbi_engine.fit.sharding import bytes_per_device

    m = Model(Workspace.load(ws_path), devices=jax.device_count(), chunk_size=512)
    theta = m.init.copy()
    theta[m.n_free:] = 0.1 * np.cos(np.arange(m.n_np))
    v, g, H = m.value_grad_hessian(theta)
    print("RESULT " + json.dumps({
        "rc": rc, "process": jax.process_index(), "processes": jax.process_count(),
        "devices": jax.device_count(), "local_devices": jax.local_device_count(),
        "bytes_per_device": bytes_per_device(m.data), "n_rows": m.n_rows,
        "nll": v, "grad": g.tolist(), "hessian": H.tolist(),
    }), flush=True)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    from benchmarks.fit import write_synthetic_workspace

    path = tmp_path_factory.mktemp("dist") / "ws.json"
    write_synthetic_workspace(path, N_EVENTS, N_NPS, seed=5)
    return path


@pytest.fixture(scope="module")
def two_processes(workspace: Path) -> dict:
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(ROOT),
    }
    port = _free_port()
    out = workspace.parent / "fit.json"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(workspace), str(port), str(i), str(out)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (0, 1)
    ]
    results = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=300)
            assert p.returncode == 0, stderr[-4000:]
            line = next(x for x in stdout.splitlines() if x.startswith("RESULT "))
            results.append({**json.loads(line[len("RESULT ") :]), "stdout": stdout})
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return {"runs": results, "fit_json": json.loads(out.read_text())}


@pytest.fixture(scope="module")
def one_device(workspace: Path) -> dict:
    from sbi_engine.fit import Model, Workspace, fit

    m = Model(Workspace.load(workspace), chunk_size=CHUNK)
    theta = m.init.copy()
    theta[m.n_free :] = 0.1 * np.cos(np.arange(m.n_np))
    v, g, H = m.value_grad_hessian(theta)
    return {"nll": v, "grad": g, "hessian": H, "fit": fit(m)}


def _rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


def test_two_processes_share_one_mesh(two_processes: dict) -> None:
    for i, run in enumerate(two_processes["runs"]):
        assert run["process"] == i and run["processes"] == 2
        assert run["devices"] == 4 and run["local_devices"] == 2
        per = run["bytes_per_device"]  # only this process's two devices hold its shards
        assert len(per) == 2 and max(per.values()) == min(per.values())
        assert run["n_rows"] == 3004


def test_sums_equal_one_device(two_processes: dict, one_device: dict) -> None:
    for run in two_processes["runs"]:
        for key in ("nll", "grad", "hessian"):
            assert _rel(one_device[key], run[key]) < 1e-10, key


def test_cli_fit_equals_one_device_and_only_process_0_reports(
    two_processes: dict, one_device: dict
) -> None:
    ref, got = one_device["fit"], two_processes["fit_json"]
    assert [r["rc"] for r in two_processes["runs"]] == [0, 0]
    assert got["processes"] == 2 and got["devices"] == 4
    assert got["fit"]["converged"]
    assert abs(got["fit"]["q_min"] - ref.q_min) < 1e-8 * abs(ref.q_min)
    assert abs(got["fit"]["values"]["mu"] - ref.values["mu"]) < 1e-8
    assert _rel(ref.covariance, got["fit"]["covariance"]) < 1e-8
    # process 0 prints the summary; process 1 prints nothing but its RESULT line (and Gloo's
    # connection notes, written from C++ threads: a note can arrive split from its "[Gloo]"
    # prefix, so they are recognised by their text)
    printed = [
        [
            x
            for x in run["stdout"].splitlines()
            if x.strip() and not x.startswith(("[Gloo]", "RESULT")) and not GLOO_NOTE.search(x)
        ]
        for run in two_processes["runs"]
    ]
    assert any(x.lstrip().startswith("mu") for x in printed[0]), printed[0]
    assert printed[1] == []


def test_incomplete_flags_are_refused(workspace: Path, capsys) -> None:
    assert main(["fit", str(workspace), "--coordinator", "127.0.0.1:1"]) == 2
    assert "--num-processes N and --process-id I together" in capsys.readouterr().err
