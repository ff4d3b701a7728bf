"""GPU-only checks (``@pytest.mark.gpu``): skipped on a machine where JAX has no GPU, which is
every CI machine; ``scripts/gpu_check.sh`` runs them on a lent GPU (docs/benchmarks.md).

- ``nsbi worker --check-gpu`` passes and the driver's GPU is JAX's device;
- the fit's float64 sums on the GPU equal the same model's on the host CPU (1e-10 relative)
  and the NumPy reference NLL;
- the one-device mesh (``Model(ws, devices=1)``) gives the same sums on the GPU;
- training keeps its data on the GPU (no implicit host-to-device copy) and bfloat16 training
  compiles to bfloat16 matmuls with float32 weights and loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest


def _has_gpu() -> bool:
    try:
        return jax.default_backend() in ("gpu", "cuda", "rocm")
    except Exception:
        return False


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _has_gpu(), reason="no GPU: JAX's default backend is not a GPU"),
]


def _rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


def test_worker_check_gpu_passes(capsys):
    from backend.commands.worker import main

    assert main(["--check-gpu"]) == 0
    out = capsys.readouterr().out
    assert "GPU ready" in out and "NVML GPU 0:" in out


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Host (NumPy) arrays, so the GPU and the CPU model read the very same numbers."""
    from benchmarks.fit import write_synthetic_workspace
    from sbi_engine.fit import Workspace

    path = tmp_path_factory.mktemp("gpu") / "ws.json"
    write_synthetic_workspace(path, 200_003, 8, seed=2)
    return Workspace.load(path)


def test_fit_sums_on_gpu_equal_cpu(workspace):
    from benchmarks.fit import numpy_nll
    from sbi_engine.fit import Model

    gpu = Model(workspace, chunk_size=65536)
    theta = gpu.init.copy()
    theta[gpu.n_free :] = 0.1 * np.cos(np.arange(gpu.n_np))
    got = gpu.value_grad_hessian(theta)
    sharded = Model(workspace, chunk_size=65536, devices=1).value_grad_hessian(theta)
    with jax.default_device(jax.devices("cpu")[0]):
        ref = Model(workspace, chunk_size=65536).value_grad_hessian(theta)
    for a, b, c in zip(ref, got, sharded):
        assert _rel(a, b) < 1e-10 and _rel(a, c) < 1e-10
    assert abs(numpy_nll(gpu)(theta) - got[0]) < 1e-8 * abs(got[0])


def test_training_data_stays_on_the_gpu_and_bfloat16_is_mixed():
    from sbi_engine.ratio.config import TrainConfig
    from sbi_engine.ratio.model import build_model, init_stacked
    from sbi_engine.ratio.steps import make_interval, make_optimizer
    from sbi_engine.ratio.train import train_ensemble
    from sbi_engine.sample import Sample

    rng = np.random.default_rng(0)
    names = ("a", "b", "c")
    num = Sample(rng.normal(0.3, 1.0, (20000, 3)), np.ones(20000), names)
    den = Sample(rng.normal(0.0, 1.0, (20000, 3)), np.ones(20000), names)
    for dtype in ("float32", "bfloat16"):
        config = TrainConfig(members=4, max_steps=200, eval_every=100, dtype=dtype)
        with jax.transfer_guard_host_to_device("disallow"):
            result = train_ensemble(num, den, config)
        assert all(np.isfinite(r["value"]) for r in result.history)

    model = build_model(3, 64, "silu", "bfloat16")
    tx = make_optimizer(TrainConfig(dtype="bfloat16", max_steps=10))
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    params = init_stacked(model, keys, 3)
    f32 = jnp.float32
    args = (
        params,
        jax.vmap(tx.init)(params),
        jnp.int32(0),
        jnp.ones(2, bool),
        keys,
        jnp.zeros((256, 3), f32),
        jnp.zeros(256, f32),
        jnp.ones((2, 256), f32),
    )
    compiled = make_interval(model, tx, 128, 2).lower(*args).compile()
    assert "bf16" in compiled.as_text()
    new_params, _, loss = compiled(*args)
    assert loss.dtype == f32 and all(p.dtype == f32 for p in jax.tree.leaves(new_params))
