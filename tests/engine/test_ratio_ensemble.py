"""Ensemble inference: aggregation maths, chunking, the one-file export and its NumPy reading."""

import json

import jax
import numpy as np
import pytest

from sbi_engine.ratio import Ensemble
from sbi_engine.ratio import ensemble as ensemble_module
from sbi_engine.ratio.ensemble import FORMAT
from sbi_engine.ratio.model import build_model, init_stacked, numpy_forward
from sbi_engine.ratio.prepare import Standardizer

NAMES = ("m", "c", "phi")


def random_ensemble(members=5, layers=2, width=16, seed=0, periodic=(2,)):
    """An untrained ensemble with random weights and a non-trivial preprocessing."""
    rng = np.random.default_rng(seed)
    scaler = Standardizer.fit(rng.normal(3.0, 2.0, (500, 3)).astype(np.float32), periodic)
    model = build_model(layers, width)
    params = init_stacked(
        model, jax.random.split(jax.random.PRNGKey(seed), members), scaler.n_inputs
    )
    meta = {
        "format": FORMAT,
        "model": {
            "hidden_layers": layers,
            "width": width,
            "activation": "silu",
            "dtype": "float32",
            "n_inputs": scaler.n_inputs,
        },
        "feature_names": list(NAMES),
        "scaler": scaler.to_dict(),
        "config": {},
        "members": members,
    }
    return Ensemble(jax.device_get(params), meta)


@pytest.fixture(scope="module")
def ens():
    return random_ensemble()


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(1).normal(3.0, 2.0, (3001, 3)).astype(np.float32)


def numpy_member_logits(ens, x):
    """Independent forward pass: encode + standardise from metadata, then plain NumPy layers."""
    meta = ens.metadata
    cols = []
    for j in range(x.shape[1]):
        cols += [np.cos(x[:, j]), np.sin(x[:, j])] if j in meta["scaler"]["periodic"] else [x[:, j]]
    z = (np.stack(cols, 1) - np.asarray(meta["scaler"]["mean"])) / np.asarray(
        meta["scaler"]["scale"]
    )
    return np.stack(
        [
            numpy_forward(jax.tree.map(lambda a, m=m: a[m], ens.params), z)
            for m in range(ens.members)
        ]
    )


def test_member_logits_match_an_independent_numpy_forward(ens, x):
    np.testing.assert_allclose(
        ens.member_log_ratios(x), numpy_member_logits(ens, x), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("aggregate", ["mean_ratio", "median_score", "mean_log_ratio"])
def test_aggregates_and_spread(ens, x, aggregate):
    z = numpy_member_logits(ens, x)
    expected = {
        "mean_ratio": np.log(np.mean(np.exp(z), axis=0)),
        "mean_log_ratio": np.mean(z, axis=0),
        "median_score": np.median(
            z, axis=0
        ),  # odd M: the median score is the median logit's sigmoid
    }[aggregate]
    log_r, spread = ens.log_ratio(x, aggregate=aggregate)
    assert log_r.dtype == np.float64 and log_r.shape == (len(x),)
    np.testing.assert_allclose(log_r, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(spread, np.std(z, axis=0, ddof=1), rtol=1e-3, atol=1e-4)


def test_chunk_size_does_not_change_results(ens, x):
    a, sa = ens.log_ratio(x, chunk_size=1 << 16)
    b, sb = ens.log_ratio(x, chunk_size=256)  # 12 chunks, last one padded
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sa, sb, rtol=1e-6, atol=1e-6)


def test_members_evaluated_in_groups_when_activations_would_not_fit(ens, x, monkeypatch):
    full = ens.member_log_ratios(x, chunk_size=1024)
    monkeypatch.setattr(
        ensemble_module, "_ACTIVATION_BUDGET", 2 * 4 * 1024 * 16 * 2
    )  # two members at a time
    assert ens._member_batch(1024) == 2
    np.testing.assert_allclose(
        ens.member_log_ratios(x, chunk_size=1024), full, rtol=1e-6, atol=1e-6
    )


def test_save_load_round_trip_and_plain_numpy_reading(ens, x, tmp_path):
    path = tmp_path / "ensemble.npz"
    ens.save(path)
    loaded = Ensemble.load(path)
    assert loaded.members == ens.members and loaded.feature_names == NAMES
    np.testing.assert_array_equal(loaded.member_log_ratios(x), ens.member_log_ratios(x))
    with np.load(path) as z:  # what a physicist does in a notebook, without sbi_engine
        meta = json.loads(z["metadata.json"].tobytes())
        assert meta["format"] == FORMAT and z["params/hidden_0/kernel"].shape == (5, 4, 16)
    assert Ensemble.from_bytes(ens.to_bytes()).metadata == ens.metadata


def test_wrong_inputs_are_named(ens, tmp_path):
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        ens.log_ratio(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="aggregate"):
        ens.log_ratio(np.zeros((4, 3)), aggregate="max")
    bad = tmp_path / "junk.npz"
    np.savez(bad, a=np.zeros(2))
    with pytest.raises(ValueError, match="junk.npz: no metadata.json"):
        Ensemble.load(bad)
