"""Helpers for the browser tests: run `streamlit run app.py` on a free loopback port, drive Chromium."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from nsbi_testing import in_ci

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
# every page the browser tests visit, as a reviewer sees it (git-ignored; CI keeps the folder;
# NSBI_SCREENSHOTS moves it); the dashboard conftest prints where it is after the run
SCREENSHOTS = Path(os.environ.get("NSBI_SCREENSHOTS", str(ARTIFACTS / "screenshots")))
SAVED: list[Path] = []  # screenshots saved in this test session
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]

# every browser test module: `pytestmark = BROWSER_MARKS`. Without chromium they skip here, but
# not under CI (.ci/run installs it): there chromium_page fails loudly instead.
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() and not in_ci(),
        reason=f"{CHROMIUM} missing: apt-get install -y chromium",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(
                f"streamlit exited with {proc.returncode} before becoming healthy:\n{out}"
            )
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url}/_stcore/health did not answer 'ok' within {timeout_s:.0f} s")


@contextlib.contextmanager
def streamlit_server(
    home: Path, *, extra_env: dict[str, str] | None = None, address: str = "127.0.0.1"
) -> Iterator[str]:
    """Start the dashboard against the database under `home`; yield its base URL; stop it.

    `address` is the bind address (`0.0.0.0` makes the dashboard demand a login); the URL
    always goes through 127.0.0.1."""
    port = free_port()
    env = dict(
        os.environ,
        NSBI_HOME=str(home),
        DATABASE_URL=f"sqlite:///{home / 'nsbi.db'}",
        NSBI_STORE=f"file://{home / 'store'}",
        BROWSER_PATH=CHROMIUM,
        **(extra_env or {}),
    )
    log = open(home / "streamlit.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(REPO / "app.py"),
            "--server.port",
            str(port),
            "--server.address",
            address,
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_healthy(url, proc)
        except Exception as exc:
            log.flush()
            raise RuntimeError((home / "streamlit.log").read_text()[-4000:]) from exc
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextlib.contextmanager
def chromium_page(width: int = 1400, height: int = 1000):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def wait_title(page, timeout_ms: int = 60_000) -> None:
    """Wait until the page's script has started drawing (every page begins with a title).

    Streamlit has no reliable "script finished" marker in the DOM (the status widget only
    appears for long runs), so tests then wait for the specific content they check.
    """
    page.wait_for_selector("[data-testid='stApp'] h1", timeout=timeout_ms)


def screenshot(page, name: str, *, show=None) -> Path:
    """Save test-artifacts/screenshots/<name>.png; `show` (a locator) is scrolled into view
    first, since Streamlit scrolls inside its main container and full-page shots only see the
    viewport."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    if show is not None:
        from playwright.sync_api import Error as PlaywrightError

        # a live page (the Monitor's refreshing fragment) can replace the element while it is
        # being scrolled to; the locator finds the new one on the next try. The scroll only
        # frames the picture, so after three tries the shot is taken as the page stands.
        for _ in range(3):
            try:
                show.scroll_into_view_if_needed(timeout=15_000)
                break
            except PlaywrightError:
                page.wait_for_timeout(500)
    page.screenshot(path=str(path))
    SAVED.append(path)
    print(f"screenshot: {path}")
    return path


def chart_js(title: str) -> str:
    """JS expression: the drawn Plotly chart whose title contains `title`, else undefined.

    Streamlit puts text on the page before Plotly has drawn a chart (and a chart may have no
    title), so every lookup checks `layout`, `_fullData` and the title before using them."""
    return (
        "[...document.querySelectorAll('.js-plotly-plot')].find(g => g.layout && g._fullData && "
        f"((g.layout.title && g.layout.title.text) || '').includes({json.dumps(title)}))"
    )


def wait_chart(page, title: str, condition: str = "true", timeout_ms: int = 30_000) -> None:
    """Wait until the chart titled `title` is drawn and the JS `condition` on it (`g`) holds."""
    page.wait_for_function(
        f"() => {{ const g = {chart_js(title)}; return !!g && ({condition}); }}", timeout=timeout_ms
    )


DATAFRAME_ROW_PX = 35  # Streamlit's st.dataframe: header and row height


def select_dataframe_row(frame, row: int) -> None:
    """Tick row `row` of an st.dataframe with on_select (a canvas grid: its row-marker column,
    left of the first cell, toggles the row's selection)."""
    frame.click(position={"x": 18, "y": DATAFRAME_ROW_PX * (row + 1) + DATAFRAME_ROW_PX // 2})
