"""Shared, session-scoped fit fixtures: building and compiling a model costs ~10 s, so the
tests share one demo workspace (exact analytic ratios, 10 NPs) and its compiled model.

``float64``: for tests of the likelihood's internals (interpolation, code-4 reference) called
directly, without an entry point (model, fit) that switches JAX to 64-bit types itself."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

from sbi_engine.fit import Model, fit
from sbi_engine.fit.exact import exact_demo_workspace
from sbi_engine.precision import enable_float64


@pytest.fixture
def float64() -> None:
    enable_float64()


@pytest.fixture(scope="session")
def demo_ws():
    return exact_demo_workspace(20000, n_nuisances=10, seed=1, luminosity=1.0)


@pytest.fixture(scope="session")
def demo_model(demo_ws):
    return Model(demo_ws, chunk_size=8192, storage_dtype=jnp.float64)


@pytest.fixture(scope="session")
def demo_fit(demo_model):
    return fit(demo_model)
