"""CI smoke run of the bad-input study (`benchmarks/bad_inputs.py`, docs/reliability.md "Bad
inputs"): a dozen of its inputs through the real CLI and backend functions, each refused with
exit status 2 and a message naming the file and line or key, with nothing stored."""

from __future__ import annotations

import pytest

from benchmarks.bad_inputs import all_cases, run_case

SMOKE = {
    "analysis file": [
        "alias-bomb",
        "duplicate-key",
        "coef-1-over-mu",
        "coef-tower",
        "feature-tower",
        "missing-sample",
    ],
    "campaign config": ["nan-mu-true", "inf-budget", "missing-sample", "alias-bomb"],
    "store key": ["store-list-dotdot"],
    "dashboard form": ["form-nan-budget"],
}
CASES = [c for c in all_cases() if c.name in SMOKE.get(c.kind, [])]


def test_the_study_has_at_least_50_inputs_of_every_kind():
    cases = all_cases()
    assert len(cases) >= 50
    assert {c.kind for c in cases} >= {
        "analysis file",
        "campaign config",
        "workspace",
        "store key",
        "dashboard form",
    }
    assert len({(c.kind, c.name) for c in cases}) == len(cases)
    assert len(CASES) == sum(len(v) for v in SMOKE.values())


@pytest.mark.parametrize("case", CASES, ids=[f"{c.kind}:{c.name}" for c in CASES])
def test_bad_input_is_refused_located_and_nothing_stored(case):
    r = run_case(case, timeout=20.0)
    assert r.exit_status == 2, r
    assert r.located, r
    assert not r.stored, r.stored_what
    assert r.outcome == "refused"
