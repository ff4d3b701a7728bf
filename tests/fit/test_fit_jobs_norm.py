"""Fit-stage workspaces carry a normalisation sample, the reference's evaluation events: observed
data get it appended as weight-0 rows; Asimov data are the model's expectation on it."""

from __future__ import annotations

import numpy as np
import pytest

from sbi_engine.fit import Model, fit
from sbi_engine.fit.toys import asimov_weights
from sbi_engine.fit_jobs import build_learned_fit, build_workspace
from sbi_engine.ratio import Ensemble
from sbi_engine.ratio.ensemble import FORMAT
from sbi_engine.ratio.prepare import Standardizer
from sbi_engine.sample_specs import load_sample_spec

FEATURES = ["m4l", "cos_theta1", "cos_theta2", "phi"]


def _m4l_ensemble(path, slope: float) -> str:
    """A one-member 'ensemble' with log r = slope * (m4l - 400) / 200 (a ReLU pair gives the identity)."""
    k = np.zeros((1, 4, 2), np.float32)
    k[0, 0] = [1.0, -1.0]
    params = {
        "hidden_0": {"kernel": k, "bias": np.zeros((1, 2), np.float32)},
        "output": {
            "kernel": np.array([[[slope], [-slope]]], np.float32),
            "bias": np.zeros((1, 1), np.float32),
        },
    }
    scaler = Standardizer(
        np.array([400.0, 0, 0, 0], np.float32), np.array([200.0, 1, 1, 1], np.float32)
    )
    meta = {
        "format": FORMAT,
        "model": {"hidden_layers": 1, "width": 2, "activation": "relu", "dtype": "float32"},
        "feature_names": FEATURES,
        "scaler": scaler.to_dict(),
        "config": {},
    }
    Ensemble(params, meta).save(path)
    return str(path)


def _spec(data):
    def demo(proc, seed, **kw):
        return {"demo": {"process": proc, "n": 3000, "seed": seed, "n_nuisances": 3, **kw}}

    return {
        "name": "fit",
        "campaign": "c",
        "kind": "fit",
        "params": {
            "reference": "B",
            "mu_true": 1.5,
            "data": data,
            "processes": {"S": demo("S", 1), "SBI": demo("SBI", 2), "B": demo("B", 3)},
            "tasks": {
                "S_vs_B": {"kind": "process", "process": "S"},
                "SBI_vs_B": {"kind": "process", "process": "SBI"},
                "m_up": {
                    "kind": "systematic",
                    "systematic": "m4l_scale",
                    "process": "B",
                    "direction": "up",
                },
                "m_dn": {
                    "kind": "systematic",
                    "systematic": "m4l_scale",
                    "process": "B",
                    "direction": "down",
                },
            },
            "systematics": [
                {
                    "name": "m4l_scale",
                    "process": "B",
                    "up": demo("B", 4, alpha={"m4l_scale": 1.0}),
                    "down": demo("B", 5, alpha={"m4l_scale": -1.0}),
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def ensembles(tmp_path_factory):
    d = tmp_path_factory.mktemp("ens")
    return {
        "S_vs_B": [_m4l_ensemble(d / "s.npz", 0.3)],
        "SBI_vs_B": [_m4l_ensemble(d / "sbi.npz", 0.1)],
        "m_up": [_m4l_ensemble(d / "u.npz", 0.05)],
        "m_dn": [_m4l_ensemble(d / "d.npz", -0.05)],
    }


def test_observed_data_get_a_normalisation_sample(ensembles):
    data_spec = {"demo": {"mu": 1.5, "seed": 8, "poisson": True, "n_nuisances": 3}}
    ws = build_workspace(_spec(data_spec), ensembles)
    n_data = len(load_sample_spec(data_spec))
    ref = load_sample_spec(
        {"demo": {"process": "B", "n": 3000, "seed": 3, "n_nuisances": 3}}, role="eval"
    )
    assert ws.data.kind == "observed" and ws.n_events == n_data + len(ref)
    w, v = np.asarray(ws.data.weights), np.asarray(ws.data.norm_weights)
    np.testing.assert_array_equal(w[:n_data], 1.0)
    np.testing.assert_array_equal(w[n_data:], 0.0)
    np.testing.assert_array_equal(v[:n_data], 0.0)
    np.testing.assert_allclose(v[n_data:], ref.weights)
    m = Model(ws)
    assert m.has_norm and m.norm_source == "norm_weights"
    r = fit(m)
    assert r.converged, r.message


def test_asimov_data_are_the_models_expectation_on_the_normalisation_sample(ensembles):
    """At mu_true = 1.5 the B coefficient 1 - sqrt(mu) is negative: the weights must still be
    the model's (positive) expected counts, summing to nu(mu_true), and a fit returns mu_true."""
    spec = _spec("asimov")
    ws = build_workspace(spec, ensembles)
    ref = load_sample_spec(spec["params"]["processes"]["B"], role="eval")
    assert (
        ws.data.kind == "asimov" and ws.data.generated_at == {"mu": 1.5} and ws.n_events == len(ref)
    )
    np.testing.assert_allclose(ws.data.norm_weights, ref.weights)
    w = np.asarray(ws.data.weights)
    assert np.all(w >= 0)
    m = Model(ws)
    assert m.has_norm and m.norm_source == "norm_weights"
    np.testing.assert_allclose(w, asimov_weights(m, {"mu": 1.5}))
    r = fit(m)
    assert r.converged and abs(r.values["mu"] - 1.5) < 1e-6


def test_learned_fit_keeps_members_and_shape_decisions(ensembles):
    lf = build_learned_fit(_spec("asimov"), ensembles)
    assert set(lf.ratios) == {"S_vs_B", "SBI_vs_B", "m_up", "m_dn"}
    assert lf.process_task == {"S": "S_vs_B", "SBI": "SBI_vs_B"}
    # one-member ensembles: the noise is unknown, so the shape effect is kept and says why
    (d,) = lf.shape_decisions
    assert d.action == "kept (noise unknown)" and d.signal > 0
