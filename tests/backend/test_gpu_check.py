"""``nsbi worker --check-gpu``: JAX's devices and the driver's GPUs, exit 0 only with a GPU.

This machine has no GPU, so the real no-GPU path runs as is; the two GPU outcomes (the driver
sees a GPU but JAX is CPU-only; JAX on a GPU) are checked with NVML's and JAX's answers faked.
"""

from __future__ import annotations

import json

from backend import cli, gpu_check

H100 = {
    "index": 0,
    "name": "NVIDIA H100 80GB HBM3",
    "memory_total_bytes": 85520809984,
    "memory_used_bytes": 1 << 20,
    "driver": "580.159.04",
}


def test_without_a_gpu_says_so_and_exits_1(capsys):
    assert cli.main(["worker", "--check-gpu"]) == 1
    out = capsys.readouterr().out
    assert "backend cpu" in out and "NVML: no GPU" in out
    assert "no GPU: no NVIDIA driver or GPU on this machine; JAX runs on the CPU" in out
    assert "--build-arg EXTRAS=gpu" in out


def test_json_report(capsys):
    assert cli.main(["worker", "--check-gpu", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["jax"]["backend"] == "cpu"
    assert report["jax"]["devices"][0]["platform"] == "cpu" and report["nvml"]["gpus"] == []


def test_driver_gpu_with_cpu_only_jax_names_the_fix(monkeypatch, capsys):
    monkeypatch.setattr("backend.resources.nvml_gpus", lambda: ([H100], None))
    assert cli.main(["worker", "--check-gpu"]) == 1
    out = capsys.readouterr().out
    assert "NVML GPU 0: NVIDIA H100 80GB HBM3, 79.6 GiB" in out
    assert "the driver sees 1 GPU(s) but JAX's backend is 'cpu'" in out and "jax[cuda12]" in out


def test_jax_on_a_gpu_passes(monkeypatch, capsys):
    monkeypatch.setattr("backend.resources.nvml_gpus", lambda: ([H100], None))
    device = {"id": 0, "platform": "gpu", "kind": "NVIDIA H100 80GB HBM3"}
    monkeypatch.setattr(gpu_check, "_jax_view", lambda: ("0.10.2", "gpu", [device], None))
    assert cli.main(["worker", "--check-gpu"]) == 0
    out = capsys.readouterr().out
    assert "backend gpu, 1 device(s) (NVIDIA H100 80GB HBM3)" in out and "GPU ready" in out


def test_a_job_still_needs_uri_and_attempt(capsys):
    assert cli.main(["worker"]) == 2
    assert "give a job URI and --attempt N" in capsys.readouterr().err
