"""Sample container, validation, splits, scaling and the file loaders (Parquet, ROOT, HDF5,
NumPy), including the real CMS Open Data ROOT files in ../shared/data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from sbi_engine.data import (
    DataError,
    Sample,
    Scaler,
    load_sample,
    split_sample,
    validate_sample,
)
from sbi_engine.demo import OBSERVABLES, DemoProblem
from sbi_engine.sample_specs import load_sample_spec

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(
            f"real ROOT test file {path} is absent (expected in ../shared/data next to the repo)"
        )
    return path


def make_sample(n=100, d=3, seed=0, source="mem") -> Sample:
    rng = np.random.default_rng(seed)
    return Sample(
        rng.normal(size=(n, d)), rng.uniform(0.5, 1.5, n), tuple(f"f{j}" for j in range(d)), source
    )


# ----------------------------------------------------------------------------- Sample


def test_sample_converts_and_subsets():
    s = make_sample(10)
    assert s.features.dtype == np.float32 and s.weights.dtype == np.float64 and len(s) == 10
    sub = s.subset(np.array([1, 3]))
    np.testing.assert_array_equal(sub.features, s.features[[1, 3]])
    assert sub.names == s.names and sub.source == s.source
    assert s.with_weights(scale=2.0).total_weight == pytest.approx(2 * s.total_weight)
    np.testing.assert_array_equal(s.with_weights(np.ones(10)).weights, np.ones(10))
    np.testing.assert_array_equal(s.column("f1"), s.features[:, 1])
    with pytest.raises(DataError, match="no feature 'zz'"):
        s.column("zz")


def test_sample_shape_errors_name_source():
    with pytest.raises(DataError, match=r"src: length mismatch: 5 feature rows but 4 weights"):
        Sample(np.zeros((5, 2)), np.ones(4), ("a", "b"), "src")
    with pytest.raises(DataError, match="2 feature columns but 1 names"):
        Sample(np.zeros((5, 2)), np.ones(5), ("a",), "src")


# ----------------------------------------------------------------------------- validation


def test_validate_refuses_bad_values_with_counts():
    x = np.zeros((6, 2))
    x[[1, 4], 1] = np.nan
    x[2, 0] = np.inf
    with pytest.raises(
        DataError, match=r"src: column 'a' has 0 NaN and 1 infinite value\(s\) out of 6 rows"
    ):
        validate_sample(Sample(x, np.ones(6), ("a", "b"), "src"))
    x[2, 0] = 0
    with pytest.raises(DataError, match=r"column 'b' has 2 NaN"):
        validate_sample(Sample(x, np.ones(6), ("a", "b"), "src"))
    with pytest.raises(DataError, match="empty"):
        validate_sample(Sample(np.zeros((0, 2)), np.ones(0), ("a", "b"), "src"))
    w = np.ones(6)
    w[3] = np.nan
    with pytest.raises(DataError, match=r"weights have 1 NaN"):
        validate_sample(Sample(np.zeros((6, 2)), w, ("a", "b"), "src"))


def test_negative_weights_refused_unless_allowed():
    s = Sample(np.zeros((5, 1)), [1.0, -0.5, 2.0, -0.1, 1.0], ("a",), "nlo.root")
    with pytest.raises(
        DataError, match=r"nlo.root: 2 of 5 rows have negative weights.*allow_negative_weights"
    ):
        validate_sample(s)
    assert validate_sample(s, allow_negative_weights=True) is s
    with pytest.raises(DataError, match="sum of weights"):
        validate_sample(
            Sample(np.zeros((2, 1)), [1.0, -1.0], ("a",), "x"), allow_negative_weights=True
        )


# ----------------------------------------------------------------------------- splits


def test_split_is_seeded_disjoint_and_recorded():
    s = make_sample(1000)
    sp = split_sample(s, fractions=(0.7, 0.2, 0.1), seed=3)
    assert (len(sp.train), len(sp.validation), len(sp.holdout)) == (700, 200, 100)
    idx = np.concatenate(sp.indices)
    assert np.array_equal(np.sort(idx), np.arange(1000))
    np.testing.assert_array_equal(sp.validation.features, s.features[sp.indices[1]])
    again = split_sample(s, fractions=(0.7, 0.2, 0.1), seed=3)
    other = split_sample(s, fractions=(0.7, 0.2, 0.1), seed=4)
    rec = sp.to_dict()
    assert json.loads(json.dumps(rec)) == rec
    assert rec["seed"] == 3 and rec["sizes"] == {"train": 700, "validation": 200, "holdout": 100}
    assert (
        rec["indices_sha256"]
        == again.to_dict()["indices_sha256"]
        != other.to_dict()["indices_sha256"]
    )
    assert sum(rec["sum_weights"].values()) == pytest.approx(s.total_weight)
    r = split_sample(s, seed=1, rescale_weights=True)
    for part in (r.train, r.validation, r.holdout):
        assert part.total_weight == pytest.approx(s.total_weight)
    with pytest.raises(ValueError, match="fractions"):
        split_sample(s, fractions=(0.5, 0.2, 0.2))
    with pytest.raises(DataError, match="too few"):
        split_sample(make_sample(3), fractions=(0.9, 0.05, 0.05))


# ----------------------------------------------------------------------------- scaler


def test_scaler_weighted_and_roundtrip():
    rng = np.random.default_rng(1)
    x = rng.normal([1.0, -2.0, 5.0], [2.0, 0.5, 1e-20], size=(500, 3))
    x[:, 2] = 5.0  # constant column
    w = rng.uniform(0, 2, 500)
    sc = Scaler.fit(x, w)
    mean = (w[:, None] * x).sum(0) / w.sum()
    np.testing.assert_allclose(sc.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(
        sc.scale[:2], np.sqrt((w[:, None] * (x - mean) ** 2).sum(0) / w.sum())[:2], rtol=1e-12
    )
    assert sc.scale[2] == 1.0
    z = sc.apply(x)
    assert z.dtype == np.float32 and abs(np.average(z[:, 0], weights=w)) < 1e-5
    np.testing.assert_allclose(sc.invert(z), x, rtol=1e-5, atol=1e-5)
    back = Scaler.from_dict(json.loads(json.dumps(sc.to_dict())))
    np.testing.assert_array_equal(back.apply(x), z)
    s = Sample(x, w, ("a", "b", "c"), "m")
    assert Scaler.fit(s).names == ("a", "b", "c")
    np.testing.assert_allclose(Scaler.fit(s).mean, sc.mean, rtol=1e-6)
    with pytest.raises(ValueError, match=r"expected \(n, 3\)"):
        sc.apply(np.zeros((2, 2)))


# ----------------------------------------------------------------------------- Parquet


@pytest.fixture
def parquet_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "a": np.arange(6, dtype=np.float64),
            "b": np.array([1.0, 2.0, np.nan, 4.0, np.inf, 6.0]),
            "w": np.array([1.0, 1.0, 0.5, 0.5, 2.0, 2.0]),
            "jets": pa.array([[1.0, 2.0], [3.0], [], [4.0, 5.0, 6.0], [7.0], [8.0, 9.0]]),
            "odd name.x": np.arange(6) * 10.0,
        }
    )
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    return path


def test_parquet_expressions_selection_and_weights(parquet_file):
    s = load_sample(
        parquet_file,
        features={"a2": "a * 2", "j0": "jets[:, 0]", "n": "num(jets)", "o": "odd name.x"},
        weight="w",
        selection="(num(jets) >= 1) & (a != 4)",
    )
    keep = np.array([0, 1, 3, 5])
    np.testing.assert_array_equal(s.features[:, 0], 2 * keep)
    np.testing.assert_array_equal(s.features[:, 1], [1.0, 3.0, 4.0, 8.0])
    np.testing.assert_array_equal(s.features[:, 2], [2, 1, 3, 2])
    np.testing.assert_array_equal(s.features[:, 3], 10.0 * keep)
    np.testing.assert_array_equal(s.weights, [1.0, 1.0, 0.5, 2.0])
    assert s.names == ("a2", "j0", "n", "o") and "events.parquet" in s.source


def test_parquet_bad_input_named(parquet_file):
    with pytest.raises(
        DataError, match=r"events.parquet: feature 'b' \('b'\) has 1 NaN and 1 infinite"
    ):
        load_sample(parquet_file, features=["a", "b"])
    with pytest.raises(
        DataError, match=r"no column 'c' .*columns available: \['a', 'b', 'w', 'jets'"
    ):
        load_sample(parquet_file, features={"x": "c + 1"})
    with pytest.raises(
        DataError, match=r"'jets\[:, 0\]': 1 of 6 rows have fewer than 1 entries in jets"
    ):
        load_sample(parquet_file, features={"j0": "jets[:, 0]"})
    with pytest.raises(DataError, match="jagged"):
        load_sample(parquet_file, features={"j": "jets"})
    with pytest.raises(
        DataError,
        match=r"weights have 1 NaN and 1 infinite value\(s\) out of 6 rows \(weight 'b'\)",
    ):
        load_sample(parquet_file, features=["a"], weight="b")
    ok = load_sample(
        parquet_file, features=["a", "b"], selection="np.isfinite(b)"
    )  # the selection removes them
    assert len(ok) == 4
    with pytest.raises(DataError, match=r"keeps 0 of 6 rows"):
        load_sample(parquet_file, features=["a"], selection="a > 100")
    with pytest.raises(
        DataError, match=r"2 of 6 rows have negative weights.*\(weight .w - 0.75.\)"
    ):
        load_sample(parquet_file, features=["a"], weight="w - 0.75")
    assert (
        len(
            load_sample(
                parquet_file, features=["a"], weight="w - 0.75", allow_negative_weights=True
            )
        )
        == 6
    )


def test_expressions_are_restricted(parquet_file):
    with pytest.raises(DataError, match="uses the attribute 'np.__dict__'"):
        load_sample(parquet_file, features={"x": "np.__dict__"})
    with pytest.raises(DataError, match="uses the attribute 'np.save'"):
        load_sample(parquet_file, features={"x": "np.save('x.npy', a)"})
    with pytest.raises(DataError, match="uses the attribute 'a.tofile'"):
        load_sample(parquet_file, features={"x": "a.tofile('x.bin')"})
    s = load_sample(parquet_file, features={"x": "np.log1p(a) + ak.num(jets, axis=1)"})
    np.testing.assert_allclose(
        s.features[:, 0], np.log1p(np.arange(6)) + [2, 1, 0, 3, 1, 2], rtol=1e-6
    )
    with pytest.raises(DataError, match="no column '__import__'"):
        load_sample(parquet_file, features={"x": "__import__('os')"})
    with pytest.raises(DataError, match="disallowed construct"):
        load_sample(parquet_file, features={"x": "[a for a in a]"})
    with pytest.raises(DataError, match="not a valid expression"):
        load_sample(parquet_file, features={"x": "a +"})


# ----------------------------------------------------------------------------- HDF5 / NumPy


def test_hdf5_columns_and_matrix(tmp_path):
    import h5py

    rng = np.random.default_rng(0)
    m = rng.normal(size=(50, 3))
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("cols")
        g["x"], g["y"], g["w"] = m[:, 0], m[:, 1], np.full(50, 0.1)
        d = f.create_dataset("mat", data=m)
        d.attrs["names"] = ["p", "q", "r"]
        f["bare"] = m
        bad = f.create_group("bad")
        bad["x"], bad["y"] = np.zeros(3), np.zeros(4)
    s = load_sample(path, tree="cols", features={"x": "x", "s": "x + y"}, weight="w")
    np.testing.assert_allclose(s.features[:, 1], (m[:, 0] + m[:, 1]).astype(np.float32), rtol=1e-6)
    assert s.total_weight == pytest.approx(5.0)
    s2 = load_sample(path, tree="mat", features=["r", "p"])
    np.testing.assert_array_equal(s2.features, m[:, [2, 0]].astype(np.float32))
    s3 = load_sample(path, tree="bare", features=["x1"])
    np.testing.assert_array_equal(s3.features[:, 0], m[:, 1].astype(np.float32))
    with pytest.raises(DataError, match=r"length mismatch between columns: \{'x': 3, 'y': 4\}"):
        load_sample(path, tree="bad", features=["x"])
    with pytest.raises(DataError, match=r"no group or dataset 'nope'; top-level keys"):
        load_sample(path, tree="nope", features=["x"])


def test_numpy_formats(tmp_path):
    m = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.save(tmp_path / "m.npy", m)
    s = load_sample(tmp_path / "m.npy", features={"b2": "b * 2"}, columns=["a", "b", "c"])
    np.testing.assert_array_equal(s.features[:, 0], 2 * m[:, 1])
    np.savez(tmp_path / "named.npz", pt=m[:, 0], eta=m[:, 1], w=m[:, 2] + 1)
    s = load_sample(tmp_path / "named.npz", features=["eta", "pt"], weight="w")
    np.testing.assert_array_equal(s.features, m[:, [1, 0]].astype(np.float32))
    np.testing.assert_array_equal(s.weights, m[:, 2] + 1)
    np.savez(tmp_path / "matrix.npz", features=m, names=np.array(["u", "v", "z"]))
    assert load_sample(tmp_path / "matrix.npz", features=["z"]).features[:, 0].tolist() == [
        2,
        5,
        8,
        11,
    ]
    np.savez(tmp_path / "bad.npz", a=np.zeros(3), b=np.zeros(2))
    with pytest.raises(
        DataError, match=r"bad.npz: length mismatch between columns: \{'a': 3, 'b': 2\}"
    ):
        load_sample(tmp_path / "bad.npz", features=["a"])
    with pytest.raises(DataError, match="missing.npz: file not found"):
        load_sample(tmp_path / "missing.npz", features=["a"])
    with pytest.raises(DataError, match="only local files"):
        load_sample("gs://bucket/x.root", features=["a"])
    assert len(load_sample(f"file://{tmp_path / 'named.npz'}", features=["pt"])) == 4
    (tmp_path / "x.csv").write_text("a\n1\n")
    with pytest.raises(DataError, match="cannot tell the format from the suffix '.csv'"):
        load_sample(tmp_path / "x.csv", features=["a"])
    with pytest.raises(DataError, match="unknown format 'csv'"):
        load_sample(tmp_path / "x.csv", format="csv", features=["a"])


# ----------------------------------------------------------------------------- ROOT (real files)


def test_hzz_leading_muon_pt_matches_direct_computation():
    import uproot

    path = shared_file("uproot-HZZ.root")
    s = load_sample(
        path,
        tree="events",
        features={
            "mu_pt": "sqrt(Muon_Px[:, 0]**2 + Muon_Py[:, 0]**2)",
            "mu_pt_helper": "pt(Muon_Px[:, 0], Muon_Py[:, 0])",
        },
        weight="EventWeight",
        selection="NMuon >= 1",
    )
    raw = uproot.open(path)["events"].arrays(["Muon_Px", "Muon_Py", "EventWeight"], library="np")
    expect, wts = [], []
    for px, py, w in zip(
        raw["Muon_Px"], raw["Muon_Py"], raw["EventWeight"]
    ):  # plain per-event loop
        if len(px) >= 1:
            expect.append(math.hypot(float(px[0]), float(py[0])))
            wts.append(float(w))
    assert len(s) == len(expect) > 2000
    np.testing.assert_allclose(s.features[:, 0], expect, rtol=1e-5)
    np.testing.assert_allclose(s.features[:, 1], expect, rtol=1e-5)
    np.testing.assert_allclose(s.weights, wts, rtol=1e-6)
    assert np.any(s.weights == 0.0)  # exact zero weights are accepted


def test_hzz_out_of_range_index_counts_rows():
    import uproot

    path = shared_file("uproot-HZZ.root")
    n_mu = uproot.open(path)["events"]["NMuon"].array(library="np")
    short = int(np.sum(n_mu < 2))
    assert short > 0
    with pytest.raises(
        DataError, match=rf"'Muon_E\[:, 1\]': {short} of {len(n_mu)} rows have fewer than 2 entries"
    ):
        load_sample(path, features={"e2": "Muon_E[:, 1]"})
    # ... which a selection removes first: the dimuon mass of the two leading muons
    s = load_sample(
        path,
        features={
            "m_mumu": "mass(Muon_E[:, 0] + Muon_E[:, 1], Muon_Px[:, 0] + Muon_Px[:, 1], "
            "Muon_Py[:, 0] + Muon_Py[:, 1], Muon_Pz[:, 0] + Muon_Pz[:, 1])"
        },
        selection="num(Muon_E) >= 2",
    )
    assert len(s) == len(n_mu) - short and np.all(s.features >= 0)


def test_zmumu_dimuon_mass_peaks_at_z():
    path = shared_file("uproot-Zmumu.root")
    s = load_sample(
        path, features={"m": "mass(E1 + E2, px1 + px2, py1 + py2, pz1 + pz2)", "M": "M"}
    )
    m = s.features[:, 0].astype(np.float64)
    np.testing.assert_allclose(m, s.features[:, 1], rtol=1e-4, atol=1e-3)  # the stored mass branch
    counts, edges = np.histogram(m, bins=np.arange(60.0, 121.0, 2.0))
    peak = 0.5 * (edges[np.argmax(counts)] + edges[np.argmax(counts) + 1])
    assert 88.0 <= peak <= 94.0
    assert abs(np.median(m) - 91.2) < 3.0


def test_root_bad_input_is_named():
    hzz = shared_file("uproot-HZZ.root")
    with pytest.raises(DataError, match=r"no branch 'Muon_Pt'.*did you mean.*'Muon_Px'"):
        load_sample(hzz, features={"pt": "Muon_Pt[:, 0]"})
    with pytest.raises(DataError, match=r"no tree 'Events'; trees in the file: \['events'\]"):
        load_sample(hzz, tree="Events", features=["NMuon"])
    nano = shared_file("nanoAOD_2015_CMS_Open_Data_ttbar.root")
    with pytest.raises(DataError, match="jagged"):
        load_sample(nano, features={"jet_pt": "Jet_pt"})
    s = load_sample(nano, features={"n_jet": "nJet", "ht": "sum(Jet_pt)"}, entry_stop=50)
    assert len(s) == 50 and s.source.endswith(":Events")


def test_root_written_here_nan_and_negative_weights(tmp_path):
    import uproot

    path = tmp_path / "t.root"
    cols = {
        "x": np.array([1.0, np.nan, 3.0, np.nan, 5.0]),
        "y": np.arange(5.0),
        "w": np.array([1.0, -1.0, 1.0, -2.0, 1.0]),
    }
    with uproot.recreate(path) as f:
        f.mktree("tree", {k: np.float64 for k in cols})  # a classic TTree
        f["tree"].extend(cols)
        f["ntuple"] = cols  # uproot 5.7 writes a dict as an RNTuple
    for tree in ("tree", "ntuple"):
        with pytest.raises(DataError, match=rf"t.root:{tree}: feature 'x' \('x'\) has 2 NaN"):
            load_sample(path, tree=tree, features=["x", "y"])
        with pytest.raises(DataError, match=r"2 of 4 rows have negative weights"):
            load_sample(path, tree=tree, features=["y"], weight="w", selection="y < 4")
        s = load_sample(path, tree=tree, features={"y2": "y * 2"}, weight="abs(w)")
        np.testing.assert_array_equal(s.features[:, 0], 2 * cols["y"])
    with pytest.raises(DataError, match=r"pass tree=; the file has 2 trees .*\['ntuple', 'tree'\]"):
        load_sample(path, features=["x"])
    (tmp_path / "fake.root").write_text("not root")
    with pytest.raises(DataError, match="cannot be read as a ROOT file"):
        load_sample(tmp_path / "fake.root", features=["x"])


# ----------------------------------------------------------------------------- specs


def test_load_sample_spec_demo_and_file(parquet_file):
    s = load_sample_spec(
        {
            "demo": {
                "process": "S",
                "n": 500,
                "seed": 1,
                "alpha": {"bkg_norm": 1.0},
                "n_nuisances": 3,
            }
        }
    )
    ref = DemoProblem(3).sample("S", 500, 1, alpha={"bkg_norm": 1.0})
    np.testing.assert_array_equal(s.features, ref.features)
    np.testing.assert_array_equal(s.weights, ref.weights)
    assert s.names == OBSERVABLES
    d = load_sample_spec({"demo": {"mu": 1.0, "n": 200, "seed": 2}})
    assert len(d) == 200 and np.all(d.weights == 1)
    f = load_sample_spec({"path": str(parquet_file), "features": {"a": "a"}, "weight": "w"})
    assert len(f) == 6
    with pytest.raises(DataError, match=r"unknown demo key\(s\) \['proces'\]"):
        load_sample_spec({"demo": {"proces": "S", "n": 5}})
    with pytest.raises(DataError, match="unknown process"):
        load_sample_spec({"demo": {"process": "Q", "n": 5}})
    with pytest.raises(DataError, match=r"unknown key\(s\) \['wieght'\]"):
        load_sample_spec({"path": str(parquet_file), "features": ["a"], "wieght": "w"})
    with pytest.raises(DataError, match="'demo' or a 'path'"):
        load_sample_spec({"file": "x"})
