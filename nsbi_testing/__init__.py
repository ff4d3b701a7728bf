"""Test doubles for nsbi-workbench: the fake Compute Engine service and the fault-injecting
job kind. They live outside ``backend`` so that the installed wheel ships no fake service and
no fault injection; like ``benchmarks/``, this package exists only in the source checkout.

A worker learns the test job kinds only when told to (``NSBI_JOB_KIND_MODULES``, see
:mod:`backend.worker`); :func:`worker_env` gives the variables a worker subprocess needs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
JOB_KIND_MODULES = "nsbi_testing.jobkinds"


def worker_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``NSBI_JOB_KIND_MODULES`` and ``PYTHONPATH`` for a worker that must run the "noop" kind.

    The checkout goes first on PYTHONPATH because this package is not installed: a worker
    started from another directory must still import it.
    """
    environ = os.environ if environ is None else environ
    path = [str(REPO_ROOT), *(p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    modules = [m for m in environ.get("NSBI_JOB_KIND_MODULES", "").split(",") if m.strip()]
    if JOB_KIND_MODULES not in modules:
        modules.append(JOB_KIND_MODULES)
    return {
        "NSBI_JOB_KIND_MODULES": ",".join(modules),
        "PYTHONPATH": os.pathsep.join(dict.fromkeys(path)),
    }


def in_ci() -> bool:
    """True under the project's CI (``.ci/run`` exports ``CI=true``)."""
    return os.environ.get("CI", "").lower() == "true"


def unavailable(why: str, *, in_ci_because: str = "") -> None:
    """Skip a test whose real part (PostgreSQL, Slurm, faketime, ...) is missing here; under CI,
    which installs and starts every such part (.ci/run), fail instead, so CI never passes a
    test by skipping it. ``in_ci_because`` adds what CI should have done."""
    import pytest  # noqa: PLC0415 - only tests call this

    if in_ci():
        pytest.fail(f"cannot run in CI: {why}" + (f" ({in_ci_because})" if in_ci_because else ""))
    pytest.skip(why)
