"""Installs are reproducible (issue 16, finding 9).

Every dependency in pyproject.toml is a range (`>=`); without pins two installs a week apart
got different packages. constraints.txt pins the whole closure, every install step (Makefile,
Dockerfile) uses it, and `make constraints` refreshes it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, ver = line.partition("==")
        assert sep and ver and " " not in line, f"not name==version: {line!r}"
        key = canonicalize_name(name)
        assert key not in pins, f"{key} pinned twice"
        pins[key] = ver
    return pins


def _project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra, items in project["optional-dependencies"].items():
        reqs += [Requirement(r) for r in items if extra != "gpu"]  # CUDA wheels: not on CPU
    return reqs


def test_every_dependency_is_pinned_within_its_supported_range():
    pins = _pins()
    assert "nsbi-workbench" not in pins and len(pins) > 50
    for req in _project_requirements():
        key = canonicalize_name(req.name)
        assert key in pins, f"{req.name} (pyproject.toml) is not in constraints.txt"
        assert req.specifier.contains(pins[key], prereleases=True), (
            f"constraints.txt pins {key}=={pins[key]}, outside pyproject.toml's {req}"
        )


def test_this_environment_is_the_pinned_one():
    """The venv `make test` built has exactly the pinned versions (what CI tests is what the
    image and every other machine install)."""
    wrong = {}
    for key, pinned in _pins().items():
        try:
            have = version(key)
        except PackageNotFoundError:
            have = None
        if have != pinned:
            wrong[key] = (pinned, have)
    assert not wrong, f"installed versions differ from constraints.txt (run make test): {wrong}"


def test_the_generator_reproduces_the_file(tmp_path):
    """constraints.txt is what `make constraints` writes from this environment."""
    out = tmp_path / "constraints.txt"
    subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "constraints.py"), str(out)],
        check=True,
        capture_output=True,
    )
    assert out.read_text() == CONSTRAINTS.read_text()


def test_every_install_step_uses_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    installs = [
        line.strip()
        for line in makefile.splitlines()
        if "pip install" in line and "--upgrade pip" not in line
    ]
    assert len(installs) >= 3
    # the two stamps install with the pins; `make constraints` deliberately without them
    pinned = [line for line in installs if "-c $(CONSTRAINTS)" in line]
    assert {"-e .", "-e '.[dev]'"} <= {line.split("$(CONSTRAINTS) ", 1)[1] for line in pinned}
    assert re.search(r"^CONSTRAINTS\s*:=\s*constraints\.txt$", makefile, re.M)
    assert re.search(
        r"^\$\(VENV\)/\.installed-dev: pyproject\.toml \$\(CONSTRAINTS\)", makefile, re.M
    )
    assert re.search(r"^constraints:.*\n(\t.*\n)*\t.*\.ci/constraints\.py", makefile, re.M)
    docker = (ROOT / "Dockerfile").read_text()
    assert "COPY pyproject.toml README.md constraints.txt ./" in docker
    docker_installs = re.findall(r"pip install[^;&\n]*", docker)
    assert docker_installs and all("-c constraints.txt" in c for c in docker_installs)
    assert "make constraints" in (ROOT / "README.md").read_text()
