"""The fit's event sums sharded over devices (``Model(ws, devices=N)``) equal the one-device run.

JAX fixes its device count when it starts, so the checks run in a subprocess started with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (four CPU devices); it prints the measured
differences as JSON and the assertions are made here. The event count 20002 is a multiple of
neither 4 nor 3, so both sharded models pad with zero-weight rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import jax
    from benchmarks.fit import fit_start, synthetic_workspace
    from sbi_engine.fit import Model, fit
    from sbi_engine.fit.sharding import bytes_per_device

    def rel(a, b):
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))

    out = {"devices_seen": len(jax.devices())}
    ws = synthetic_workspace(20002, 12, seed=3)
    one = Model(ws, chunk_size=4096)
    theta = one.init.copy()
    theta[one.n_free:] = 0.1 * np.cos(np.arange(one.n_np))
    start = fit_start(one, 0.5)
    ref = one.value_grad_hessian(theta)
    ref_fit = fit(one, init=start)
    w = np.asarray(one.data["w"]) * (1.0 + 0.1 * np.sin(np.arange(one.n_events)))
    ref_w = one.value_and_grad(theta, one.with_weights(w))
    vec = np.linspace(-1.0, 1.0, one.n_params)
    ref_hvp = one.hvp(theta, vec)
    for n_dev in (4, 3):
        m = Model(ws, chunk_size=4096, devices=n_dev)
        got = m.value_grad_hessian(theta)
        res = fit(m, init=start)
        got_w = m.value_and_grad(theta, m.with_weights(w))
        sig_ref = np.sqrt(np.diag(ref_fit.covariance))
        out[str(n_dev)] = {
            "n_rows": m.n_rows,
            "nll": rel(ref[0], got[0]),
            "nll_fn": rel(one.nll(theta), m.nll(theta)),
            "grad": rel(ref[1], got[1]),
            "hessian": rel(ref[2], got[2]),
            "hvp": rel(ref_hvp, m.hvp(theta, vec)),
            "reweighted": max(rel(ref_w[0], got_w[0]), rel(ref_w[1], got_w[1])),
            "converged": bool(res.converged),
            "q_min": abs(res.q_min - ref_fit.q_min) / abs(ref_fit.q_min),
            "mu_hat": abs(res.values["mu"] - ref_fit.values["mu"]),
            "theta": float(np.max(np.abs(res.theta - ref_fit.theta))),
            "errors": rel(sig_ref, np.sqrt(np.diag(res.covariance))),
            "bytes_per_device": bytes_per_device(m.data),
            "one_device_bytes": one.data_nbytes,
        }
    try:
        Model(ws, devices=64)
        out["too_many"] = "accepted"
    except ValueError as exc:
        out["too_many"] = str(exc)
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def measured() -> dict:
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def test_four_cpu_devices_are_visible(measured: dict) -> None:
    assert measured["devices_seen"] == 4


@pytest.mark.parametrize("n_dev", ["4", "3"])
def test_sums_equal_one_device(measured: dict, n_dev: str) -> None:
    m = measured[n_dev]
    assert m["n_rows"] % int(n_dev) == 0 and m["n_rows"] > 20002  # padded
    for key in ("nll", "nll_fn", "grad", "hessian", "hvp", "reweighted"):
        assert m[key] < 1e-10, (key, m[key])


@pytest.mark.parametrize("n_dev", ["4", "3"])
def test_fit_equals_one_device(measured: dict, n_dev: str) -> None:
    m = measured[n_dev]
    assert m["converged"]
    for key in ("q_min", "mu_hat", "theta", "errors"):
        assert m[key] < 1e-8, (key, m[key])


@pytest.mark.parametrize("n_dev", ["4", "3"])
def test_memory_per_device_scales_as_one_over_devices(measured: dict, n_dev: str) -> None:
    m = measured[n_dev]
    per = m["bytes_per_device"]
    assert len(per) == int(n_dev)
    assert max(per.values()) == min(per.values())
    # 1/N of the one-device arrays, up to the padding rows and the replicated (C,) vscale
    assert max(per.values()) <= m["one_device_bytes"] / int(n_dev) * 1.001


def test_more_devices_than_present_is_refused(measured: dict) -> None:
    assert "xla_force_host_platform_device_count" in measured["too_many"]
