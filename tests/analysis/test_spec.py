"""Analysis files: the shipped examples validate and expand; every problem of a bad file is
reported at once with its key path and line; the ROOT example reads back the simulator's
events exactly."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backend.analysis import AnalysisError, load_analysis, validate_analysis
from backend.campaigns import expand, nuisance_names, validate_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def _make_root_module():
    spec = importlib.util.spec_from_file_location(
        "make_root_samples", EXAMPLES / "make_root_samples.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def root_example(tmp_path_factory):
    """analysis-root.yaml next to freshly written (small) ROOT samples."""
    base = tmp_path_factory.mktemp("root-example")
    mod = _make_root_module()
    paths = mod.write_samples(base / "root-samples", events=600)
    shutil.copy(EXAMPLES / "analysis-root.yaml", base / "analysis-root.yaml")
    return base / "analysis-root.yaml", paths, mod


# --------------------------------------------------------------------------- examples


def test_demo_example_validates_and_expands_into_the_expected_jobs():
    assert validate_analysis(EXAMPLES / "analysis-demo.yaml") == []
    a = load_analysis(EXAMPLES / "analysis-demo.yaml")
    assert a.name == "offshell-demo" and a.reference == "B"
    assert (
        a.file_hash
        == __import__("hashlib").sha256((EXAMPLES / "analysis-demo.yaml").read_bytes()).hexdigest()
    )
    cfg = validate_config(a.campaign_config())
    plans = expand(cfg)
    train = [p for p in plans if p.kind == "train"]
    # S/B and SBI/B: 4 members in one job each (per-task override); m4l_scale up/down: 2 members, one job each
    members = {p.task: list(p.members) for p in train}
    assert members == {
        "S_vs_B": [0, 1, 2, 3],
        "SBI_vs_B": [0, 1, 2, 3],
        "m4l_scale_up_B": [0, 1],
        "m4l_scale_down_B": [0, 1],
    }
    kinds = [p.kind for p in plans]
    assert (
        kinds.count("train"),
        kinds.count("fit"),
        kinds.count("impacts"),
        kinds.count("scan"),
        kinds.count("toys"),
    ) == (4, 1, 1, 2, 0)
    assert nuisance_names(cfg) == ["m4l_scale", "lumi"]
    impacts = next(p for p in plans if p.kind == "impacts")
    assert impacts.np_subset == ("m4l_scale", "lumi")
    assert [p.spec["params"]["poi_values"] for p in plans if p.kind == "scan"] == [
        [0.0, 0.5, 1.0],
        [1.5, 2.0, 2.5],
    ]
    for plan in plans:  # the whole fit model reaches every fit-stage job
        if plan.kind != "train":
            params = plan.spec["params"]
            assert params["coefficients"] == {
                "S": "mu - sqrt(mu)",
                "SBI": "sqrt(mu)",
                "B": "1 - sqrt(mu)",
            }
            assert params["norm_systematics"] == [
                {"name": "lumi", "effects": {p: [1.025, 0.975] for p in ("S", "SBI", "B")}}
            ]
            assert params["poi"] == {"init": 1.0, "bounds": [0.0, 20.0]}
            assert params["data"] == "asimov" and params["mu_true"] == 1.0
    from sbi_engine.ratio import TrainConfig

    for plan in train:
        tc = TrainConfig.from_dict(plan.spec["params"]["train"])
        assert (tc.hidden_layers, tc.width, tc.max_steps, tc.periodic_features) == (
            3,
            64,
            1500,
            ("phi",),
        )
        assert tc.members == len(plan.members)
    # fit_settings / train_settings split the campaign config
    assert set(a.fit_settings) == {"fit", "impacts", "scan", "toys"}
    assert a.train_settings["training"]["tasks"]["S_vs_B"] == {
        "ensemble_size": 4,
        "members_per_job": 4,
    }


def test_only_fit_keys_change_fit_settings(tmp_path):
    text = (EXAMPLES / "analysis-demo.yaml").read_text()
    (tmp_path / "a.yaml").write_text(text)
    (tmp_path / "b.yaml").write_text(text.replace("asimov: {mu: 1.0}", "asimov: {mu: 1.5}"))
    (tmp_path / "c.yaml").write_text(text.replace("width: 64", "width: 32"))
    a, b, c = (load_analysis(tmp_path / f"{n}.yaml", check_data=False) for n in "abc")
    assert a.train_settings == b.train_settings and a.fit_settings != b.fit_settings
    assert b.fit_settings["fit"]["mu_true"] == 1.5
    assert a.train_settings != c.train_settings and a.fit_settings == c.fit_settings
    assert a.file_hash != b.file_hash


def test_report_dir_defaults_to_reports_name_under_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = load_analysis(EXAMPLES / "analysis-demo.yaml", check_data=False)
    assert a.report_dir == tmp_path / "reports" / "offshell-demo"
    assert (
        load_analysis(
            EXAMPLES / "analysis-demo.yaml", check_data=False, report_dir="out"
        ).report_dir
        == tmp_path / "out"
    )


def test_root_example_validates_and_reads_back_the_simulator_events(root_example):
    from sbi_engine.demo import default_problem
    from sbi_engine.sample_specs import load_sample_spec

    path, written, mod = root_example
    assert validate_analysis(path) == []
    a = load_analysis(path)
    assert set(a.sample_files) == set(written.values())
    problem = default_problem()
    for stem, (process, seed, alpha) in mod.SAMPLES.items():
        spec = a.samples[stem]
        assert Path(spec["path"]) == written[stem] and spec["selection"] == "num(lep_E) >= 4"
        got = load_sample_spec(spec)
        want = problem.sample(process, 600, seed, alpha=alpha or None)
        assert got.names == want.names
        # m4l is rebuilt from four boosted lepton four-vectors in float64: equal after float32 rounding
        np.testing.assert_allclose(got.features, want.features, rtol=1e-6, atol=0)
        np.testing.assert_array_equal(got.features[:, 1:], want.features[:, 1:])
        np.testing.assert_allclose(got.weights, want.weights, rtol=1e-12)
    data = load_sample_spec(a.campaign_config()["fit"]["data"])
    want = problem.sample_mixture(mod.DATA_MU, None, mod.DATA_SEED)
    np.testing.assert_allclose(data.features, want.features, rtol=1e-6)
    assert np.all(data.weights == 1.0)


def test_root_files_really_hold_jagged_leptons_and_rejected_events(root_example):
    import awkward as ak
    import uproot

    _, written, mod = root_example
    tree = uproot.open(written["S"])["events"]
    arrays = tree.arrays(["lep_E", "z_cos_theta", "nlep"])
    counts = np.asarray(ak.num(arrays["lep_E"]))
    assert set(np.unique(counts)) == {3, 4, 5}  # junk (3), plain (4), with a soft extra lepton (5)
    assert int(np.sum(counts >= 4)) == 600 and int(np.sum(counts == 3)) == round(
        mod.JUNK_FRACTION * 600
    )
    assert np.array_equal(np.asarray(arrays["nlep"]), counts)


def test_root_content_problems_name_the_sample_and_line(root_example, tmp_path):
    path, _, _ = root_example
    text = path.read_text().replace('z_cos_theta[:, 1]"', 'z_costheta[:, 1]"')
    bad = path.parent / "bad-branch.yaml"
    bad.write_text(text)
    problems = validate_analysis(bad)
    lines = text.splitlines()
    assert problems and all("z_costheta" in p.message for p in problems)
    for p in problems:  # one per sample, at the sample's own line
        assert p.path.startswith("samples.")
        assert lines[p.line - 1].strip().startswith(p.path.split(".")[1] + ":")
    assert {p.path for p in problems} == {
        f"samples.{s}" for s in ("S", "SBI", "B", "B_m4l_up", "B_m4l_down", "data")
    }
    # the selection is what keeps the index [:, 1] in range: without it the loader says so
    no_sel = path.parent / "no-selection.yaml"
    no_sel.write_text(path.read_text().replace('  selection: "num(lep_E) >= 4"', ""))
    msgs = [p.message for p in validate_analysis(no_sel)]
    assert msgs and all("fewer than 2 entries in z_cos_theta" in m for m in msgs)


# --------------------------------------------------------------------------- errors

BAD = """\
name: broken
colour: blue
samples:
  S: {demo: {process: S, n: 100, seed: 1}}
  B: {path: no/such/file.root, features: [m4l], tree: events}
