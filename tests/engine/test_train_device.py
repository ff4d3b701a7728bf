"""Training keeps its data on the device, and ``dtype="bfloat16"`` is mixed precision.

Every host-to-device copy of ``train_ensemble`` goes through ``sbi_engine.ratio.train._to_device``;
under ``jax.transfer_guard_host_to_device("disallow")`` any other (implicit) copy would raise.
Counting what goes through it shows the events go over once per run (weights once per pack)
and that doubling the steps adds only the per-interval step counter and smoothing flags.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbi_engine.ratio import train as train_module
from sbi_engine.ratio.config import TrainConfig
from sbi_engine.ratio.model import build_model, init_stacked
from sbi_engine.ratio.steps import make_interval, make_optimizer
from sbi_engine.ratio.train import train_ensemble
from sbi_engine.sample import Sample

TO_DEVICE = train_module._to_device
CONFIG = TrainConfig(members=3, pack_size=2, batch_size=128, eval_every=50, max_steps=100)


@pytest.fixture(scope="module")
def samples() -> tuple[Sample, Sample]:
    rng = np.random.default_rng(7)
    names = ("a", "b", "c")
    num = Sample(rng.normal(0.3, 1.0, (3000, 3)), rng.uniform(0.5, 1.5, 3000), names)
    den = Sample(rng.normal(0.0, 1.0, (3000, 3)), np.ones(3000), names)
    return num, den


def _transfers(monkeypatch, samples, config: TrainConfig) -> list[int]:
    sizes: list[int] = []

    def counting(x):
        sizes.append(int(np.asarray(x).nbytes))
        return TO_DEVICE(x)

    monkeypatch.setattr(train_module, "_to_device", counting)
    with jax.transfer_guard_host_to_device("disallow"):  # an implicit copy would raise here
        train_ensemble(samples[0], samples[1], config)
    return sizes


def test_events_go_to_the_device_once_not_per_step(monkeypatch, samples):
    short = _transfers(monkeypatch, samples, CONFIG)
    long = _transfers(monkeypatch, samples, CONFIG.replace(max_steps=400))
    big = lambda sizes: sorted(s for s in sizes if s > 64)  # noqa: E731
    # x, y, the validation chunks and one weight matrix per pack (2 packs): the same for 4x the steps
    assert big(short) == big(long) and len(big(short)) >= 4
    n_train, n_val = (
        4800,
        1200,
    )  # float32: x (3 features) and y; 3 members' weight rows; val x, y, w
    assert sum(big(long)) == 4 * n_train * (3 + 1 + 3) + 4 * n_val * (3 + 1 + 1)
    # per interval of eval_every steps: the step counter twice (4 bytes) and k smoothing flags
    small = lambda sizes: sum(s for s in sizes if s <= 64)  # noqa: E731
    extra_intervals = (400 - 100) // 50 * 2  # 2 packs
    assert small(long) - small(short) <= extra_intervals * (4 + 4 + 2)


def test_bfloat16_is_mixed_precision(samples):
    config = CONFIG.replace(dtype="bfloat16", max_steps=50, members=2, pack_size=None)
    result = train_ensemble(samples[0], samples[1], config)
    leaves = jax.tree.leaves(result.ensemble.params)
    assert {np.asarray(leaf).dtype for leaf in leaves} == {np.dtype(np.float32)}  # master weights
    assert all(np.isfinite(r["value"]) for r in result.history)
    assert result.ensemble.metadata["model"]["dtype"] == "bfloat16"

    # the compiled step: bfloat16 matmuls, float32 parameters, Adam moments and loss
    model = build_model(2, 16, "silu", "bfloat16")
    tx = make_optimizer(config)
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    params = init_stacked(model, keys, 3)
    opt = jax.vmap(tx.init)(params)
    f32 = jnp.float32
    x, y, w = jnp.zeros((64, 3), f32), jnp.zeros(64, f32), jnp.ones((2, 64), f32)
    step = make_interval(model, tx, 32, 2)
    args = (params, opt, jnp.int32(0), jnp.ones(2, bool), keys, x, y, w)
    hlo = step.lower(*args).as_text()
    assert "bf16" in hlo and "dot_general" in hlo
    new_params, new_opt, loss = step(*args)
    assert loss.dtype == jnp.float32
    assert {leaf.dtype for leaf in jax.tree.leaves((new_params, new_opt))} <= {
        jnp.dtype(jnp.float32),
        jnp.dtype(jnp.int32),
    }
