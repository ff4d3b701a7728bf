"""Suite-wide pytest hooks: the ``study`` marker.

A study is a long statistical measurement (thousands of toys, tens of minutes on 2 cores) whose
figure is quoted in docs/validation.md. It is too slow for CI, which keeps a small smoke version
of each; ``NSBI_RUN_STUDIES=1`` runs the studies too.
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("NSBI_RUN_STUDIES"):
        return
    skip = pytest.mark.skip(
        reason="a study (minutes to tens of minutes on 2 cores), outside CI: run with NSBI_RUN_STUDIES=1"
    )
    for item in items:
        if item.get_closest_marker("study"):
            item.add_marker(skip)
