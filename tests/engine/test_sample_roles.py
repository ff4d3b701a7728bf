"""Sample roles: the training part of a sample and the evaluation part the networks never see.

`load_sample_spec(spec, role)` splits a file sample per event by a content hash (or an
event-number expression, `split_by`), or takes a separate `eval_sample`; demo samples get a
fresh draw. Checked here: the parts are disjoint and make up the sample, the split ignores
the order of the rows, its size is the requested fraction within binomial errors, each
part's weights stand for the whole yield, bad settings are named, a training job trains on
the train part and runs its diagnostics on the eval part only, and analysis files accept and
validate the new keys.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sbi_engine.data import DataError
from sbi_engine.sample_specs import (
    DEFAULT_EVAL_FRACTION,
    EVAL_SEED_OFFSET,
    evaluation_spec,
    load_sample_spec,
    row_hash,
    sample_parts,
    split_record,
)

N = 4000


def write_parquet(path, n=N, seed=0, order=None, shift=0.0):
    rng = np.random.default_rng(seed)
    cols = {
        "a": rng.normal(size=n) + shift,
        "b": rng.exponential(size=n),
        "w": rng.uniform(0.5, 1.5, n),
        "evt": np.arange(n, dtype=np.int64) * 7 + 11,
    }
    if order is not None:
        cols = {k: v[order] for k, v in cols.items()}
    pq.write_table(pa.table(cols), path)
    return path


def rows(sample):
    """The set of rows of a sample, by their feature values."""
    return {tuple(r) for r in sample.features.tolist()}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    base = tmp_path_factory.mktemp("roles")
    perm = np.random.default_rng(5).permutation(N)
    return {
        "main": write_parquet(base / "main.parquet"),
        "perm": write_parquet(base / "perm.parquet", order=perm),
        "other": write_parquet(base / "other.parquet", n=900, seed=3, shift=0.5),
        "num": write_parquet(base / "num.parquet", n=1200, seed=7, shift=0.4),
        "den": write_parquet(base / "den.parquet", n=1200, seed=8),
        "tiny": write_parquet(base / "tiny.parquet", n=2, seed=9),
        "base": base,
    }


def spec(path, **extra):
    return {"path": str(path), "features": ["a", "b"], "weight": "w", **extra}


def test_parts_are_disjoint_and_make_up_the_whole_sample(files):
    s = spec(files["main"])
    whole = load_sample_spec(s)
    assert len(load_sample_spec(s, role=None)) == len(whole) == N  # role None: unchanged behaviour
    train, ev = load_sample_spec(s, role="train"), load_sample_spec(s, role="eval")
    assert len(train) + len(ev) == N
    assert rows(train).isdisjoint(rows(ev))
    assert rows(train) | rows(ev) == rows(whole)
    parts = sample_parts(s)
    np.testing.assert_array_equal(parts.train.features, train.features)
    np.testing.assert_array_equal(parts.eval.weights, ev.weights)
    assert "eval part" in ev.source and "train part" in train.source


def test_split_ignores_the_order_of_the_rows(files):
    a, b = spec(files["main"]), spec(files["perm"])
    assert rows(load_sample_spec(a, role="eval")) == rows(load_sample_spec(b, role="eval"))
    assert rows(load_sample_spec(a, role="train")) == rows(load_sample_spec(b, role="train"))
    ra, rb = split_record(a), split_record(b)
    assert ra["eval_rows_sha256"] == rb["eval_rows_sha256"]  # content digest: order-free
    assert ra["eval_indices_sha256"] != rb["eval_indices_sha256"]  # positions in the file differ
    assert ra["sizes"] == rb["sizes"] and ra == split_record(a)  # and deterministic
    # the row hash is a function of the values only
    x = np.array([0.5, -0.0, 3.0]), np.array([1.0, 2.0, 2.0])
    np.testing.assert_array_equal(row_hash(x), row_hash([np.array([0.5, 0.0, 3.0]), x[1]]))
    assert row_hash([np.array([1.0])])[0] == np.uint64(row_hash([np.array([1.0])])[0])
    assert len(set(row_hash([np.arange(1000.0)]).tolist())) == 1000


@pytest.mark.parametrize("fraction", [None, 0.5, 0.1])
def test_fraction_within_binomial_error_and_weights_rescaled(files, fraction):
    s = spec(files["main"]) if fraction is None else spec(files["main"], eval_fraction=fraction)
    f = DEFAULT_EVAL_FRACTION if fraction is None else fraction
    whole = load_sample_spec(s)
    parts = sample_parts(s)
    rec = parts.record
    assert rec["method"] == "row_hash" and rec["eval_fraction"] == f
    n_eval = rec["sizes"]["eval"]
    assert abs(n_eval / N - f) < 4 * math.sqrt(f * (1 - f) / N)
    # each part stands for the whole yield
    for part in (parts.train, parts.eval):
        assert part.total_weight == pytest.approx(whole.total_weight, rel=1e-12)
    # ... by one factor per part: 1 / (the part's share of the sum of weights)
    raw = dict(zip(map(tuple, whole.features.tolist()), whole.weights))
    for name, part in (("train", parts.train), ("eval", parts.eval)):
        ratio = part.weights / np.array([raw[tuple(r)] for r in part.features.tolist()])
        np.testing.assert_allclose(ratio, rec["scale"][name], rtol=1e-12)
        assert rec["scale"][name] == pytest.approx(whole.total_weight / rec["sum_weights"][name])
    assert rec["sum_weights"]["train"] + rec["sum_weights"]["eval"] == pytest.approx(
        whole.total_weight
    )


def test_split_by_an_event_number(files):
    s = spec(files["main"], split_by="evt", eval_fraction=0.4)
    rec = split_record(s)
    assert rec["method"] == "split_by" and rec["split_by"] == "evt"
    assert abs(rec["sizes"]["eval"] / N - 0.4) < 4 * math.sqrt(0.24 / N)
    # the event number alone decides: other features, same event numbers -> the same events
    evt = spec(files["main"], split_by="evt", eval_fraction=0.4, features=["evt"])
    other = {
        "path": str(files["other"]),
        "features": ["evt"],
        "split_by": "evt",
        "eval_fraction": 0.4,
    }
    ev_main = {r[0] for r in load_sample_spec(evt, role="eval").features.tolist()}
    ev_other = {r[0] for r in load_sample_spec(other, role="eval").features.tolist()}
    shared = {
        r[0] for r in load_sample_spec(other).features.tolist()
    }  # the first 900 event numbers
    assert ev_other == ev_main & shared
    # the permuted file splits the same way
    ev_perm = load_sample_spec(spec(files["perm"], split_by="evt", eval_fraction=0.4), role="eval")
    assert rows(ev_perm) == rows(load_sample_spec(s, role="eval"))


def test_eval_sample_is_honoured(files):
    s = spec(files["main"], eval_sample=spec(files["other"]))
    train, ev = load_sample_spec(s, role="train"), load_sample_spec(s, role="eval")
    whole, other = load_sample_spec(spec(files["main"])), load_sample_spec(spec(files["other"]))
    np.testing.assert_array_equal(train.features, whole.features)
    np.testing.assert_array_equal(train.weights, whole.weights)  # used as is: no rescaling
    np.testing.assert_array_equal(ev.features, other.features)
    np.testing.assert_array_equal(ev.weights, other.weights)
    np.testing.assert_array_equal(load_sample_spec(s).features, whole.features)
    rec = split_record(s)
    assert rec["method"] == "eval_sample" and rec["sizes"] == {"train": N, "eval": 900}
    assert str(files["other"]) in rec["eval_source"]


def test_demo_roles():
    d = {"demo": {"process": "S", "n": 300, "seed": 4}}
    assert evaluation_spec(d) == {"demo": {"process": "S", "n": 300, "seed": 4 + EVAL_SEED_OFFSET}}
    assert evaluation_spec({"path": "x.parquet", "features": ["a"]}) == {
        "path": "x.parquet",
        "features": ["a"],
    }
    train, ev = load_sample_spec(d, role="train"), load_sample_spec(d, role="eval")
    np.testing.assert_array_equal(train.features, load_sample_spec(d).features)
    np.testing.assert_array_equal(ev.features, load_sample_spec(evaluation_spec(d)).features)
    assert rows(train).isdisjoint(rows(ev))
    rec = split_record(d)
    assert rec["method"] == "demo_seed" and rec["eval_seed"] == 4 + EVAL_SEED_OFFSET
    assert rec["sizes"] == {"train": 300, "eval": 300}


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"eval_fraction": 0.0}, r"'eval_fraction' must be a number in \(0, 1\).*got 0.0"),
        ({"eval_fraction": 1.0}, "'eval_fraction' must be"),
        ({"eval_fraction": 1.5}, "'eval_fraction' must be"),
        ({"eval_fraction": "0.3"}, "'eval_fraction' must be"),
        ({"eval_fraction": True}, "'eval_fraction' must be"),
        ({"split_by": ""}, "'split_by' must be an expression"),
        ({"split_by": "no_such_column"}, "no column 'no_such_column' \\(used in split_by"),
        ({"eval_sample": "other.parquet"}, "'eval_sample' must be a complete file sample spec"),
        ({"eval_sample": {"features": ["a"]}}, "'eval_sample' must be a complete file sample spec"),
        (
            {"eval_sample": {"path": "OTHER", "features": ["a", "b"], "eval_fraction": 0.2}},
            "an 'eval_sample' is used whole",
        ),
        (
            {"eval_sample": {"path": "OTHER", "features": ["b", "a"]}},
            "'eval_sample' has features \\['b', 'a'\\]",
        ),
        (
            {"eval_sample": {"path": "OTHER", "features": ["a", "b"]}, "eval_fraction": 0.2},
            "cannot be combined with \\['eval_fraction'\\]",
        ),
    ],
)
def test_bad_settings_are_named(files, extra, match):
    if isinstance(extra.get("eval_sample"), dict) and extra["eval_sample"].get("path") == "OTHER":
        extra = {**extra, "eval_sample": {**extra["eval_sample"], "path": str(files["other"])}}
    s = spec(files["main"], **extra)
    for role in ("train", "eval"):
        with pytest.raises(DataError, match=match):
            load_sample_spec(s, role=role)
        if "no_such_column" not in str(extra):
            with pytest.raises(DataError, match=match):
                load_sample_spec(s)  # the whole sample is refused too: the spec is wrong


def test_empty_part_and_bad_role_are_errors(files):
    with pytest.raises(DataError, match="part would be empty"):
        load_sample_spec(spec(files["tiny"], eval_fraction=1e-9), role="eval")
    with pytest.raises(DataError, match="part would be empty"):
        split_record(spec(files["tiny"], eval_fraction=1 - 1e-9))
    with pytest.raises(DataError, match="role must be one of"):
        load_sample_spec(spec(files["main"]), role="test")


# --------------------------------------------------------------------------- the training job


def test_train_job_trains_on_train_rows_and_diagnoses_eval_rows_only(files, monkeypatch):
    import sbi_engine.ratio as ratio
    from backend import jobkinds
    from sbi_engine.ratio import MemoryCheckpointer

    seen = {}
    real_train, real_diag = ratio.train_ensemble, ratio.diagnostics

    def train_spy(num, den, config, **kw):
        seen["train"] = (num, den)
        return real_train(num, den, config, **kw)

    def diag_spy(ensemble, num_h, den_h, **kw):
        seen["diag"] = (num_h, den_h, kw)
        return real_diag(ensemble, num_h, den_h, **kw)

    monkeypatch.setattr(ratio, "train_ensemble", train_spy)
    monkeypatch.setattr(ratio, "diagnostics", diag_spy)
    params = {
        "task": "num_vs_den",
        "numerator": spec(files["num"]),
        "denominator": spec(files["den"], eval_fraction=0.25),
        "train": {
            "hidden_layers": 1,
            "width": 8,
            "members": 1,
            "max_steps": 20,
            "eval_every": 10,
            "batch_size": 128,
            "strategy": "vmap",
        },
    }
    artifacts = {}
    ctx = SimpleNamespace(
        params=params,
        checkpointer=MemoryCheckpointer(),
        stop=type("NoStop", (), {"__bool__": lambda self: False})(),
        writer=SimpleNamespace(add_metrics=lambda recs: None, progress={}),
        set_progress=lambda **kw: None,
        put_artifact=lambda name, data: artifacts.setdefault(name, f"mem://{name}"),
    )
    out = jobkinds.run_train(ctx)
    summary = out["summary"]

    for role, key in (("numerator", 0), ("denominator", 1)):
        s = params[role]
        train_rows = rows(load_sample_spec(s, role="train"))
        eval_rows = rows(load_sample_spec(s, role="eval"))
        assert rows(seen["train"][key]) == train_rows
        assert rows(seen["diag"][key]) == eval_rows  # diagnostics: eval rows only ...
        assert rows(seen["diag"][key]).isdisjoint(train_rows)  # ... never a training event
        assert (
            rows(seen["diag"][2]["train_" + ("numerator" if key == 0 else "reference")])
            == train_rows
        )
        assert summary["split"][role] == split_record(s)
    assert summary["split"]["denominator"]["eval_fraction"] == 0.25
    assert summary["split"]["numerator"]["eval_fraction"] == DEFAULT_EVAL_FRACTION
    d = summary["diagnostics"]
    assert "error" not in d, d
    assert d["held_out"] is True
    assert d["n_eval"] == {
        "numerator": split_record(params["numerator"])["sizes"]["eval"],
        "denominator": split_record(params["denominator"])["sizes"]["eval"],
    }

    # called on its own (no samples handed over) it loads the eval parts itself
    seen.clear()
    num_tr, den_tr = (
        load_sample_spec(params[r], role="train") for r in ("numerator", "denominator")
    )
    ensemble = real_train(num_tr, den_tr, ratio.TrainConfig(**params["train"])).ensemble
    alone = jobkinds.ensemble_diagnostics(ensemble, params, num_tr, den_tr)
    assert alone["held_out"] is True and alone["n_eval"] == d["n_eval"]
    assert rows(seen["diag"][0]) == rows(load_sample_spec(params["numerator"], role="eval"))


# --------------------------------------------------------------------------- analysis files

ANALYSIS = """\
name: roles
sample_defaults:
  features: [a, b]
  weight: w
  eval_fraction: 0.25
