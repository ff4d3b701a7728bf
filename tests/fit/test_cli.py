"""`nsbi fit WORKSPACE`: text summary, JSON output, clear errors."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

import sbi_engine  # noqa: F401
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
    assert "Fit converged" in text and "mu =" in text and "Impact ranking" in text and "profile 68%" in text
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
    assert "bad.json: <top level>: 'parameters' is a required property" in capsys.readouterr().err
