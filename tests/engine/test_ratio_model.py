"""The MLP, its loss and FLOP bookkeeping against independent NumPy implementations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_expit

from sbi_engine.precision import enable_float64
from sbi_engine.ratio.model import (
    build_model,
    init_stacked,
    macs_per_sample,
    n_parameters,
    numpy_forward,
    weighted_bce,
)


@pytest.fixture(autouse=True)
def _x64() -> None:
    enable_float64()  # training runs with x64 on; the model's dtypes must not be affected by it


@pytest.mark.parametrize("activation", ["silu", "relu", "tanh"])
def test_forward_matches_numpy_and_stays_float32(activation):
    model = build_model(2, 16, activation)
    params = init_stacked(model, jax.random.split(jax.random.PRNGKey(0), 3), 5)
    x = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    out = jax.vmap(lambda p: model.apply({"params": p}, jnp.asarray(x)))(params)
    assert out.dtype == jnp.float32 and out.shape == (3, 40)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    for m in range(3):
        member = jax.tree.map(lambda a, m=m: np.asarray(a[m]), params)
        np.testing.assert_allclose(
            out[m], numpy_forward(member, x, activation), rtol=2e-5, atol=2e-5
        )


def test_parameter_count_matches_flax():
    model = build_model(7, 1500)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.float32))
    )
    assert sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes)) == n_parameters(4, 7, 1500)
    assert (
        n_parameters(4, 7, 1500) == (4 * 1500 + 1500) + 6 * (1500 * 1500 + 1500) + 1501
    )  # 13.5 M, as ATLAS
    assert macs_per_sample(4, 7, 1500) == 4 * 1500 + 6 * 1500 * 1500 + 1500


def test_weighted_bce_matches_direct_formula():
    rng = np.random.default_rng(1)
    z, y, w = rng.normal(size=50) * 30, (rng.random(50) < 0.5) * 1.0, rng.random(50)
    direct = -(y * log_expit(z) + (1 - y) * log_expit(-z))  # scipy's stable log-sigmoid
    got = float(
        weighted_bce(
            jnp.asarray(z, jnp.float32), jnp.asarray(y, jnp.float32), jnp.asarray(w, jnp.float32)
        )
    )
    assert got == pytest.approx(np.mean(w * direct), rel=1e-5)


def test_bfloat16_option_keeps_float32_parameters_and_output():
    model = build_model(2, 8, dtype="bfloat16")
    params = init_stacked(model, jax.random.split(jax.random.PRNGKey(0), 2), 3)
    out = jax.vmap(lambda p: model.apply({"params": p}, jnp.ones((4, 3), jnp.float32)))(params)
    assert out.dtype == jnp.float32
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
