"""Campaign configs: validation errors name the key and allowed values; expansion counts."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import math
from pathlib import Path

import pytest

from backend.campaigns import (
    DEMO_CONFIG,
    LAUNCHERS,
    TRAIN_KEYS,
    CampaignConfigError,
    demo_config,
    expand,
    load_config,
    ratio_tasks,
    validate_config,
)


def _cfg(**changes):
    d = copy.deepcopy(DEMO_CONFIG)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = d
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return d


def _errors(raw) -> list[str]:
    with pytest.raises(CampaignConfigError) as info:
        validate_config(raw)
    return info.value.errors


def test_train_keys_match_the_engine_train_config():
    """TRAIN_KEYS mirrors sbi_engine.ratio.config.TrainConfig (loaded without importing JAX)."""
    path = Path(__file__).resolve().parents[2] / "sbi_engine" / "ratio" / "config.py"
    spec = importlib.util.spec_from_file_location("_train_config_probe", path)
    mod = importlib.util.module_from_spec(spec)
    import sys

    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules[spec.name]
    assert tuple(f.name for f in dataclasses.fields(mod.TrainConfig)) == TRAIN_KEYS
    # and every train job of the demo carries a config the engine accepts
    for plan in expand(demo_config()):
        if plan.kind == "train":
            cfg = mod.TrainConfig.from_dict(plan.spec["params"]["train"])
            assert cfg.members == len(plan.members)


def test_unknown_launcher_names_key_and_allowed_values():
    (err,) = _errors(_cfg(backend__launcher="kubernetes"))
    assert err.startswith("backend.launcher: 'kubernetes' is not allowed")
    assert all(repr(name) in err for name in LAUNCHERS)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"backend__gpu_count": -1}, "backend.gpu_count: expected an integer >= 0, got -1"),
        (
            {"backend__zone": "us-central1-a"},
            "backend.zone: unknown key 'zone'; allowed keys: launcher, machine_type",
        ),
        (
            {"training__params": {"lr": 0.1}},
            "training.params.lr: unknown training key 'lr'; allowed keys: hidden_layers, width",
        ),
        (
            {"training__grid": {"width": 64}},
            "training.grid.width: expected a list, got an integer 64",
        ),
        (
            {"training__ensemble_size": "four"},
            "training.ensemble_size: expected an integer, got a string 'four'",
        ),
        (
            {"training__params": {"width": "wide"}},
            "training.params.width: expected an integer, got a string 'wide'",
        ),
        (
            {"training__params": {"members": 3}},
            "training.params.members: unknown training key 'members' ('members' is ensemble_size",
        ),
        (
            {"training__params": {"activation": "swish"}},
            "training.params.activation: activation 'swish' not in ('silu', 'relu'",
        ),
        (
            {"training__grid": {"learning_rate": [0.01, -1.0]}},
            "training.grid.learning_rate[1]: learning_rate must be > 0, got -1.0",
        ),
        (
            {"training__grid": {"width": []}},
            "training.grid.width: expected at least 1 item(s)",
        ),
        (
            {"training__params": {"warmup_steps": 500, "max_steps": 100}},
            "training.params: warmup_steps must be in [0, max_steps), got 500",
        ),
        (
            {
                "training__grid": {"max_steps": [1000, 100]},
                "training__params": {"warmup_steps": 500},
            },
            "training.grid: the point {'max_steps': 100}: warmup_steps must be in [0, max_steps)",
        ),
        (
            {
                "training__tasks": {"S_vs_B": {"max_steps": 100}},
                "training__params": {"warmup_steps": 500},
            },
            "training.tasks.S_vs_B: warmup_steps must be in [0, max_steps), got 500 (with training.params)",
        ),
        ({"reference": "ttbar"}, "reference: 'ttbar' is not a process; allowed values: B, S, SBI"),
        ({"backend__machine_type": "n9-huge"}, "backend: unknown machine type 'n9-huge'"),
        ({"fit__data": "observed"}, "fit.data: 'observed' is not allowed"),
        (
            {"processes__S": {"demo": {"process": "S", "n": 10}}},
            "processes.S.demo: missing required key 'seed'",
        ),
        (
            {"processes__S": {"file": "x.root"}},
            "processes.S: a sample spec needs the key 'demo' or 'path'",
        ),
    ],
)
def test_errors_name_the_key(changes, expected):
    errs = _errors(_cfg(**changes))
    assert any(e.startswith(expected) for e in errs), errs


def test_all_errors_are_reported_at_once():
    raw = _cfg(backend__launcher="x", backend__retry_limit=-1)
    del raw["name"]
    errs = _errors(raw)
    assert len(errs) == 3
    assert "(top level): missing required key 'name'" in errs


def test_systematic_of_unknown_process():
    raw = _cfg()
    raw["systematics"][0]["process"] = "Z"
    assert _errors(raw) == [
        "systematics[0].process: 'Z' is not a process; allowed values: B, S, SBI"
    ]


def test_bundled_gpu_mismatch_is_an_error():
    errs = _errors(
        _cfg(
            backend__launcher="gce",
            backend__machine_type="g2-standard-8",
            backend__gpu_type="nvidia-tesla-t4",
            backend__gpu_count=1,
        )
    )
    assert errs and "comes with 1 x nvidia-l4" in errs[0]


def test_demo_expansion():
    cfg = demo_config()
    tasks = ratio_tasks(cfg)
    # S and SBI against the reference B, and the one systematic up and down against nominal B
    assert [t.name for t in tasks] == ["S_vs_B", "SBI_vs_B", "m4l_scale_up_B", "m4l_scale_down_B"]
    up = tasks[2]
    assert (
        up.numerator["demo"]["alpha"] == {"m4l_scale": 1.0}
        and up.denominator == DEMO_CONFIG["processes"]["B"]
    )
    plans = expand(cfg)
    kinds = [p.kind for p in plans]
    assert kinds.count("train") == 4 * 2  # 4 tasks x (4 members / 2 per job)
    fit = next(p for p in plans if p.kind == "fit")
    assert set(fit.depends_on) == {p.name for p in plans if p.kind == "train"}
    impacts = [p for p in plans if p.kind == "impacts"]
    # NPs: the systematic then fit.nuisances, 2 per job
    assert [p.np_subset for p in impacts] == [("m4l_scale", "bkg_norm"), ("gg_scale",)]
    assert all(p.depends_on == ("fit",) for p in plans if p.kind in ("impacts", "scan", "toys"))
    assert len({p.name for p in plans}) == len(plans)


@pytest.mark.parametrize(
    "n_proc, n_syst, ens, per_job, grid, toys, per_toy_job",
    [
        (3, 0, 5, 2, {"width": [16, 32, 64]}, 0, 1),
        (4, 3, 8, 3, {"width": [16, 32], "learning_rate": [1e-3, 3e-4]}, 25, 10),
    ],
)
def test_expansion_counts(n_proc, n_syst, ens, per_job, grid, toys, per_toy_job):
    procs = {f"P{i}": {"demo": {"process": "B", "n": 10, "seed": i}} for i in range(n_proc)}
    raw = {
        "name": "c",
        "processes": procs,
        "reference": "P0",
        "systematics": [
            {"name": f"s{k}", "process": "P1", "up": procs["P1"], "down": procs["P1"]}
            for k in range(n_syst)
        ],
        "training": {"ensemble_size": ens, "members_per_job": per_job, "grid": grid},
        "toys": {"enabled": toys > 0, "n_toys": max(toys, 1), "toys_per_job": per_toy_job},
    }
    plans = expand(validate_config(raw))
    n_grid = math.prod(len(v) for v in grid.values())
    n_tasks = (n_proc - 1) + 2 * n_syst
    train = [p for p in plans if p.kind == "train"]
    assert len(train) == n_tasks * n_grid * math.ceil(ens / per_job)
    # every (task, grid point) gets every member exactly once
    per_key: dict = {}
    for p in train:
        per_key.setdefault((p.task, p.spec["params"]["grid_index"]), []).extend(p.members)
    assert len(per_key) == n_tasks * n_grid
    assert all(sorted(m) == list(range(ens)) for m in per_key.values())
    toy_jobs = [p for p in plans if p.kind == "toys"]
    assert len(toy_jobs) == (math.ceil(toys / per_toy_job) if toys else 0)
    assert sorted(s for p in toy_jobs for s in p.seeds) == list(range(1000, 1000 + toys))
    seeds = [p.spec["params"]["train"]["seed"] for p in train]
    assert len(set(zip(seeds, [p.task for p in train]))) == len(train)


def test_load_toml_and_yaml_agree(tmp_path):
    import yaml

    toml_text = """
