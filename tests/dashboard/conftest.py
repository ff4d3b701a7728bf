"""Fixtures for dashboard tests: a seeded SQLite control-plane database per test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # for `import dash_testkit`

import dash_testkit as seed_module  # noqa: E402


@pytest.fixture
def nsbi_env(tmp_path, monkeypatch):
    """NSBI_HOME / DATABASE_URL pointing into tmp_path; caches cleared around the test."""
    import streamlit as st

    from backend.db import dispose_engines

    url = f"sqlite:///{tmp_path / 'nsbi.db'}"
    monkeypatch.setenv("NSBI_HOME", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("NSBI_STORE", f"file://{tmp_path / 'store'}")
    st.cache_data.clear()
    yield url
    st.cache_data.clear()
    dispose_engines()


@pytest.fixture
def empty_db(nsbi_env):
    from backend.db import get_engine, init_db

    init_db(get_engine(nsbi_env))
    return nsbi_env


@pytest.fixture
def seeded(nsbi_env):
    return seed_module.seed(nsbi_env)


def pytest_terminal_summary(terminalreporter):
    """Where the browser tests left their screenshots (a folder a reviewer can open)."""
    from dash_browser import SAVED, SCREENSHOTS

    if SAVED:
        terminalreporter.write_line(
            f"dashboard screenshots: {len(SAVED)} saved this run in {SCREENSHOTS} "
            f"({', '.join(sorted(p.name for p in SAVED))})"
        )