samples:
  S: {path: num.parquet, split_by: evt}
  B: {path: den.parquet, eval_sample: {path: other.parquet}}
processes:
  S: {sample: S, coefficient: "mu"}
  B: {sample: B, coefficient: "1"}
reference: B
"""


def test_analysis_files_accept_and_validate_the_split_keys(files, monkeypatch, tmp_path):
    from backend.analysis import load_analysis, validate_analysis

    f = files["base"] / "roles.yaml"
    f.write_text(ANALYSIS)
    assert validate_analysis(f) == []
    a = load_analysis(f)
    cfg = a.campaign_config()
    procs = cfg["processes"]
    s, b = procs["S"], procs["B"]
    assert s["eval_fraction"] == 0.25 and s["split_by"] == "evt"
    assert "eval_fraction" not in b  # its own eval_sample replaces the default split
    assert b["eval_sample"]["path"] == str(files["other"]) and b["eval_sample"]["features"] == [
        "a",
        "b",
    ]
    assert "eval_fraction" not in b["eval_sample"]
    assert split_record(b)["method"] == "eval_sample" and split_record(s)["method"] == "split_by"

    bad = (
        ANALYSIS.replace("eval_fraction: 0.25", "eval_fraction: 1.5")
        .replace(
            "split_by: evt}",
            "split_by: evt, eval_sample: {path: other.parquet, eval_fraction: 0.1}}",
        )
        .replace(
            "eval_sample: {path: other.parquet}}",
            "eval_sample: {path: other.parquet, features: [b]}}",
        )
    )
    f.write_text(bad)
    got = {(p.path, p.line): p.message for p in validate_analysis(f, check_data=False)}
    assert "expected a number < 1, got 1.5" in got[("sample_defaults.eval_fraction", 5)]
    assert "cannot be combined with 'eval_sample'" in got[("samples.S.split_by", 7)]
    assert "an eval_sample is used whole" in got[("samples.S.eval_sample.eval_fraction", 7)]
    assert "differ from the sample's ['a', 'b']" in got[("samples.B.eval_sample.features", 8)]

    # the content check reads the split expression too
    f.write_text(ANALYSIS.replace("split_by: evt", "split_by: event_no"))
    (p,) = validate_analysis(f)
    assert p.path == "samples.S" and "no column 'event_no'" in p.message

    # a train job's content key follows the split settings
    from backend.analysis.cache import job_key

    monkeypatch.setenv("NSBI_HOME", str(tmp_path / "home"))
    key = lambda **kw: job_key("train", {"numerator": spec(files["num"], **kw)}, version="x")  # noqa: E731
    assert (
        len(
            {
                key(),
                key(eval_fraction=0.2),
                key(split_by="evt"),
                key(eval_sample=spec(files["other"])),
                key(eval_sample=spec(files["den"])),
            }
        )
        == 5
    )
