"""`nsbi bench train`: the JSON report's shape and its arithmetic, on the small model only."""

import json

import pytest

from backend import cli
from backend.commands import bench as bench_command
from benchmarks.train import BenchPlan, matmul_gflops, time_training
from sbi_engine.ratio.model import macs_per_sample


@pytest.mark.parametrize("strategy,packs", [("packs", 3)])  # vmap: covered by the CLI test
def test_time_training_reports_consistent_figures(strategy, packs):
    run = time_training(
        "3x64",
        members=3,
        strategy=strategy,
        pack_size=1,
        batch=256,
        steps_per_call=5,
        timed_calls=1,
        n_train=4096,
    )
    assert run["packs"] == packs and run["steps_timed"] == 5
    assert run["samples_per_s_per_member"] == pytest.approx(5 * 256 / run["seconds"])
    expected = 6 * macs_per_sample(4, 3, 64) * run["samples_per_s_per_member"] * 3 / 1e9
    assert run["gflops"] == pytest.approx(expected)
    if run["flops_per_step_xla"]:  # XLA's own count (one step body) agrees with the matmul model
        assert 0.8 < run["flops_per_step_xla"] / run["flops_per_step_model"] < 1.5


def test_matmul_rate_is_positive_and_per_size():
    mm = matmul_gflops(sizes=(256,), repeats=1)
    assert mm["gflops"] > 0 and set(mm["per_size"]) == {"256"}


def test_cli_writes_the_documented_json(tmp_path):
    out = tmp_path / "bench.json"
    rc = cli.main(
        [
            "bench",
            "train",
            "--json",
            str(out),
            "--models",
            "3x64",
            "--members",
            "1,2",
            "--timed-calls",
            "1",
            "--matmul-sizes",
            "512",
            "--no-progress",
        ]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["matmul_gflops"] > 0 and set(report["matmul"]["start"]["per_size"]) == {"512"}
    runs = report["runs"]
    assert {(r["model"], r["members"], r["strategy"]) for r in runs} == {
        ("3x64", m, s) for m in (1, 2) for s in ("vmap", "packs")
    }
    for r in runs:
        assert {"model", "members", "strategy", "samples_per_s_per_member", "gflops"} <= set(r)
        assert r["fraction_of_matmul"] == pytest.approx(r["gflops"] / report["matmul_gflops"])
        assert r["matmul_fraction"] == r["matmul_fraction_fp32"] == r["fraction_of_matmul"]
    assert (
        report["device"]["backend"] == "cpu"
        and report["summary"]["best_7x1500_fraction_of_matmul"] is None
    )


def test_bfloat16_runs_against_the_bfloat16_matmul_rate(tmp_path):
    """``--dtype float32,bfloat16``: each run's ``matmul_fraction`` divides by the matmul rate of
    its own dtype, both rates measured in the same run (on the CPU too)."""
    out = tmp_path / "bench.json"
    argv = ["bench", "train", "--json", str(out), "--models", "3x64", "--members", "2"]
    argv += ["--strategies", "vmap", "--timed-calls", "1", "--matmul-sizes", "256"]
    assert cli.main([*argv, "--dtype", "float32,bfloat16", "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report["matmul_gflops"] > 0 and report["matmul_gflops_bf16"] > 0
    assert report["matmul"]["bfloat16"]["start"]["dtype"] == "bfloat16"
    by_dtype = {r["dtype"]: r for r in report["runs"]}
    assert set(by_dtype) == {"float32", "bfloat16"}
    bf = by_dtype["bfloat16"]
    assert bf["matmul_fraction"] == pytest.approx(bf["gflops"] / report["matmul_gflops_bf16"])
    assert bf["matmul_fraction"] == bf["matmul_fraction_bf16"]
    assert set(report["summary"]["matmul_fraction"]["3x64"]) == {"float32", "bfloat16"}
    assert report["summary"]["best_samples_per_s_per_member"]["3x64"]["bfloat16"] > 0
    assert cli.main([*argv, "--dtype", "float16"]) == 2


def test_cli_rejects_unknown_model(capsys):
    assert cli.main(["bench", "train", "--models", "9x9"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_missing_benchmark_says_not_available(monkeypatch, capsys):
    monkeypatch.setitem(bench_command.BENCHMARKS, "fit", ("benchmarks.no_such_module", "x"))
    assert cli.main(["bench", "fit", "--json", "x.json"]) == 2
    assert "not available" in capsys.readouterr().err


def test_without_the_source_checkout_bench_says_so_in_one_line(monkeypatch, capsys):
    """A wheel install has no benchmarks/: any options are accepted, one clear line, exit 2."""
    monkeypatch.setattr(bench_command, "checkout_root", lambda: None)
    assert cli.main(["bench", "fit", "--events", "1e3", "--json", "x.json"]) == 2
    err = capsys.readouterr().err
    assert err == bench_command.NO_CHECKOUT + "\n" and "source checkout" in err


def test_plan_reduces_cpu_batch_for_big_ensembles_and_says_so():
    batch, note = BenchPlan().batch("7x1500", 32, accelerator=False)
    assert batch == 256 and "reduced" in note
    assert BenchPlan().batch("7x1500", 32, accelerator=True) == (4096, None)


def test_train_loop_cli_times_both_validation_rules(tmp_path):
    """`nsbi bench train-loop`: 600k events per class leave 240k for validation, so the default
    rule reads the loss every ceil(240000 / 1536) = 157 steps instead of 100; both runs see the
    same data and seeds and must end at about the same best validation loss."""
    out = tmp_path / "loop.json"
    args = ["bench", "train-loop", "--events", "6e5", "--steps", "300", "--members", "2"]
    assert cli.main([*args, "--features", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["schema"] == "nsbi-bench-train-loop/1"
    base = report["runs"]["baseline_every_eval_every"]
    new = report["runs"]["default_eval_budget_share"]
    assert (base["eval_interval"], base["validation_passes"]) == (100, 3)
    assert (new["eval_interval"], new["validation_passes"]) == (157, 2)
    assert base["steps_run"] == new["steps_run"] == 300
    assert report["speedup"] == pytest.approx(base["seconds"] / new["seconds"])
    assert report["best_val_loss_rel_diff"] < 0.01
    assert cli.main(["bench", "train-loop", "--events", "10"]) == 2
