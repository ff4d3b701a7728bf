"""ONNX export of ensembles (`sbi_engine.ratio.onnx_export`, `nsbi export onnx`).

onnxruntime's outputs must equal `Ensemble.log_ratio` / `member_log_ratios` within 1e-5 on
10,000 events, for a 3x64 and a 7x1500 ensemble (weights initialised, not trained, to keep the
test fast) and a small trained one, with periodic features and standardisation in the graph.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from backend.cli import main
from sbi_engine.data import Sample
from sbi_engine.ratio import Ensemble, TrainConfig, train_ensemble
from sbi_engine.ratio.ensemble import FORMAT
from sbi_engine.ratio.model import build_model, init_stacked
from sbi_engine.ratio.prepare import Standardizer

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from sbi_engine.ratio.onnx_export import (  # noqa: E402
    ONNX_FORMAT,
    OUTPUTS,
    export_onnx,
    run_onnx,
    save_onnx,
    synthetic_events,
    verify,
)

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("pt", "eta", "phi", "m")
TOL = 1e-5
N_EVENTS = 10_000


def raw_events(n: int, seed: int) -> np.ndarray:
    """Raw features in NAMES order: phi an angle in [-pi, pi), the others far from (0, 1)."""
    rng = np.random.default_rng(seed)
    return np.stack(
        [
            rng.gamma(2.0, 20.0, n) + 20.0,
            rng.normal(0.0, 1.5, n),
            rng.uniform(-np.pi, np.pi, n),
            rng.normal(91.0, 8.0, n),
        ],
        axis=1,
    ).astype(np.float32)


def initialised_ensemble(
    layers: int,
    width: int,
    members: int,
    *,
    activation: str = "silu",
    gain: float = 1.0,
    seed: int = 0,
) -> Ensemble:
    """Untrained members, with the standardisation fitted on raw_events and phi periodic.
    ``gain`` scales the hidden kernels so deep networks' logits stay of order one."""
    scaler = Standardizer.fit(raw_events(2000, seed + 100), periodic=(2,))
    model = build_model(layers, width, activation)
    keys = jax.random.split(jax.random.PRNGKey(seed), members)
    params = jax.device_get(init_stacked(model, keys, scaler.n_inputs))
    for i in range(layers):
        params[f"hidden_{i}"]["kernel"] = params[f"hidden_{i}"]["kernel"] * gain
        params[f"hidden_{i}"]["bias"] = (
            np.random.default_rng(seed + i).normal(0.0, 0.1, params[f"hidden_{i}"]["bias"].shape)
        ).astype(np.float32)
    meta = {
        "format": FORMAT,
        "model": {
            "hidden_layers": layers,
            "width": width,
            "activation": activation,
            "dtype": "float32",
            "n_inputs": scaler.n_inputs,
        },
        "feature_names": list(NAMES),
        "scaler": scaler.to_dict(),
        "config": {},
        "members": members,
    }
    return Ensemble(params, meta)


def check(ensemble: Ensemble, x: np.ndarray, *, member_events: int | None = None) -> dict:
    """onnxruntime against the Ensemble; returns the max abs differences (and asserts them)."""
    model = export_onnx(ensemble)
    got = run_onnx(model, x)
    log_r, spread = ensemble.log_ratio(x)
    xm = x if member_events is None else x[:member_events]
    members = ensemble.member_log_ratios(xm)
    diffs = {
        "log_ratio": float(np.max(np.abs(got["log_ratio"] - log_r))),
        "log_ratio_spread": float(np.max(np.abs(got["log_ratio_spread"] - spread))),
        "member_log_ratios": float(np.max(np.abs(got["member_log_ratios"][: len(xm)].T - members))),
        "max_abs_log_ratio": float(np.max(np.abs(log_r))),
    }
    print(json.dumps(diffs))
    assert got["member_log_ratios"].shape == (len(x), ensemble.members)
    assert got["log_ratio"].shape == got["log_ratio_spread"].shape == (len(x),)
    assert all(v.dtype == np.float32 for v in got.values())
    assert diffs["log_ratio"] < TOL and diffs["member_log_ratios"] < TOL
    assert diffs["log_ratio_spread"] < TOL
    # the check means something: the members disagree and the log ratios are not tiny
    assert np.mean(spread) > 1e-3 and diffs["max_abs_log_ratio"] > 0.1
    return diffs


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return raw_events(N_EVENTS, seed=7)


def test_3x64_ensemble_matches_within_1e_5(x):
    check(initialised_ensemble(3, 64, 5, gain=1.6), x)


@pytest.mark.slow
def test_7x1500_ensemble_matches_within_1e_5(x):
    # two members keep CI fast (the cost is 13.5 M multiply-adds per event and member);
    # the per-member outputs are compared on the first 1,000 events. gain 1.3 gives log
    # ratios up to ~1.5; float32 sums over 1500-wide layers taken in another order agree to
    # ~1.5e-6 relative (measured), so 1e-5 absolute holds up to |log r| of a few.
    check(initialised_ensemble(7, 1500, 2, gain=1.3, seed=1), x, member_events=1000)


