"""`nsbi fit WORKSPACE`: text summary, JSON output, clear errors."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from backend.commands import fit as fit_cmd
from sbi_engine.fit.exact import exact_demo_workspace


def _run(argv):
    p = argparse.ArgumentParser()
    fit_cmd.add_arguments(p)
    return fit_cmd.run(p.parse_args(argv))


@pytest.mark.slow
def test_cli_fit_writes_summary_and_json(tmp_path, capsys):
    ws = exact_demo_workspace(5000, n_nuisances=3, seed=4)
    path = ws.save(tmp_path / "ws.json")
    out = tmp_path / "out.json"
    rc = _run([str(path), "--json", str(out), "--impacts", "both", "--scan", "--scan-points", "9"])
    assert rc == 0
    text = capsys.readouterr().out
    assert (
        "Fit converged" in text
        and "mu =" in text
        and "Impact ranking" in text
        and "profile 68%" in text
    )
    d = json.loads(out.read_text())
    assert d["fit"]["converged"] is True
    assert {i["nuisance"] for i in d["impacts_refit"]} == set(ws.nuisance_names)
    lo, hi = d["scans"][0]["intervals"]["68"]
    assert lo < d["fit"]["values"]["mu"] < hi
    assert np.isfinite(d["breakdown"]["mu"]["stat"])


def test_cli_reports_bad_workspace(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "nsbi-workspace", "version": 1}))
    assert _run([str(bad)]) == 2
    assert "bad.json: (top level): missing required keys 'parameters', 'processes', 'data'" in (
        capsys.readouterr().err
    )


def test_cli_streamed_fit_matches_in_memory(tmp_path, capsys):
    ws = exact_demo_workspace(4000, n_nuisances=2, seed=5)
    path = ws.save(tmp_path / "ws.json")
    mem, streamed = tmp_path / "mem.json", tmp_path / "stream.json"
    assert _run([str(path), "--json", str(mem), "--impacts", "both", "--chunk-size", "1024"]) == 0
    assert (
        _run(
            [
                str(path),
                "--json",
                str(streamed),
                "--impacts",
                "both",
                "--chunk-size",
                "1000",
                "--stream",
            ]
        )
        == 0
    )
    a, b = json.loads(mem.read_text()), json.loads(streamed.read_text())
    assert b["fit"]["method"] == "newton (streamed)"
    names = a["fit"]["names"]
    sig = np.sqrt(np.diag(np.array(a["fit"]["covariance"])))
    va, vb = (np.array([d["fit"]["values"][n] for n in names]) for d in (a, b))
    assert np.max(np.abs(va - vb) / sig) < 1e-6
    ra = {i["nuisance"]: i["postfit_up"] for i in a["impacts_refit"]}
    rb = {i["nuisance"]: i["postfit_up"] for i in b["impacts_refit"]}
    assert ra.keys() == rb.keys() and all(abs(ra[k] - rb[k]) < 1e-5 * sig[0] for k in ra)
    assert "event pass" in capsys.readouterr().err


def test_cli_stream_refuses_toys_before_any_work(tmp_path, capsys):
    path = exact_demo_workspace(500, n_nuisances=1, seed=5).save(tmp_path / "ws.json")
    assert _run([str(path), "--stream", "--toys", "10"]) == 2
    assert "--toys" in capsys.readouterr().err
