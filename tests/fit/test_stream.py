"""Streaming events from disk: the same numbers as the in-memory model, and `nsbi bench fit`'s report.

The streamed model must be exactly the in-memory one summed in another order, so the
tolerances are float64 round-off (1e-10 relative), not statistics.
"""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from backend import cli
from benchmarks.fit import write_synthetic_workspace
from sbi_engine.fit import Model, Workspace, fit
from sbi_engine.fit.stream import StreamingModel


@pytest.fixture(scope="module")
def synthetic_path(tmp_path_factory):
    # 5,000 events in blocks of 1,500 and chunks of 1,024: neither divides the event count.
    return write_synthetic_workspace(
        tmp_path_factory.mktemp("stream") / "ws.json", 5000, 4, seed=3, block=1500
    )


def _theta(model: Model) -> np.ndarray:
    t = model.init.copy()
    t[0] = 1.3
    t[model.n_free :] = np.linspace(-1.4, 1.2, model.n_np)  # both code-4 regimes
    return t


def test_streamed_sums_equal_in_memory(synthetic_path):
    ws_mem = Workspace.load(synthetic_path)
    ws_map = Workspace.load(synthetic_path, mmap=True)
    assert isinstance(ws_map.processes[0].ratio, np.memmap)
    mem = Model(ws_mem, chunk_size=1024, storage_dtype=jnp.float32)
    streamed = StreamingModel(ws_map, chunk_size=1024)
    t = _theta(mem)
    q0, g0, H0 = mem.value_grad_hessian(t)
    q1, g1, H1 = streamed.value_grad_hessian(t)
    assert q1 == pytest.approx(q0, rel=1e-12)
    assert np.max(np.abs(g1 - g0)) <= 1e-10 * np.max(np.abs(g0))
    assert np.max(np.abs(H1 - H0)) <= 1e-10 * np.max(np.abs(H0))
    assert streamed.nll(t) == pytest.approx(q0, rel=1e-12)
    v1, gg1 = streamed.value_and_grad(t)
    assert np.allclose(gg1, g0, rtol=1e-10, atol=1e-10 * np.max(np.abs(g0)))


def test_streamed_fit_equals_in_memory_fit_and_compiles_once(synthetic_path):
    mem = Model(Workspace.load(synthetic_path), chunk_size=1024, storage_dtype=jnp.float32)
    streamed = StreamingModel(Workspace.load(synthetic_path, mmap=True), chunk_size=1024)
    r0, r1 = fit(mem), fit(streamed)
    assert r0.converged and r1.converged, (r0.message, r1.message)
    assert r1.method == "newton (streamed)"
    sig = np.sqrt(np.diag(r0.covariance))
    assert np.max(np.abs(r1.theta - r0.theta) / sig) < 1e-6
    assert np.allclose(np.sqrt(np.diag(r1.covariance)), sig, rtol=1e-6)
    compiled = streamed.clock.count
    refit = fit(streamed, fixed={"np000": 1.0})  # a refit reuses every compiled function
    assert refit.converged
    assert streamed.clock.count == compiled


def test_streamed_model_derives_asimov_normalisation(demo_ws, tmp_path):
    """Without norm_weights, Asimov data gives v_i = w_i / s_i(theta_gen); streamed, that needs
    its own pass, and it must give the in-memory model's normalisation."""
    path = demo_ws.save(tmp_path / "demo.json")
    mem = Model(Workspace.load(path), chunk_size=4096, storage_dtype=jnp.float64)
    streamed = StreamingModel(Workspace.load(path, mmap=True), chunk_size=3000)
    assert mem.norm_source == streamed.norm_source == "asimov"
    t = _theta(mem)
    q0, g0, H0 = mem.value_grad_hessian(t)
    q1, g1, H1 = streamed.value_grad_hessian(t)
    assert q1 == pytest.approx(q0, rel=1e-11)
    assert np.max(np.abs(H1 - H0)) <= 1e-9 * np.max(np.abs(H0))


def test_streamed_model_refuses_other_data(synthetic_path):
    streamed = StreamingModel(Workspace.load(synthetic_path, mmap=True), chunk_size=1024)
    with pytest.raises(NotImplementedError, match="in-memory Model"):
        streamed.nll(streamed.init, data={"w": np.ones(3)})


def test_bench_fit_report_in_memory_with_both_baselines(tmp_path):
    out = tmp_path / "fit.json"
    assert (
        cli.main(
            [
                "bench",
                "fit",
                "--events",
                "3000",
                "--nps",
                "3",
                "--chunk-size",
                "1024",
                "--refit-nps",
                "1",
                "--repeat",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    r = json.loads(out.read_text())
    for key in (
        "events",
        "nps",
        "processes",
        "data_mb",
        "nll_s",
        "grad_s",
        "hessian_s",
        "fit_s",
        "impacts_cov_s",
        "impacts_refit_per_np_s",
        "compile_s",
        "peak_rss_mb",
        "baseline_iminuit_s",
        "baseline_full_hessian_s",
    ):
        assert key in r, key
    assert (r["events"], r["nps"], r["processes"]) == (3000, 3, 3)
    assert r["fit_converged"]
    # both fits start off the Asimov truth, so the timed fit is more than one confirming pass
    assert r["fit_start_offset"] == 0.5 and r["fit_iterations"] >= 3
    # same NLL, three implementations: the NumPy one (iminuit), jax.hessian unchunked, ours
    assert r["numpy_nll_matches"] < 1e-8
    assert r["full_hessian_max_rel_diff"] < 1e-8
    assert r["baseline_iminuit_valid"] and r["iminuit_max_dtheta_over_sigma"] < 1e-2
    # iminuit on the JAX NLL, with and without the exact gradient: same minimum
    for variant in ("_jax_numgrad", "_jax_grad"):
        assert r[f"baseline_iminuit{variant}_valid"], variant
        assert r[f"iminuit{variant}_max_dtheta_over_sigma"] < 1e-2, variant
    assert r["baseline_iminuit_jax_grad_ngrad"] > 0 and r["baseline_iminuit_jax_numgrad_ngrad"] == 0
    assert r["compile_s"] > 0 and r["compile_count"] >= 3
    # 3000 events x 12 arrays x 4 bytes (+ float64 weights)
    assert 0.1 < r["data_mb"] < 1.0


def test_bench_fit_streamed_report(tmp_path):
    out = tmp_path / "fit.json"
    args = [
        "bench",
        "fit",
        "--events",
        "4000",
        "--nps",
        "2",
        "--chunk-size",
        "1500",
        "--refit-nps",
        "0",
        "--repeat",
        "1",
        "--stream",
        str(tmp_path / "data"),
        "--json",
        str(out),
    ]
    assert cli.main(args) == 0
    r = json.loads(out.read_text())
    assert r["streamed_from"].endswith("synthetic-4000x2-s0.json") and r["chunk_size"] == 1500
    assert r["fit_converged"] and r["impacts_refit_per_np_s"] is None
    assert r["baseline_iminuit_s"] is None and "streamed" in r["baseline_iminuit_skipped"]
    assert "write_s" in r
    assert cli.main(args) == 0  # the second run reuses the files on disk
    assert "write_s" not in json.loads(out.read_text())
