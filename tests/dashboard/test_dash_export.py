"""Static export with kaleido and Debian's Chromium: real PNG and PDF files come out."""

from __future__ import annotations

import struct
from pathlib import Path

import pandas as pd
import pytest

from dashboard import export, figures

pytestmark = pytest.mark.skipif(
    not Path("/usr/bin/chromium").exists() and not export.ensure_browser_path(),
    reason="no Chromium for kaleido",
)


@pytest.mark.slow
def test_png_and_pdf_of_a_dashboard_figure():
    df = pd.DataFrame({"name": ["a", "b"], "pull": [0.3, -1.1], "constraint": [0.8, 0.9]})
    fig = figures.pulls(df)
    before = fig.to_json()
    png = export.figure_bytes(fig, "png", width=800, height=400, scale=1.0)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])  # IHDR: the size we asked for
    assert (width, height) == (800, 400)
    pdf = export.figure_bytes(fig, "pdf")
    assert pdf[:5] == b"%PDF-" and b"%%EOF" in pdf[-64:]
    assert fig.to_json() == before  # export styles a copy; the app's figure is left as it was


def test_unsupported_format_names_the_choices():
    with pytest.raises(export.ExportError, match="choose one of"):
        export.figure_bytes(figures.empty_figure("x"), "svgz")


def test_safe_filename():
    assert export.safe_filename("Impact on mu: top 20", "pdf") == "impact_on_mu_top_20.pdf"


def _colours_in(png: bytes) -> set[tuple[int, int, int]]:
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    return {rgb for _, rgb in img.getcolors(maxcolors=1 << 20)}


@pytest.mark.slow
def test_exported_png_keeps_the_screen_colours():
    """Lines that name no colour (one per job on the resource chart) take the pinned colorway
    on screen and in the PNG alike (the export template used to swap them)."""
    t = pd.to_datetime([0, 5, 10, 0, 5, 10], unit="s", utc=True)
    r = pd.DataFrame(
        {
            "time": t,
            "job_id": [1, 1, 1, 2, 2, 2],
            "name": "CPU (%)",
            "value": [10, 20, 30, 50, 60, 70],
        }
    )
    fig = figures.resource_usage(r)
    assert list(fig.layout.colorway) == list(figures.COLORWAY)  # what the browser draws with
    assert list(export.print_figure(fig).layout.colorway) == list(figures.COLORWAY)
    fig.update_traces(line={"width": 6})
    colours = _colours_in(export.figure_bytes(fig, "png", width=600, height=300, scale=1.0))
    for hex_colour in figures.COLORWAY[:2]:  # job 1 and job 2
        rgb = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
        assert rgb in colours, (hex_colour, len(colours))
