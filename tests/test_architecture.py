"""The architecture rules hold, and breaking one fails CI.

`make lint` runs import-linter with the contracts in pyproject.toml (layers dashboard -> backend
-> sbi_engine, the library and dashboard boundaries, no import cycles inside a package). These
tests run the same contracts on the real tree and on copies with one rule deliberately broken,
so a contract that silently stopped checking anything would show up here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("sbi_engine", "backend", "dashboard", "benchmarks", "nsbi_testing")


def run_contracts(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def append_line(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


def test_the_real_tree_keeps_every_contract(tree_copy: Path) -> None:
    result = run_contracts(tree_copy)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "5 kept, 0 broken" in result.stdout, result.stdout[-2000:]


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        (
            "sbi_engine/sample_specs.py",
            "import backend.settings",
            "Layers: dashboard -> backend -> sbi_engine",
        ),
        ("sbi_engine/result_checks.py", "import sqlalchemy", "sbi_engine is a library"),
        ("dashboard/figures.py", "import jax", "The dashboard touches neither cloud SDKs nor JAX"),
        (
            "backend/worker.py",
            "import nsbi_testing.jobkinds",
            "Production code never imports the benchmarks",
        ),
        ("backend/settings.py", "import backend.controller", "No import cycles inside a package"),
    ],
)
def test_breaking_a_contract_fails(tree_copy: Path, module: str, line: str, contract: str) -> None:
    append_line(tree_copy / module, f"{line}  # deliberately breaks a contract")
    result = run_contracts(tree_copy)
    assert result.returncode != 0, result.stdout[-3000:]
    broken = result.stdout.split("Broken contracts")[-1]
    assert contract in broken, broken[-3000:]
