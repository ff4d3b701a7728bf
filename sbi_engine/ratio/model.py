"""The classifier network and its loss.

A plain Flax MLP with a single logit output. Trained with balanced class weights, the optimal
logit is log p_num(x)/p_den(x), so the network output *is* the per-member log-ratio estimate.
Parameters are kept float32 (training runs with 64-bit JAX enabled, so every dtype here is
explicit); with ``dtype="bfloat16"`` only the matmul inputs are cast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Params = Any

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "silu": nn.silu,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "tanh": jnp.tanh,
    "elu": nn.elu,
    "softplus": nn.softplus,
}

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class MLP(nn.Module):
    """Fully connected network: hidden layers of ``widths`` with ``activation``, one logit out."""

    widths: Sequence[int]
    activation: str = "silu"
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = _ACTIVATIONS[self.activation]
        compute = _DTYPES[self.dtype]
        h = x.astype(compute)
        for i, width in enumerate(self.widths):
            h = nn.Dense(width, dtype=compute, param_dtype=jnp.float32, name=f"hidden_{i}")(h)
            h = act(h)
        out = nn.Dense(1, dtype=compute, param_dtype=jnp.float32, name="output")(h)
        return out[..., 0].astype(jnp.float32)


def build_model(
    hidden_layers: int, width: int, activation: str = "silu", dtype: str = "float32"
) -> MLP:
    """The MLP for a (hidden_layers x width) architecture."""
    return MLP(widths=(width,) * hidden_layers, activation=activation, dtype=dtype)


def init_stacked(model: MLP, keys: jax.Array, n_features: int) -> Params:
    """Initialise one parameter set per key, stacked along a leading member axis."""
    dummy = jnp.zeros((1, n_features), jnp.float32)
    return jax.vmap(lambda k: model.init(k, dummy)["params"])(keys)


def weighted_bce(logits: jax.Array, labels: jax.Array, weights: jax.Array) -> jax.Array:
    """Mean of weight x binary cross-entropy (labels 1 = numerator, 0 = denominator).

    Written with softplus so it is exact for large |logit|. The caller normalises weights
    so both classes carry the same total; then the minimiser's logit is the log density ratio.
    """
    per_event = labels * jax.nn.softplus(-logits) + (1.0 - labels) * jax.nn.softplus(logits)
    return jnp.mean(weights * per_event)


def macs_per_sample(n_features: int, hidden_layers: int, width: int) -> int:
    """Multiply-accumulates of one forward pass for one event (the matmuls only)."""
    sizes = [n_features] + [width] * hidden_layers + [1]
    return int(sum(a * b for a, b in zip(sizes[:-1], sizes[1:])))


def n_parameters(n_features: int, hidden_layers: int, width: int) -> int:
    """Number of trainable parameters (kernels plus biases)."""
    sizes = [n_features] + [width] * hidden_layers + [1]
    return int(sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:])))


def numpy_forward(params: dict, x: np.ndarray, activation: str = "silu") -> np.ndarray:
    """Reference forward pass of ONE member in plain NumPy (float64), for notebooks and tests.

    ``params`` maps ``hidden_<i>`` / ``output`` to ``{"kernel", "bias"}`` as stored by
    ``Ensemble.save``; ``x`` must already be standardised.
    """
    acts: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "silu": lambda z: z / (1.0 + np.exp(-z)),
        "relu": lambda z: np.maximum(z, 0.0),
        "tanh": np.tanh,
        "softplus": lambda z: np.logaddexp(0.0, z),
        "elu": lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0.0))),
    }
    if activation not in acts:
        raise ValueError(f"numpy_forward: activation {activation!r} has no NumPy reference")
    h = np.asarray(x, np.float64)
    n_hidden = sum(1 for k in params if k.startswith("hidden_"))
    for i in range(n_hidden):
        layer = params[f"hidden_{i}"]
        h = acts[activation](
            h @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"], np.float64)
        )
    out = params["output"]
    return (h @ np.asarray(out["kernel"], np.float64) + np.asarray(out["bias"], np.float64))[:, 0]
