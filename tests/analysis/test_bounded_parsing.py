"""Issue 16: the analysis reader is bounded and every failure is a located problem.

Alias bombs, oversized files, duplicate keys, non-finite values and hostile coefficient
expressions all come back from `nsbi analysis validate` as `file:line: key: message` lines with
exit status 2 -- never a traceback, a MemoryError or a hang.
"""

from __future__ import annotations

import contextlib
import io
import time

import pytest

from backend.analysis import validate_analysis
from backend.cli import main
from backend.yaml_reader import MAX_BYTES

HEAD = (
    "name: x\n"
    "processes:\n"
    "  S: {sample: {demo: {process: S, n: 10, seed: 1}}, coefficient: COEF}\n"
    "  B: {sample: {demo: {process: B, n: 10, seed: 2}}, coefficient: '1'}\n"
    "reference: B\n"
)

BOMB = "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
    f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi")
)


def _validate_cli(path) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["analysis", "validate", "--no-data", str(path)])
    return code, err.getvalue()


def test_billion_laughs_is_refused_quickly_with_its_line(tmp_path):
    f = tmp_path / "bomb.yaml"
    f.write_text(BOMB)
    assert len(BOMB) < 350
    start = time.perf_counter()
    code, err = _validate_cli(f)
    assert time.perf_counter() - start < 5
    assert code == 2
    assert f"{f}:6: (file): the document expands to more than" in err
    assert "anchors and aliases" in err


def test_too_many_aliases_and_recursive_aliases_are_refused(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text("x: &x 1\nys: [" + ", ".join(["*x"] * 150) + "]\n")
    (p,) = validate_analysis(f, check_data=False)
    assert (p.line, p.path) == (2, "(file)") and "more than 100 aliases" in p.message
    f.write_text("x: &x [1, *x]\n")
    (p,) = validate_analysis(f, check_data=False)
    assert p.path == "(file)" and "recursive alias" in p.message


def test_deep_nesting_is_refused(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text("x: " + "[" * 5000 + "]" * 5000 + "\n")
    (p,) = validate_analysis(f, check_data=False)
    assert p.path == "(file)" and "nested" in p.message


def test_a_file_over_one_mebibyte_is_refused_before_it_is_parsed(tmp_path):
    f = tmp_path / "big.yaml"
    f.write_text(HEAD.replace("COEF", "mu") + "# " + "x" * MAX_BYTES + "\n")
    code, err = _validate_cli(f)
    assert code == 2 and f"{f}:1: (file): the file is larger than 1024 KiB" in err


def test_duplicate_keys_are_refused_with_both_lines(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text(HEAD.replace("COEF", "mu") + "poi: {init: 1}\npoi: {init: 2}\n")
    code, err = _validate_cli(f)
    assert code == 2
    assert f"{f}:7: poi: duplicate key (first given on line 6)" in err


@pytest.mark.parametrize(
    "coefficient, fragment",
    [
        ("'1/mu'", "processes.S.coefficient: '1/mu' is not finite at mu = 0"),
        ("'mu/0'", "processes.S.coefficient: 'mu/0' is not finite at mu = 0"),
        ("'mu**9**9**9'", "processes.S.coefficient: 'mu**9**9**9' overflows"),
        ("'1/0'", "processes.S.coefficient: '1/0' divides by zero"),
        ("'" + "+".join(["mu"] * 20000) + "'", "coefficient expression is 59999 characters"),
        ("'" + "+".join(["mu"] * 300) + "'", "too deep a nesting; write a shorter one"),
        ("'" + "*".join(["(mu+1)"] * 30) + "'", "has more than 200 terms"),
        ("'" + "sqrt(" * 40 + "mu" + ")" * 40 + "'", "too deep a nesting"),
        ("'mu ** (-1)'", "is not finite at mu = 0"),
    ],
)
def test_hostile_coefficients_are_located_problems(tmp_path, coefficient, fragment):
    f = tmp_path / "a.yaml"
    f.write_text(HEAD.replace("COEF", coefficient))
    code, err = _validate_cli(f)
    assert code == 2
    lines = [line for line in err.splitlines() if fragment in line]
    assert lines and all(line.startswith(f"{f}:3: processes.S.coefficient: ") for line in lines), (
        err
    )


@pytest.mark.parametrize(
    "extra, where, fragment",
    [
        ("data: {asimov: {mu: .nan}}\n", "6: data.asimov.mu", "expected a finite number, got nan"),
        ("poi: {init: .inf}\n", "6: poi.init", "expected a finite number, got inf"),
        (
            "compute:\n  fit: {options: {tolerance: .nan}}\n",
            "7: compute.fit.options.tolerance",
            "expected a finite number, got nan",
        ),
        ("backend: {budget_usd: .inf}\n", "6: backend.budget_usd", "expected a finite number"),
    ],
)
def test_non_finite_values_are_located_problems(tmp_path, extra, where, fragment):
    f = tmp_path / "a.yaml"
    f.write_text(HEAD.replace("COEF", "mu") + extra)
    code, err = _validate_cli(f)
    assert code == 2 and f"{f}:{where}: {fragment}" in err, err


def test_absurd_demo_sizes_are_refused(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text(
        HEAD.replace("COEF", "mu").replace(
            "n: 10, seed: 1", "n: 1000000000000000000000000000000, seed: 1"
        )
    )
    code, err = _validate_cli(f)
    assert code == 2
    assert f"{f}:3: processes.S.sample.demo.n: expected an integer <= 1000000000, got" in err
