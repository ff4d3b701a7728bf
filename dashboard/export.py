"""Static export of Plotly figures (PNG, PDF) with kaleido and the system Chromium.

kaleido 1.x drives a Chromium it finds through `BROWSER_PATH`; we point it at Debian's
`/usr/bin/chromium` unless the environment already names one, so nothing is downloaded at
run time. No Streamlit here: `dashboard.widgets` wires these into download buttons, which
call them lazily (only when the user clicks), because each export starts a browser.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import plotly.graph_objects as go

from dashboard.figures import COLORWAY

FORMATS: dict[str, str] = {"png": "image/png", "pdf": "application/pdf"}
DEFAULT_BROWSER = "/usr/bin/chromium"


class ExportError(RuntimeError):
    """A figure could not be rendered to a static file (names the format and the cause)."""


def ensure_browser_path() -> str | None:
    """Set BROWSER_PATH for kaleido if unset; return the browser used (None if none found)."""
    current = os.environ.get("BROWSER_PATH")
    if current:
        return current
    for candidate in (DEFAULT_BROWSER, shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            os.environ["BROWSER_PATH"] = candidate
            return candidate
    return None


def figure_bytes(
    fig: go.Figure,
    fmt: str = "png",
    *,
    width: int = 1100,
    height: int | None = None,
    scale: float = 2.0,
) -> bytes:
    """Render `fig` to PNG or PDF bytes; raises ExportError with the reason on failure."""
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ExportError(f"unsupported export format {fmt!r}; choose one of {sorted(FORMATS)}")
    if ensure_browser_path() is None:
        raise ExportError(
            "no Chromium found for kaleido: install it (apt-get install chromium) "
            "or set BROWSER_PATH"
        )
    h = height or fig.layout.height or 500
    fig = print_figure(fig)
    try:
        return fig.to_image(format=fmt, width=width, height=h, scale=scale if fmt == "png" else 1.0)
    except Exception as exc:  # kaleido raises a variety of errors from the browser side
        raise ExportError(f"{fmt.upper()} export failed: {type(exc).__name__}: {exc}") from exc


def print_figure(fig: go.Figure) -> go.Figure:
    """The figure as exported: a white page for print, with the colours the screen shows (the
    figure's own colorway, `figures.COLORWAY` where it names none, so the template cannot
    swap them)."""
    colorway = fig.layout.colorway or COLORWAY
    return go.Figure(fig).update_layout(template="plotly_white", colorway=list(colorway))


def safe_filename(title: str, fmt: str) -> str:
    """A file name from a figure title: lower case, [a-z0-9_-] only."""
    stem = re.sub(r"[^a-z0-9_-]+", "_", title.lower()).strip("_") or "figure"
    return f"{stem[:80]}.{fmt}"
