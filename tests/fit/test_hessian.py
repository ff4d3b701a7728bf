"""The chunked, structured exact Hessian against jax.hessian of the unchunked NLL (float64),
including the shape normalisation term (the workspace is weighted Asimov data, its own
normalisation sample)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbi_engine.fit import Model, Workspace

# Synthetic workspaces with random ratios (they do not average to 1 on the normalisation sample,
# which the model rightly warns about for real workspaces).
pytestmark = pytest.mark.filterwarnings("ignore:.*ratios average to:UserWarning")


def _small_ws(n=2000, k=4, seed=0):
    rng = np.random.default_rng(seed)
    procs = {
        c: {"yield": y, "coefficient": e, "ratio": rng.uniform(0.5, 2, n)}
        for c, y, e in (
            ("S", 50.0, "mu - sqrt(mu)"),
            ("SBI", 480.0, "sqrt(mu)"),
            ("B", 400.0, "kB*(1 - sqrt(mu))"),
        )
    }
    nps = [
        {
            "name": f"a{i}",
            "aux": 0.1 * i,
            "effects": {
                c: {
                    "norm": (1.05, 0.97),
                    "shape": (rng.uniform(0.8, 1.2, n), rng.uniform(0.8, 1.2, n)),
                }
                for c in ("S", "SBI", "B")[: i % 3 + 1]
            },
        }
        for i in range(k)
    ]
    return Workspace.from_arrays(
        pois={"mu": {"init": 1.0, "bounds": (0, 10)}},
        norm_factors={"kB": {"init": 1.0}},
        processes=procs,
        weights=rng.uniform(0.1, 0.5, n),
        nuisances=nps,
        control_regions=[
            {
                "name": "cr",
                "observed": [100, 50],
                "samples": {
                    "B": {
                        "yields": [90, 60],
                        "coefficient": "kB",
                        "norm": {"a1": ([1.1, 1.2], [0.9, 0.85])},
                    }
                },
            }
        ],
    )


@pytest.fixture(scope="module")
def small():
    ws = _small_ws()
    m = Model(ws, chunk_size=700, storage_dtype=jnp.float64)  # 3 chunks, the last one shifted back
    # alphas inside, on the edge of and outside the polynomial region
    th = m.theta({"mu": 1.3, "kB": 0.9, "a0": 0.5, "a1": -1.4, "a2": 1.2, "a3": 1.0})
    args = (jnp.asarray(th), m.data, jnp.asarray(m.aux))
    return m, th, args


def test_chunked_hessian_equals_jax_hessian_unchunked(small):
    m, th, args = small
    assert (
        m.has_norm and m.norm_source == "asimov"
    )  # the shape normalisation term is part of the check
    q, g, H = m.value_grad_hessian(th)
    H_ref = np.asarray(jax.hessian(m.q_unchunked)(*args))
    g_ref = np.asarray(jax.grad(m.q_unchunked)(*args))
    assert q == pytest.approx(float(m.q_unchunked(*args)), rel=1e-13)
    assert np.max(np.abs(g - g_ref)) <= 1e-10 * np.max(np.abs(g_ref))
    assert np.max(np.abs(H - H_ref)) <= 1e-8 * np.max(np.abs(H_ref))
    np.testing.assert_allclose(H, H_ref, rtol=1e-8, atol=1e-8 * np.max(np.abs(H_ref)))


@pytest.mark.slow
def test_hessian_vector_products(small):
    m, th, args = small
    H = m.hessian(th)
    v = np.random.default_rng(1).normal(size=m.n_params)
    np.testing.assert_allclose(m.hvp(th, v), H @ v, rtol=1e-8, atol=1e-8 * np.max(np.abs(H @ v)))


@pytest.mark.slow
def test_forward_over_reverse_path_agrees(small):
    m0, th, args = small
    m = Model(m0.workspace, chunk_size=700, storage_dtype=jnp.float64, hessian_method="autodiff")
    H_ref = np.asarray(jax.hessian(m.q_unchunked)(*args))
    assert np.max(np.abs(m.hessian(th) - H_ref)) <= 1e-8 * np.max(np.abs(H_ref))