@pytest.fixture(scope="module")
def trained() -> Ensemble:
    rng = np.random.default_rng(3)
    num = raw_events(1500, 11)
    num[:, 2] = rng.vonmises(1.0, 2.0, 1500)  # a phi modulation the ratio must learn
    num[:, 3] += 4.0
    den = raw_events(1500, 12)
    cfg = TrainConfig(
        hidden_layers=2,
        width=32,
        members=3,
        batch_size=256,
        max_steps=60,
        eval_every=20,
        periodic_features=("phi",),
    )
    return train_ensemble(
        Sample(num, np.ones(1500), NAMES, "num"), Sample(den, np.ones(1500), NAMES, "den"), cfg
    ).ensemble


def test_trained_ensemble_matches_within_1e_5(trained, x):
    assert trained.scaler.periodic == (2,)
    check(trained, x)


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh", "elu", "softplus"])
def test_every_activation(activation, x):
    ens = initialised_ensemble(2, 16, 3, activation=activation, gain=1.5, seed=2)
    diffs = verify(ens, export_onnx(ens), x[:2000])
    assert max(diffs.values()) < TOL, diffs


@pytest.mark.parametrize("aggregate", ["median_score", "mean_log_ratio"])
@pytest.mark.parametrize("members", [1, 4])
def test_other_aggregates_and_one_member(aggregate, members, x):
    ens = initialised_ensemble(2, 16, members, gain=1.5, seed=3)
    model = export_onnx(ens, aggregate=aggregate)
    diffs = verify(ens, model, x[:2000])
    assert max(diffs.values()) < TOL, diffs
    if members == 1:
        assert not run_onnx(model, x[:10])["log_ratio_spread"].any()


def test_opset_18_and_later_take_the_axes_as_inputs(x):
    ens = initialised_ensemble(2, 16, 2, gain=1.5, seed=4)
    diffs = verify(ens, export_onnx(ens, opset=18), x[:2000])
    assert max(diffs.values()) < TOL


def test_the_model_describes_itself(trained):
    model = export_onnx(trained, aggregate="mean_ratio")
    props = {p.key: p.value for p in model.metadata_props}
    assert props["nsbi.format"] == ONNX_FORMAT
    assert json.loads(props["nsbi.feature_names"]) == list(NAMES)
    assert props["nsbi.aggregate"] == "mean_ratio" and props["nsbi.members"] == "3"
    assert json.loads(props["nsbi.outputs"]) == list(OUTPUTS)
    meta = json.loads(props["nsbi.metadata"])
    assert meta["scaler"] == trained.metadata["scaler"] and meta["model"]["hidden_layers"] == 2
    assert [i.name for i in model.graph.input] == ["features"]
    assert [o.name for o in model.graph.output] == list(OUTPUTS)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and dims[1].dim_value == len(NAMES)
    assert model.opset_import[0].version == 17


def test_bad_aggregate_is_refused(trained):
    with pytest.raises(ValueError, match="aggregate 'mean' not in"):
        export_onnx(trained, aggregate="mean")


def test_cli_writes_a_file_that_loads_and_agrees(trained, tmp_path, capsys):
    ens_path, out = tmp_path / "ens.npz", tmp_path / "ratio.onnx"
    trained.save(ens_path)
    assert main(["export", "onnx", str(ens_path), str(out), "--verify", "2000"]) == 0
    printed = capsys.readouterr().out
    assert "member_log_ratios [N, 3]" in printed and "verify on 2000 events" in printed
    onnx.checker.check_model(str(out))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == list(OUTPUTS)
    assert json.loads(session.get_modelmeta().custom_metadata_map["nsbi.feature_names"]) == list(
        NAMES
    )
    xs = synthetic_events(trained, 300)
    (log_r,) = session.run(["log_ratio"], {"features": xs})
    np.testing.assert_allclose(log_r, trained.log_ratio(xs)[0], atol=TOL, rtol=0)


def test_cli_bad_paths_exit_2(trained, tmp_path, capsys):
    ens_path = tmp_path / "ens.npz"
    trained.save(ens_path)
    assert main(["export", "onnx", str(tmp_path / "missing.npz"), str(tmp_path / "a.onnx")]) == 2
    assert "missing.npz: no such ensemble file" in capsys.readouterr().err
    assert main(["export", "onnx", str(ens_path), str(tmp_path / "no" / "a.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not an ensemble")
    assert main(["export", "onnx", str(junk), str(tmp_path / "a.onnx")]) == 2
    assert "not a readable ensemble file" in capsys.readouterr().err
    assert main(["export"]) == 2
    assert not list(tmp_path.glob("*.onnx"))


def test_save_writes_atomically(trained, tmp_path):
    out = tmp_path / "r.onnx"
    assert save_onnx(trained, out) == [str(out)]
    assert not list(tmp_path.glob("*.tmp"))
    assert onnx.load(str(out)).graph.output[1].name == "log_ratio"


def test_importing_the_engine_does_not_import_onnx():
    code = (
        "import sys, sbi_engine.ratio, sbi_engine.ratio.onnx_export, backend.cli;"
        "backend.cli.build_parser();"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
