"""`nsbi bench controlplane` at a small scale: the JSON has the promised shape and real counts."""

from __future__ import annotations

import argparse
import json

import pytest

from backend.campaigns import expand, validate_config
from benchmarks import controlplane as bench


@pytest.mark.parametrize("n", [20, 137, 1000])
def test_bench_config_has_exactly_n_jobs(n):
    plans = expand(validate_config(bench.bench_config(n)))
    assert len(plans) == n
    assert sum(p.kind == "train" for p in plans) >= (0.8 if n >= 1000 else 0.5) * n


def _args(tmp_path, dbs: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(
        [
            "--json",
            str(tmp_path / "cp.json"),
            "--jobs",
            "200",
            "--points",
            "20000",
            "--databases",
            dbs,
            "--running",
            "8",
            "--repeats",
            "2",
            "--no-progress",
        ]
    )


def _check(report: dict, db: str) -> None:
    r = report[db]
    assert r["jobs"] == 200 and r["metric_points"] == 20_000
    assert r["ingest"]["points"] == 20_000 and r["ingest"]["reingest_new_points"] == 0
    assert r["ingest_points_per_s"] > 0 and r["reconcile_s"] > 0
    assert (
        sum(r["setup"]["job_states"].values()) == 200 and r["setup"]["job_states"]["RUNNING"] == 8
    )
    assert {"job_page", "job_curves", "cost_summary"} <= set(r["query_ms"])
    assert all(v > 0 for v in r["query_ms"].values())
    # the timed pass is the first, busy one: it launches ready trainings (none was launched
    # before) and cancels the fit that waits on trainings that failed for good
    assert r["reconcile_stat"].startswith("first pass of a new controller")
    assert r["reconcile_detail"]["launched"] > 0 and r["reconcile_detail"]["cancelled"] >= 1
    assert not r["reconcile_detail"]["errors"]
    # then passes drain what follows (the fit's dependants are cancelled) to an idle one
    assert all(t["s"] > 0 and not t["launched"] for t in r["reconcile_followup"])
    assert sum(t["cancelled"] for t in r["reconcile_followup"]) > 0
    assert r["reconcile_idle_s"] > 0 and r["reconcile_idle_stat"].startswith(
        "median of 3 idle passes"
    )
    idle = r["reconcile_idle_detail"]
    assert not any(
        idle[k] for k in ("launched", "relaunched", "finished", "failed", "retried", "cancelled")
    )
    # and a pass of the first one's shape again, on the warm controller
    warm = r["reconcile_warm_detail"]
    assert r["reconcile_warm_s"] > 0 and not warm["errors"]
    assert (warm["launched"], warm["retried"], warm["cancelled"]) == (
        r["reconcile_detail"]["launched"],
        r["reconcile_detail"]["retried"],
        1,
    )
    assert r["setup"]["settle_s"] >= 0 and r["setup"]["settle_after_load"]


def test_bench_sqlite(tmp_path):
    assert bench.run(_args(tmp_path, "sqlite")) == 0
    report = json.loads((tmp_path / "cp.json").read_text())
    _check(report, "sqlite")
    assert "postgresql" not in report


@pytest.mark.postgres
def test_bench_postgresql(
    tmp_path, pg_session_engine
):  # the fixture skips when the server is unreachable
    assert bench.run(_args(tmp_path, "postgresql")) == 0
    _check(json.loads((tmp_path / "cp.json").read_text()), "postgresql")