processes:
  S:
    sample: S
  SBI:
    sample: {demo: {process: SBI, n: 100, seed: 2}}
    coefficient: "sqrt(mu) +"
  B:
    sample: B
    coefficient: "1 - sqrt(mu)"
reference: C
systematics:
  jes:
    shape:
      ttbar: {up: S, down: S}
  lumi:
    norm: {S: [1.02, 0.98], Z: [1.1, 0.9]}
  xsec:
    shape:
      B: {up: B_up, down: S}
training:
  defaults:
    width: wide
    learning_rat: 0.01
    members: 4
data:
  asimov: {mu: 1.0}
compute:
  fit: true
  scan: {poi_values: [0, 1], points_per_job: 0}
backend:
  launcher: kubernetes
"""


def _line_of(text: str, needle: str) -> int:
    """The line equal to `needle`, else the first that starts with it (leading spaces included)."""
    lines = text.splitlines()
    exact = [i for i, line in enumerate(lines, 1) if line == needle]
    return (
        exact[0] if exact else next(i for i, line in enumerate(lines, 1) if line.startswith(needle))
    )


def test_malformed_file_reports_every_problem_with_key_path_and_line(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text(BAD)
    problems = validate_analysis(f)
    got = {(p.path, p.line): p.message for p in problems}

    def has(path: str, needle_line: str, *fragments: str) -> None:
        line = _line_of(BAD, needle_line)
        assert (path, line) in got, f"{path}@{line} not in {sorted(got)}"
        for frag in fragments:
            assert frag in got[(path, line)], got[(path, line)]

    has(
        "colour", "colour: blue", "unknown key 'colour'", "allowed keys: name, description, samples"
    )
    has(
        "samples.B.path",
        "  B: {path: no/such/file.root",
        f"file not found: {tmp_path / 'no/such/file.root'}",
    )
    assert _line_of(BAD, "processes:") + 1 == _line_of(BAD, "  S:")
    has("processes.S", "  S:", "missing required key 'coefficient'")
    has(
        "processes.SBI.coefficient",
        '    coefficient: "sqrt(mu) +"',
        "cannot parse coefficient expression",
    )
    has("reference", "reference: C", "'C' is not a process", "S, SBI, B")
    has(
        "systematics.jes.shape.ttbar",
        "      ttbar: {up: S",
        "unknown process 'ttbar'; processes: S, SBI, B",
    )
    has("systematics.lumi.norm.Z", "    norm: {S: [1.02", "unknown process 'Z'")
    has("systematics.xsec.shape.B.up", "      B: {up: B_up", "unknown sample 'B_up'")
    has("training.defaults.width", "    width: wide", "expected an integer, got a string 'wide'")
    has(
        "training.defaults.learning_rat",
        "    learning_rat: 0.01",
        "unknown training key 'learning_rat'",
        "allowed keys: ensemble_size, members_per_job, hidden_layers",
    )
    has("training.defaults.members", "    members: 4", "'members' is ensemble_size")
    has("compute.scan.points_per_job", "  scan: {poi_values", "expected an integer >= 1")
    has(
        "backend.launcher",
        "  launcher: kubernetes",
        "'kubernetes' is not allowed",
        "'local', 'gce', 'slurm'",
    )
    # the unknown-process systematic is the only problem on its line; nothing reported twice
    assert len(problems) == len(set(problems))
    assert problems == sorted(problems)  # in file order

    with pytest.raises(AnalysisError) as info:
        load_analysis(f)
    assert info.value.problems == problems
    text = str(info.value).splitlines()
    assert len(text) == len(problems)
    assert f"{f}:{_line_of(BAD, 'colour: blue')}: colour: unknown key 'colour'" in text[0]


def test_a_missing_key_points_at_its_parent_and_process_lines_are_exact(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text(BAD)
    p = next(p for p in validate_analysis(f, check_data=False) if p.path == "processes.S")
    assert p.line == 7 and BAD.splitlines()[6] == "  S:"


@pytest.mark.parametrize(
    "text, path, line, fragment",
    [
        (
            "name: x\nname: y\nprocesses: {}\nreference: B\n",
            "name",
            2,
            "duplicate key (first given on line 1)",
        ),
        ("name: x\nprocesses: [\n", "(file)", 3, "not valid YAML"),
        ("- a\n- b\n", "(top level)", 1, "expected an analysis (a mapping), got a list"),
        ("name: has space\nprocesses: {}\nreference: B\n", "name", 1, "may only use letters"),
        (
            "name: x\nprocesses:\n  B: {sample: {demo: {process: B, n: 10, seed: 1}}, coefficient: '1'}\n"
            "reference: B\n",
            "processes",
            2,
            "one process only",
        ),
        (
            "name: x\npoi: {bounds: [-1, 2]}\nprocesses:\n  S: {sample: {demo: {process: S, n: 10, seed: 1}}, "
            "coefficient: 'mu - sqrt(mu)'}\n  B: {sample: {demo: {process: B, n: 10, seed: 2}}, coefficient: '1'}\n"
            "reference: B\n",
            "processes.S.coefficient",
            4,
            "not finite at mu = -1",
        ),
        (
            "name: x\nprocesses:\n  S: {sample: {demo: {process: S, n: 10, seed: 1}}, coefficient: 'mu'}\n"
            "  B: {sample: {demo: {process: B, n: 10, seed: 2}}, coefficient: '1'}\nreference: B\n"
            "training: {tasks: {S_vs_C: {width: 8}}}\n",
            "training.tasks.S_vs_C",
            6,
            "unknown ratio task 'S_vs_C'; the tasks are: S_vs_B",
        ),
        (
            "name: x\nprocesses:\n  S: {sample: {demo: {process: S, n: 10, seed: 1}}, coefficient: 'mu'}\n"
            "  B: {sample: {path: b.npz, features: [a, b]}, coefficient: '1'}\nreference: B\n",
            "processes.B.sample.path",
            4,
            "file not found",
        ),
        (
            "name: x\nprocesses:\n  S: {sample: {demo: {process: S, n: 10, seed: 1}}, coefficient: 'mu'}\n"
            "  B: {sample: {demo: {process: B, n: 10, seed: 2}}, coefficient: '1'}\nreference: B\n"
            "training: {defaults: {periodic_features: [angle]}}\n",
            "training.defaults.periodic_features[0]",
            6,
            "'angle' is not a feature",
        ),
        (
            "name: x\nprocesses:\n  S: {sample: {demo: {process: S, n: 10, seed: 1}}, coefficient: 'mu'}\n"
            "  B: {sample: {demo: {process: B, n: 10, seed: 2}}, coefficient: '1'}\nreference: B\n"
            "compute: {fit: false, impacts: true}\n",
            "compute.impacts",
            6,
            "impacts need the fit",
        ),
        (
            "name: x\nprocesses:\n  S: {sample: {demo: {process: S, n: 10, seed: 1}}, coefficient: 'mu'}\n"
            "  B: {sample: {demo: {process: B, n: 10, seed: 2}}, coefficient: '1'}\nreference: B\n"
            "backend:\n  launcher: gce\n  machine_type: n9-huge\n",
            "backend.machine_type",
            8,
            "unknown machine type 'n9-huge'",
        ),
        (
            "name: x\nprocesses:\n  S: {sample: {demo: {process: S, n: 10, seed: 1}}, coefficient: 'mu'}\n"
            "  B: {sample: {demo: {process: B, n: 10, seed: 2}}, coefficient: '1'}\nreference: B\n"
            "data:\n  observed: mydata\n",
            "data.observed",
            7,
            "unknown sample 'mydata'; samples: none defined",
        ),
        (
            "name: x\nsample_defaults: {tree: events, features: [a]}\nprocesses:\n"
            "  S: {sample: {demo: {process: S, n: 10, seed: 1}}, coefficient: 'mu'}\n"
            "  B: {sample: {path: b.root, tree: 3}, coefficient: '1'}\nreference: B\n",
            "processes.B.sample.tree",
            5,
            "expected a string, got an integer 3",
        ),
        (
            "name: x\nprocesses:\n  S: {sample: {demo: {process: S, n: 10, seed: 1}}, coefficient: 'mu'}\n"
            "  B: {sample: {demo: {process: B, n: 10, seed: 2}}, coefficient: '1'}\nreference: B\n"
            "compute:\n  fit: {options: {uncertainty: {include: [nn, mc]}}}\n",
            "compute.fit.options.uncertainty.include[1]",
            7,
            "'mc' is not allowed; allowed values: 'nn', 'sim'",
        ),
        (
            "name: x\nprocesses:\n  S: {sample: {demo: {process: S, n: 10, seed: 1}}, coefficient: 'mu'}\n"
            "  B: {sample: {demo: {process: B, n: 10, seed: 2}}, coefficient: '1'}\nreference: B\n"
            "compute:\n  fit: {options: {uncertainty: {nn_runs: 3}}}\n",
            "compute.fit.options.uncertainty.nn_runs",
            7,
            "unknown key",
        ),
        (
            "name: x\nprocesses:\n  S: {sample: {demo: {process: S, n: 10, seed: 1}}, coefficient: 'mu'}\n"
            "  B: {sample: {demo: {process: B, n: 10, seed: 2}}, coefficient: '1'}\nreference: B\n"
            "training: {defaults: {max_steps: 100}, tasks: {S_vs_B: {warmup_steps: 500}}}\n",
            "training.tasks.S_vs_B",
            6,
            "warmup_steps must be in [0, max_steps), got 500 (with training.defaults)",
        ),
        (
            "name: x\nprocesses:\n  S: {sample: {demo: {process: S, n: 10, seed: 1}}, coefficient: 'mu'}\n"
            "  B: {sample: {demo: {process: B, n: 10, seed: 2}}, coefficient: '1'}\nreference: B\n"
            "training: {grid: {width: [8, 0]}}\n",
            "training.grid.width[1]",
            6,
            "width must be >= 1, got 0",
        ),
        (
            "name: x\nprocesses:\n  S: {sample: {demo: {process: S, n: 10, seed: 1}}, coefficient: 'mu'}\n"
            "  B: {sample: {path: b.npz, features: [a], eval_sample: {path: e.npz, split_by: n}},"
            " coefficient: '1'}\nreference: B\n",
            "processes.B.sample.eval_sample.split_by",
            4,
            "unknown key 'split_by' (an eval_sample is used whole",
        ),
        (
            "name: x\nprocesses:\n  S: {sample: {demo: {process: S, n: 10, seed: 1}}, coefficient: true}\n"
            "  B: {sample: {demo: {process: B, n: 10, seed: 2}}, coefficient: '1'}\nreference: B\n",
            "processes.S.coefficient",
            3,
            "expected an expression of mu (e.g. 'mu - sqrt(mu)'), got a boolean True",
        ),
    ],
)
def test_single_problems(tmp_path, text, path, line, fragment):
    f = tmp_path / "a.yaml"
    f.write_text(text)
    problems = validate_analysis(f, check_data=False)
    match = [p for p in problems if p.path == path and p.line == line and fragment in p.message]
    assert match, problems


def test_demo_content_problems_are_found_by_reading_the_samples(tmp_path):
    text = (
        (EXAMPLES / "analysis-demo.yaml")
        .read_text()
        .replace("alpha: {m4l_scale: 1.0}", "alpha: {m4l_scael: 1.0}")
    )
    f = tmp_path / "a.yaml"
    f.write_text(text)
    assert validate_analysis(f, check_data=False) == []
    (p,) = validate_analysis(f)
    assert p.path == "samples.B_m4l_up" and p.line == _line_of(text, "  B_m4l_up:")
    assert "unknown nuisance(s) ['m4l_scael']" in p.message


def test_validation_creates_nothing_and_static_checks_do_not_import_jax(tmp_path, monkeypatch):
    """Run from an empty folder with NSBI_HOME inside it: afterwards the folder is still empty."""
    examples_before = sorted(EXAMPLES.iterdir())
    code = (
        "import sys; from backend.analysis import validate_analysis; "
        f"print(validate_analysis({str(EXAMPLES / 'analysis-demo.yaml')!r}, check_data=False)); "
        "print('jax' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={"NSBI_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.split() == ["[]", "False"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NSBI_HOME", str(tmp_path / "home"))
    assert validate_analysis(EXAMPLES / "analysis-demo.yaml") == []  # with the sample reads
    load_analysis(EXAMPLES / "analysis-demo.yaml")
    assert list(tmp_path.iterdir()) == []  # no database, no home, no report folder
    assert sorted(EXAMPLES.iterdir()) == examples_before


def test_engine_constants_mirrored_for_the_static_checks_match_the_engine():
    from backend.analysis import spec_engine as se
    from sbi_engine import data, sample_specs
    from sbi_engine.demo import OBSERVABLES, PROCESSES
    from sbi_engine.fit import parse_expression
    from sbi_engine.ratio import TrainConfig

    assert se.DEMO_FEATURES == OBSERVABLES and se.DEMO_PROCESSES == PROCESSES
    assert (
        set(se.DEMO_KEYS) == sample_specs._DEMO_KEYS
        and set(se.FILE_KEYS) == sample_specs._FILE_KEYS
    )
    assert set(se.FORMATS) == set(data._FORMATS) and set(se.SUFFIXES) == set(data._SUFFIXES)
    # the file-loaded copies are the engine's own code
    e = se.expr_module().parse_expression("mu - sqrt(mu)", ["mu"])
    assert e({"mu": 4.0}, np) == parse_expression("mu - sqrt(mu)", ["mu"])({"mu": 4.0}, np) == 2.0
    assert se.train_config_module().TrainConfig().to_dict() == TrainConfig().to_dict()


def test_campaign_config_is_plain_json_and_deterministic():
    a = load_analysis(EXAMPLES / "analysis-demo.yaml", check_data=False)
    cfg = a.campaign_config()
    assert json.loads(json.dumps(cfg)) == cfg == a.campaign_config()
    assert validate_config(cfg).config_hash == validate_config(a.campaign_config()).config_hash
    cfg["processes"]["S"]["demo"]["n"] = 1  # a copy: the analysis is unchanged
    assert a.campaign_config()["processes"]["S"]["demo"]["n"] == 80000
    assert math.isclose(a.fit_settings["fit"]["mu_true"], 1.0)


def test_samples_reweighting_the_same_events_must_split_them_alike(tmp_path):
    """Two samples reading the same file with different weights (a hypothesis simulated by
    reweighting) split by the row hash, which includes the weight: the validation says so at
    the sample's line and names `split_by`; with the same `split_by` on both the file is valid."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    n = 200
    pq.write_table(
        pa.table(
            {
                "m": rng.random(n),
                "event": np.arange(n),
                "w_B": np.ones(n),
                "w_SBI": 1 + 0.01 * rng.random(n),
            }
        ),
        tmp_path / "bkg.parquet",
    )
    pq.write_table(pa.table({"m": rng.random(n)}), tmp_path / "sig.parquet")

    def text(split: str) -> str:
        return (
            "name: x\nsample_defaults: {format: parquet, features: [m]}\nsamples:\n"
            f"  B: {{path: bkg.parquet, weight: w_B{split}}}\n"
            f"  SBI: {{path: bkg.parquet, weight: w_SBI{split}}}\n"
            "  S: {path: sig.parquet}\n"
            "processes:\n  S: {sample: S, coefficient: 'mu - sqrt(mu)'}\n"
            "  SBI: {sample: SBI, coefficient: 'sqrt(mu)'}\n"
            "  B: {sample: B, coefficient: '1 - sqrt(mu)'}\nreference: B\n"
        )

    f = tmp_path / "a.yaml"
    f.write_text(text(""))
    problems = validate_analysis(f, check_data=False)
    (p,) = [p for p in problems if p.path == "samples.SBI"]
    assert p.line == 5 and "same events as sample 'B'" in p.message and "split_by" in p.message
    f.write_text(text(", split_by: event"))
    assert validate_analysis(f) == []  # with the content checks, which evaluate split_by
