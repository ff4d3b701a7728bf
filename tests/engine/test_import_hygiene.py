"""Importing the engine has no global side effects; its entry points switch JAX to 64 bit.

Why subprocesses: the 64-bit switch is process-wide and one-way, so only a fresh interpreter
shows what an import or an entry point does to it. Each entry point is run twice, in a fresh
process and in one switched to 64 bit before anything else: the numbers must be bit-identical,
i.e. they do not depend on what ran earlier in the process (a worker runs fits and trainings).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout.strip()


def test_the_data_side_of_the_engine_does_not_import_jax():
    out = run_python("""
        import sys
        import sbi_engine, sbi_engine.data, sbi_engine.sample_specs, sbi_engine.demo, sbi_engine.precision
        import sbi_engine.problems, sbi_engine.result_checks, backend.analysis.spec_data
        from sbi_engine.problems import get_problem, list_problems
        from sbi_engine.sample_specs import load_sample_spec
        [get_problem(name).expected_events(1.0) for name in list_problems()]
        load_sample_spec({"demo": {"process": "S", "n": 10, "seed": 1}})
        print(sorted(m for m in sys.modules if m == "jax" or m.startswith("jax.")))
    """)
    assert out == "[]"


def test_importing_the_jax_parts_leaves_the_precision_alone():
    out = run_python("""
        import jax
        import sbi_engine.fit, sbi_engine.ratio, sbi_engine.fit_jobs, sbi_engine.pipeline, sbi_engine.closure
        import benchmarks.fit, benchmarks.train
        print(jax.config.read("jax_enable_x64"))
    """)
    assert out == "False"


def test_the_data_facade_keeps_the_names_callers_use():
    from sbi_engine import data, readers, sample

    assert data.Sample is sample.Sample and data.DataError is sample.DataError
    assert data.load_sample is readers.load_sample and data._FORMATS is readers._FORMATS
    assert set(data.__all__) == {
        "DataError",
        "Sample",
        "Split",
        "Scaler",
        "validate_sample",
        "split_sample",
        "load_sample",
    }


_ENTRY_POINTS = {
    "fit": """
        from sbi_engine.fit import fit, model_for
        from sbi_engine.fit.exact import exact_demo_workspace
        ws = exact_demo_workspace(400, n_nuisances=1, seed=0)
        res = fit(ws)
        assert res.converged and model_for(ws).data["w"].dtype == "float64"
        numbers = [res.theta, res.covariance, res.q_min]
    """,
    "train": """
        from sbi_engine.demo import default_problem
        from sbi_engine.ratio import TrainConfig, train_ensemble
        p = default_problem()
        cfg = TrainConfig(hidden_layers=1, width=8, members=2, max_steps=20, eval_every=10, batch_size=128,
                          schedule="cosine", warmup_steps=5)
        res = train_ensemble(p.sample("S", 400, seed=1), p.sample("B", 400, seed=2), cfg)
        numbers = [*jax.tree.leaves(res.ensemble.params), [h["value"] for h in res.history]]
    """,
    "ensemble log ratio": """
        from sbi_engine.ratio import Ensemble
        from sbi_engine.ratio.ensemble import FORMAT
        rng = np.random.default_rng(0)
        params = {"hidden_0": {"kernel": rng.normal(size=(3, 2, 8)), "bias": rng.normal(size=(3, 8))},
                  "output": {"kernel": rng.normal(size=(3, 8, 1)), "bias": rng.normal(size=(3, 1))}}
        meta = {"format": FORMAT, "feature_names": ["a", "b"], "scaler": {"mean": [0, 0], "scale": [1, 1]},
                "model": {"hidden_layers": 1, "width": 8, "activation": "silu", "dtype": "float32"}}
        log_r, spread = Ensemble(params, meta).log_ratio(rng.normal(size=(50, 2)))
        assert log_r.dtype == "float64"
        numbers = [log_r, spread]
    """,
}


@pytest.mark.parametrize("entry", sorted(_ENTRY_POINTS))
def test_entry_points_switch_to_float64_and_give_the_same_numbers_either_way(entry):
    digests = []
    for first in ("", "from sbi_engine.precision import enable_float64; enable_float64()"):
        out = run_python(f"""
            import hashlib
            import jax
            import numpy as np
            {first}
            before = jax.config.read("jax_enable_x64")
            {textwrap.indent(textwrap.dedent(_ENTRY_POINTS[entry]), "            ").strip()}
            digest = hashlib.sha256(b"".join(np.asarray(a).tobytes() for a in numbers)).hexdigest()
            print(before, jax.config.read("jax_enable_x64"), digest)
        """)
        before, after, digest = out.split()[-3:]
        assert before == str(bool(first)) and after == "True", out
        digests.append(digest)
    assert digests[0] == digests[1]
