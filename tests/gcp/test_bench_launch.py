"""`nsbi bench launch` on a small N (the full 1,000-VM run is the documented benchmark)."""

from __future__ import annotations

import argparse
import json

from benchmarks import launch as bench_launch


def _args(tmp_path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench_launch.add_arguments(parser)
    return parser.parse_args(["--json", str(tmp_path / "launch.json"), "--no-progress", *extra])


def test_bench_requests_every_vm_and_writes_the_json(tmp_path):
    assert bench_launch.run(_args(tmp_path, "--vms", "60", "--threads", "16")) == 0
    report = json.loads((tmp_path / "launch.json").read_text())
    assert report["vms"] == 60 and report["vms_listed"] == 60 and report["failed"] == 0
    assert 0 < report["seconds"] <= report["seconds_all_listed"] < 60
    assert report["inserts_by_zone"] == {"us-central1-a": 60} and report["bad_requests"] == []


def test_bench_with_a_stockout_lands_everything_in_the_second_zone(tmp_path):
    assert bench_launch.run(_args(tmp_path, "--vms", "30", "--stockout-first-zone")) == 0
    report = json.loads((tmp_path / "launch.json").read_text())
    assert report["refused_by_zone"] == {"us-central1-a": 30}
    assert report["inserts_by_zone"] == {"us-central1-a": 30, "us-central1-b": 30}
    assert report["vms_listed"] == 30
