"""Issue 15/16: one declarative source for the three formats, and campaign configs read within
bounds.

The models (`backend.campaign_model`, `backend.analysis.spec_models`,
`sbi_engine.fit.workspace_model`) emit the JSON schemas the docs and the package ship; the
committed files must equal them. `nsbi campaign create` refuses alias bombs, duplicate keys,
NaN / infinity and absurd sizes with exit status 2 and a located message, storing nothing.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from pathlib import Path

import pytest
import yaml

from backend.campaign_model import DEFAULTS, CampaignModel
from backend.campaigns import DEMO_CONFIG, CampaignConfigError, load_config, validate_config
from backend.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _committed(rel: str) -> str:
    return (ROOT / rel).read_text()


def test_committed_schemas_are_the_generated_ones():
    """Regenerate with `make schemas`."""
    from backend.analysis.spec_models import schema_text as analysis
    from backend.campaign_model import schema_text as campaign
    from sbi_engine.fit.workspace_model import schema_text as workspace

    assert _committed("docs/schemas/campaign.schema.json") == campaign()
    assert _committed("docs/schemas/analysis.schema.json") == analysis()
    assert _committed("sbi_engine/schemas/workspace.schema.json") == workspace()


def test_the_shipped_workspace_schema_is_a_json_schema_of_the_document():
    schema = json.loads(_committed("sbi_engine/schemas/workspace.schema.json"))
    assert schema["required"] == ["format", "version", "parameters", "processes", "data"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["processes"]["minItems"] == 1


def test_defaults_come_from_the_model():
    assert (
        DEFAULTS["training"]["ensemble_size"]
        == CampaignModel.model_fields["training"].default_factory().ensemble_size
        == 4
    )
    cfg = validate_config({"name": "c", "processes": DEMO_CONFIG["processes"], "reference": "B"})
    assert cfg.data["backend"]["launcher"] == "local" and cfg.data["scan"]["poi_values"][0] == 0.0
    assert "tasks" not in cfg.data["training"] and "region" not in cfg.data["backend"]


def _create(path: Path, tmp_path: Path, monkeypatch) -> tuple[int, str]:
    monkeypatch.setenv("NSBI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["campaign", "create", str(path)])
    return code, err.getvalue()


def _stored_campaigns(tmp_path: Path) -> int:
    import sqlite3

    db = tmp_path / "db.sqlite"
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(db)) as con:
        try:
            return con.execute("select count(*) from campaign").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def _demo_yaml(**changes) -> str:
    d = copy.deepcopy(DEMO_CONFIG)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = d
        for p in parents:
            node = node[p]
        node[leaf] = value
    return yaml.safe_dump(d, sort_keys=False)


@pytest.mark.parametrize(
    "changes, fragment",
    [
        (
            {"processes__S__demo__n": 10**30},
            "processes.S.demo.n: expected an integer <= 1000000000",
        ),
        ({"processes__S__demo__n": 1e30}, "processes.S.demo.n: expected an integer, got a number"),
        ({"fit__mu_true": math.nan}, "fit.mu_true: expected a finite number, got nan"),
        (
            {"backend__budget_usd": math.inf},
            "backend.budget_usd: expected a finite number, got inf",
        ),
        (
            {"fit__options": {"tol": -math.inf}},
            "fit.options.tol: expected a finite number, got -inf",
        ),
        ({"training__ensemble_size": 10**9}, "training.ensemble_size: expected an integer <= 1000"),
        (
            {"training__grid": {"width": list(range(1, 1000)), "batch_size": list(range(1, 1000))}},
            "training: the campaign would have",
        ),
    ],
)
def test_campaign_create_refuses_non_finite_and_absurd_values(
    tmp_path, monkeypatch, changes, fragment
):
    f = tmp_path / "c.yaml"
    f.write_text(_demo_yaml(**changes))
    code, err = _create(f, tmp_path, monkeypatch)
    assert code == 2, err
    assert fragment in err and f"{f}:" in err, err
    assert "Traceback" not in err and "NaN" not in err
    assert _stored_campaigns(tmp_path) == 0


def test_campaign_yaml_errors_name_their_line(tmp_path):
    f = tmp_path / "c.yaml"
    text = _demo_yaml(fit__mu_true=math.nan)
    f.write_text(text)
    with pytest.raises(CampaignConfigError) as info:
        load_config(f)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "mu_true" in t)
    assert str(info.value) == f"{f}:{line}: fit.mu_true: expected a finite number, got nan"
    assert info.value.errors == ["fit.mu_true: expected a finite number, got nan"]


def test_campaign_create_refuses_an_alias_bomb_and_duplicate_keys(tmp_path, monkeypatch):
    bomb = "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
        f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi")
    )
    f = tmp_path / "bomb.yaml"
    f.write_text(bomb)
    code, err = _create(f, tmp_path, monkeypatch)
    assert code == 2 and f"{f}:6: (file): the document expands to more than" in err
    f.write_text(_demo_yaml() + "name: again\n")
    code, err = _create(f, tmp_path, monkeypatch)
    assert code == 2 and "name: duplicate key (first given on line 1)" in err
    assert _stored_campaigns(tmp_path) == 0


def test_an_oversized_campaign_config_is_refused(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('name = "x"\n' + "#" * (2 << 20) + "\n")
    with pytest.raises(CampaignConfigError, match="larger than 1024 KiB"):
        load_config(f)


def test_a_nan_in_toml_is_refused_too(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text(
        'name = "t"\nreference = "B"\n[processes]\nS = { demo = { process = "S", n = 10, seed = 1 } }\n'
        'B = { demo = { process = "B", n = 10, seed = 2 } }\n[fit]\nmu_true = nan\n'
    )
    with pytest.raises(CampaignConfigError, match="fit.mu_true: expected a finite number, got nan"):
        load_config(f)


def test_workspace_documents_refuse_non_finite_numbers(tmp_path):
    from sbi_engine.fit.workspace_model import problems

    doc = {
        "format": "nsbi-workspace",
        "version": 1,
        "parameters": {"pois": [{"name": "mu", "init": math.nan}]},
        "processes": [
            {"name": "S", "yield": math.inf, "coefficient": "mu", "ratio": {"file": "r.npy"}}
        ],
        "data": {"kind": "asimov", "weights": {"file": "w.npy"}, "extra": 1},
    }
    assert sorted(problems(doc)) == sorted(
        [
            (("parameters", "pois", 0, "init"), "expected a finite number, got nan"),
            (("processes", 0, "yield"), "expected a finite number, got inf"),
            (
                ("data", "extra"),
                "unknown key 'extra'; allowed keys: kind, weights, n_events, norm_weights, generated_at",
            ),
        ]
    )
