"""The module map (docs/design.md) and the README's command table keep up with the code.

A module added without a row in the map, or a command added to `backend.cli.COMMANDS` without
a line in the README, fails here. Grouped modules are covered by one row each and are not
checked one by one: ``__init__.py`` files, the Alembic migrations, ``backend/commands/*``,
``dashboard/pages/*`` and ``backend/analysis/spec_*.py``.
"""

from __future__ import annotations

import re
from fnmatch import fnmatch
from pathlib import Path

import pytest

from backend.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
README = ROOT / "README.md"
PACKAGES = ("sbi_engine", "backend", "dashboard", "benchmarks", "nsbi_testing")
GROUPED = (
    "*/__init__.py",
    "backend/db/migrations/*",
    "backend/commands/*",
    "dashboard/pages/*",
    "backend/analysis/spec_*.py",
)


def mapped_modules() -> list[str]:
    """Every module the map must name by its path, relative to the repository root."""
    paths = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if not any(fnmatch(rel, pattern) for pattern in GROUPED):
                paths.append(rel)
    return sorted(paths)


def test_the_packages_have_modules_to_check() -> None:
    modules = mapped_modules()
    for package in PACKAGES:
        assert any(m.startswith(f"{package}/") for m in modules), package
    assert "sbi_engine/readers.py" in modules
    assert not any(m.startswith("backend/commands/") for m in modules)


def test_grouped_modules_have_their_row() -> None:
    text = DESIGN.read_text()
    for row in ("backend/commands/*", "dashboard/pages/*", "backend/analysis/spec_*.py"):
        assert f"`{row}" in text, f"docs/design.md has no row for {row}"


@pytest.mark.parametrize("module", mapped_modules())
def test_every_module_is_in_the_module_map(module: str) -> None:
    assert f"`{module}`" in DESIGN.read_text(), (
        f"{module} is not named in docs/design.md: add a row with its one-line job"
    )


def test_the_map_names_no_module_that_does_not_exist() -> None:
    """A row left behind by a move or a deletion (e.g. `sbi_engine/bench/`) fails too."""
    packages = "|".join(PACKAGES)
    named = re.findall(r"`((?:" + packages + r")/[\w/]*?(?:\.py|/))`", DESIGN.read_text())
    missing = sorted({p for p in named if not (ROOT / p).exists()})
    assert not missing, f"docs/design.md names paths that do not exist: {missing}"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_is_in_the_readme(command: str) -> None:
    assert f"nsbi {command}" in README.read_text(), (
        f"`nsbi {command}` (backend.cli.COMMANDS) is missing from README.md's command table"
    )