name = "tiny"
reference = "B"
[backend]
launcher = "gce"
machine_type = "n1-standard-8"
gpu_type = "T4"
gpu_count = 1
spot = true
zones = ["us-central1-a"]
budget_usd = 5.0
[processes]
S = { demo = { process = "S", n = 100, seed = 1 } }
B = { demo = { process = "B", n = 100, seed = 2 } }
[training]
ensemble_size = 2
members_per_job = 1
[training.grid]
width = [8, 16]
"""
    (tmp_path / "c.toml").write_text(toml_text)
    import tomllib

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tomllib.loads(toml_text)))
    a, b = load_config(tmp_path / "c.toml"), load_config(tmp_path / "c.yaml")
    assert a.data == b.data and a.config_hash == b.config_hash
    assert a.region == "us-central1" and a.backend["budget_usd"] == 5.0
    assert len([p for p in expand(a) if p.kind == "train"]) == 1 * 2 * 2


def test_load_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(CampaignConfigError, match="bad.toml: not valid TOML"):
        load_config(bad)
    with pytest.raises(CampaignConfigError, match="allowed: .toml, .yaml, .yml"):
        (tmp_path / "c.json").write_text("{}")
        load_config(tmp_path / "c.json")


def test_observed_demo_data_spec_is_accepted_and_checked():
    validate_config(_cfg(fit__data={"demo": {"mu": 1.0, "seed": 3, "poisson": True}}))
    errs = _errors(_cfg(fit__data={"demo": {"mu": 1.0}}))
    assert errs == ["fit.data.demo: missing required key 'seed'"]


def test_per_task_training_overrides_change_only_that_task():
    raw = _cfg(
        training__tasks={
            "S_vs_B": {"ensemble_size": 6, "members_per_job": 3, "width": 64, "max_steps": 10}
        }
    )
    plans = expand(validate_config(raw))
    train = [p for p in plans if p.kind == "train"]
    s_jobs = [p for p in train if p.task == "S_vs_B"]
    assert [p.members for p in s_jobs] == [(0, 1, 2), (3, 4, 5)]
    assert all(
        p.spec["params"]["train"]["width"] == 64 and p.spec["params"]["train"]["max_steps"] == 10
        for p in s_jobs
    )
    others = [p for p in train if p.task != "S_vs_B"]
    assert len(others) == 3 * 2 and all(p.spec["params"]["train"]["width"] == 32 for p in others)
    # members / seed stay the expansion's; ensemble keys are not TrainConfig settings
    assert all(set(p.spec["params"]["train"]) <= set(TRAIN_KEYS) for p in train)
    # a config without tasks normalises exactly as before (no new default keys)
    assert "tasks" not in demo_config().data["training"]


def test_per_task_overrides_name_unknown_tasks_and_keys():
    errs = _errors(_cfg(training__tasks={"SBI_vs_B": {"lr": 0.1, "ensemble_size": 0}}))
    assert len(errs) == 2
    assert any(
        e.startswith(
            "training.tasks.SBI_vs_B.lr: unknown training key 'lr'; allowed keys: ensemble_size, "
            "members_per_job, hidden_layers"
        )
        for e in errs
    ), errs
    assert any(
        e.startswith("training.tasks.SBI_vs_B.ensemble_size: expected an integer >= 1, got 0")
        for e in errs
    ), errs
    (err,) = _errors(_cfg(training__tasks={"S_vs_C": {"width": 8}}))
    assert err == (
        "training.tasks.S_vs_C: unknown ratio task; the tasks are: "
        "S_vs_B, SBI_vs_B, m4l_scale_up_B, m4l_scale_down_B"
    )


def test_fit_model_keys_pass_through_to_every_fit_stage_job():
    model = {
        "coefficients": {"S": "mu - sqrt(mu)", "SBI": "sqrt(mu)", "B": "1 - sqrt(mu)"},
        "norm_systematics": [{"name": "xs_B", "effects": {"B": [1.1, 0.9]}}],
        "yields": {"B": 400.0},
        "poi": {"init": 0.5, "bounds": [0.0, 5.0]},
    }
    raw = _cfg(**{f"fit__{k}": v for k, v in model.items()})
    cfg = validate_config(raw)
    plans = expand(cfg)
    fit_like = [p for p in plans if p.kind != "train"]
    assert {p.kind for p in fit_like} == {"fit", "impacts", "scan"}
    for p in fit_like:
        assert {k: p.spec["params"][k] for k in model} == model
    # the norm-only systematic is a nuisance of the fit (after the shape ones, before fit.nuisances)
    impacts = [p.np_subset for p in plans if p.kind == "impacts"]
    assert [n for sub in impacts for n in sub] == ["m4l_scale", "xs_B", "bkg_norm", "gg_scale"]
    # without them, fit-stage params carry none of these keys (old job specs unchanged)
    assert not any(
        k in p.spec["params"] for p in expand(demo_config()) if p.kind == "fit" for k in model
    )


@pytest.mark.parametrize(
    "changes, expected",
    [
        (
            {"fit__coefficients": {"Z": "mu"}},
            "fit.coefficients.Z: not a process; allowed values: B, S, SBI",
        ),
        ({"fit__yields": {"B": 0}}, "fit.yields.B: expected a number > 0, got 0"),
        (
            {"fit__norm_systematics": [{"name": "x", "effects": {"Q": [1.1, 0.9]}}]},
            "fit.norm_systematics[0].effects.Q: not a process",
        ),
        (
            {"fit__norm_systematics": [{"name": "x", "effects": {"B": [1.1]}}]},
            "fit.norm_systematics[0].effects.B: expected at least 2 item(s), got a list [1.1]",
        ),
        (
            {"fit__poi": {"bounds": [2.0, 1.0]}},
            "fit.poi.bounds: expected [low, high] with low < high",
        ),
        (
            {"fit__poi": {"init": 7.0, "bounds": [0.0, 5.0]}},
            "fit.poi.init: 7.0 is outside the bounds [0.0, 5.0]",
        ),
        (
            {"fit__poi": {"start": 1.0}},
            "fit.poi.start: unknown key 'start'; allowed keys: init, bounds",
        ),
    ],
)
def test_fit_model_keys_are_checked(changes, expected):
    errs = _errors(_cfg(**changes))
    assert any(e.startswith(expected) for e in errs), errs
