"""The data-side commands: campaign, jobs, cost, db (in-process, against a temporary NSBI_HOME)."""

from __future__ import annotations

import argparse
import csv
import io
import json

import pytest
import sqlalchemy as sa

from backend import service
from backend.campaigns import demo_config
from backend.commands import campaign as campaign_cmd
from backend.commands import cost as cost_cmd
from backend.commands import db as db_cmd
from backend.commands import jobs as jobs_cmd
from backend.db import get_engine


def _run(module, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv))


def test_campaign_lifecycle_through_the_cli(nsbi_home, capsys):
    assert _run(db_cmd, ["upgrade"]) == 0
    from backend.db.migrate import head_revision

    assert (
        nsbi_home / "nsbi.db"
    ).exists() and f"at revision {head_revision()}" in capsys.readouterr().out
    assert _run(campaign_cmd, ["create", "--demo"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("created campaign 1 ('demo'): 13 jobs")
    assert _run(campaign_cmd, ["status"]) == 0
    assert "demo  CREATED  13" in capsys.readouterr().out
    assert _run(campaign_cmd, ["launch", "1"]) == 0
    assert "13 pending jobs marked to run" in capsys.readouterr().out
    assert _run(campaign_cmd, ["status", "1", "--json"]) == 0
    detail = json.loads(capsys.readouterr().out)
    assert detail["summary"]["status"] == "ACTIVE" and detail["budget"]["reason"] == "no budget set"
    assert (
        _run(jobs_cmd, ["--campaign", "1", "--state", "pending", "--kind", "scan", "--json"]) == 0
    )
    listing = json.loads(capsys.readouterr().out)
    assert listing["total"] == 2 and {j["name"] for j in listing["jobs"]} == {
        "scan-000",
        "scan-001",
    }
    assert _run(campaign_cmd, ["cancel", "1", "--job", "1", "--job", "2"]) == 0
    assert "cancel requested for 2 job(s)" in capsys.readouterr().out
    rows, _ = service.list_jobs(campaign_id=1, limit=100)
    assert [r.id for r in rows if r.cancel_requested] == [1, 2]
    assert _run(campaign_cmd, ["retry", "1"]) == 0
    assert "retry requested for 0 failed job(s)" in capsys.readouterr().out


def test_bad_config_file_gives_clear_error_and_changes_nothing(nsbi_home, tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'name = "x"\nreference = "B"\n[backend]\nlauncher = "kubernetes"\n'
        '[processes]\nB = { demo = { process = "B", n = 10, seed = 1 } }\n'
    )
    assert _run(campaign_cmd, ["create", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert (
        "c.toml: backend.launcher: 'kubernetes' is not allowed; allowed values: 'local', 'gce', 'slurm'"
        in err
    )
    with get_engine().connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM campaign")).scalar_one() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM job")).scalar_one() == 0


def test_unknown_campaign_is_an_error(nsbi_home, capsys):
    assert _run(campaign_cmd, ["launch", "42"]) == 1
    assert "no campaign with id 42" in capsys.readouterr().err


def test_cost_estimate_and_csv(nsbi_home, capsys):
    assert _run(cost_cmd, ["--demo", "--csv"]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(captured.out)))
    assert len(rows) == 13 and rows[0]["job"] == "train-S_vs_B-g0-m0-1"
    assert sum(float(r["hours"]) for r in rows) == pytest.approx(
        service.estimate_campaign(demo_config()).machine_hours
    )
    assert _run(campaign_cmd, ["create", "--demo"]) == 0
    capsys.readouterr()
    assert _run(cost_cmd, ["--csv", "--by", "campaign,kind"]) == 0
    assert (
        capsys.readouterr().out.splitlines()[0]
        == "campaign,campaign_name,kind,attempts,hours,gpu_hours,cost"
    )
    assert _run(cost_cmd, ["--by", "colour"]) == 2
    assert "allowed: campaign, day" in capsys.readouterr().err
