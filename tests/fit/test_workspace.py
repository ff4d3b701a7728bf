"""Workspace construction, validation messages and the JSON + array-file round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sbi_engine.fit import Model, Workspace, WorkspaceError

# Synthetic workspaces with random ratios (they do not average to 1 on the normalisation sample,
# which the model rightly warns about for real workspaces).
pytestmark = pytest.mark.filterwarnings("ignore:.*ratios average to:UserWarning")


def _ws(n=50, **over):
    rng = np.random.default_rng(0)
    spec = dict(
        pois={"mu": {"init": 1.0, "bounds": (0.0, 10.0)}},
        norm_factors={"kB": {"init": 1.0, "bounds": (0.1, 5.0)}},
        processes={
            "S": {"yield": 10.0, "coefficient": "mu - sqrt(mu)", "ratio": rng.uniform(0.5, 2, n)},
            "SBI": {"yield": 12.0, "coefficient": "sqrt(mu)", "ratio": rng.uniform(0.5, 2, n)},
            "B": {"yield": 90.0, "coefficient": "kB*(1 - sqrt(mu))", "ratio": np.ones(n)},
        },
        weights=rng.uniform(0.1, 1, n),
        nuisances=[
            {
                "name": "jes",
                "aux": 0.2,
                "effects": {
                    "S": {
                        "norm": (1.05, 0.97),
                        "shape": (rng.uniform(0.9, 1.1, n), rng.uniform(0.9, 1.1, n)),
                    },
                    "B": {"norm": (1.02, 0.99)},
                },
            }
        ],
        control_regions=[
            {
                "name": "CR",
                "observed": [100, 40],
                "samples": {
                    "B": {
                        "yields": [95.0, 38.0],
                        "coefficient": "kB",
                        "norm": {"jes": ([1.1, 1.2], [0.9, 0.8])},
                    }
                },
            }
        ],
        generated_at={"mu": 1.0},
    )
    spec.update(over)
    return Workspace.from_arrays(**spec)


def test_round_trip_keeps_every_number(tmp_path):
    ws = _ws()
    path = ws.save(tmp_path / "ws.json")
    doc = json.loads(path.read_text())
    assert doc["processes"][0]["ratio"]["file"].endswith(".npy")
    back = Workspace.load(path)
    assert back.parameter_names == ("mu", "kB", "jes") and back.nuisances[0].aux == 0.2
    assert back.data.kind == "asimov" and back.data.generated_at == {"mu": 1.0}
    np.testing.assert_array_equal(back.processes[0].ratio, ws.processes[0].ratio)
    np.testing.assert_array_equal(
        back.nuisances[0].effects["S"].shape[1], ws.nuisances[0].effects["S"].shape[1]
    )
    assert "shape" not in {
        k for k, v in vars(back.nuisances[0].effects["B"]).items() if v is not None
    }
    m1, m2 = Model(ws), Model(back)
    t = m1.theta({"mu": 1.0, "kB": 1.2, "jes": 0.4})
    assert np.isfinite(m1.nll(t))
    assert m1.nll(t) == m2.nll(t)


def test_np_without_effect_on_a_process_stores_nothing():
    ws = _ws()
    per_proc = {p: ws.nuisances[0].effects.get(p) for p in ("S", "SBI", "B")}
    assert per_proc["SBI"] is None and per_proc["B"].shape is None
    m = Model(ws)
    assert [len(u) for u in m.data["up"]] == [1, 0, 0]


def test_row_count_mismatch_names_process_and_rows():
    with pytest.raises(
        WorkspaceError, match=r"processes\.SBI\.ratio: has 49 rows but the data has 50 events"
    ):
        _ws(processes={"SBI": {"yield": 1.0, "coefficient": "sqrt(mu)", "ratio": np.ones(49)}})


def test_bad_values_are_reported_with_counts():
    r = np.ones(50)
    r[[3, 7]] = -1.0
    with pytest.raises(
        WorkspaceError,
        match=r"processes\.S\.ratio: 2 of 50 values are not finite and > 0 \(first at row 3",
    ):
        _ws(processes={"S": {"yield": 1.0, "coefficient": "mu", "ratio": r}})


def test_bad_coefficient_names_the_process():
    with pytest.raises(Exception, match="process 'S'.*unknown parameter 'nu'"):
        _ws(processes={"S": {"yield": 1.0, "coefficient": "nu*2", "ratio": np.ones(50)}})


def test_schema_errors_name_the_json_key(tmp_path):
    path = _ws().save(tmp_path / "ws.json")
    doc = json.loads(path.read_text())
    doc["processes"][1]["yield"] = "lots"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    (tmp_path / "bad.arrays").symlink_to(tmp_path / "ws.arrays")
    with pytest.raises(
        WorkspaceError,
        match=r"bad\.json: processes\[1\]\.yield: expected a number, got a string 'lots'",
    ):
        Workspace.load(bad)
    doc = json.loads(path.read_text())
    doc["processes"][0]["ratio"]["file"] = "missing.npy"
    bad.write_text(json.dumps(doc))
    with pytest.raises(WorkspaceError, match=r"processes\.S\.ratio: cannot read array file"):
        Workspace.load(bad)


def test_norm_weights_round_trip_and_drive_the_model(tmp_path):
    ws = _ws(
        weights=np.r_[np.ones(30), np.zeros(20)],
        norm_weights=np.r_[np.zeros(30), np.linspace(0.5, 1.5, 20)],
        data_kind="observed",
        generated_at=None,
    )
    path = ws.save(tmp_path / "ws.json")
    doc = json.loads(path.read_text())
    assert doc["data"]["norm_weights"]["file"].endswith("norm_weights.npy")
    back = Workspace.load(path)
    np.testing.assert_array_equal(back.data.norm_weights, ws.data.norm_weights)
    assert back.with_data(np.ones(50), kind="observed").data.norm_weights is back.data.norm_weights
    m1, m2 = Model(ws), Model(back)
    assert m1.has_norm and m1.norm_source == "norm_weights"
    t = m1.theta({"mu": 1.0, "kB": 1.2, "jes": 1.7})
    assert np.isfinite(m1.nll(t)) and m1.nll(t) == m2.nll(t)
    doc["data"]["norm_weights"] = [1, 2]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(
        WorkspaceError,
        match=r"bad\.json: data\.norm_weights: expected a mapping, got a list \[1, 2\]",
    ):
        Workspace.load(bad)
