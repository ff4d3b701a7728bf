"""Content checks of an analysis file's samples: each one is read, a few rows of it.

Why: a typo in a branch name, a tree that is not in the file, or a feature expression that
indexes past the end of a jagged array would otherwise only surface when a training job
starts on a remote machine. Reading the first rows through the same loader the jobs use
(`sbi_engine.sample_specs.load_sample_spec`) finds them before anything is created. The loader
is NumPy only (no JAX); it is imported when the contents are checked, the static checks in
`spec_check` do not import the engine at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from backend.analysis.spec_yaml import PathKey

PROBE_ROWS = 1000  # rows read per file sample
PROBE_EVENTS = 20  # events simulated per demo sample


def _probe_spec(spec: dict[str, Any]) -> dict[str, Any]:
    if "demo" in spec:
        demo = dict(spec["demo"])
        demo["n"] = min(int(demo.get("n") or PROBE_EVENTS), PROBE_EVENTS)
        return {"demo": demo}
    stop = spec.get("entry_stop")
    out = {**spec, "entry_stop": min(int(stop), PROBE_ROWS) if stop else PROBE_ROWS}
    if isinstance(spec.get("eval_sample"), dict):
        out["eval_sample"] = _probe_spec(spec["eval_sample"])
    return out


# a split of the first rows only may leave a part empty (a small eval_fraction, a selection
# that keeps few of them): not a problem of the file
_PROBE_ONLY = ("keeps 0 of", "part would be empty", "part has a sum of weights")


def _read(spec: dict[str, Any]) -> None:
    """Read the probe of one sample, its evaluation part too when it has an eval_sample or split_by."""
    from sbi_engine.sample_specs import load_sample_spec, sample_parts

    load_sample_spec(spec)
    if "eval_sample" in spec:
        load_sample_spec(spec, role="eval")
    elif "split_by" in spec:
        sample_parts(spec)


def check_contents(samples: Iterable[tuple[PathKey, dict[str, Any]]]) -> list[tuple[PathKey, str]]:
    """(key path, message) for every sample the engine's loader refuses (each spec read once)."""
    from sbi_engine.data import DataError

    problems: list[tuple[PathKey, str]] = []
    seen: dict[str, str | None] = {}
    for path, spec in samples:
        key = json.dumps(spec, sort_keys=True)
        if key not in seen:
            try:
                _read(_probe_spec(spec))
                seen[key] = None
            except DataError as exc:
                # a selection may keep nothing of the first rows only: that is not an error
                seen[key] = None if any(m in str(exc) for m in _PROBE_ONLY) else str(exc)
        if seen[key] is not None:
            problems.append((path, f"cannot read the sample: {seen[key]}"))
    return problems
