"""The page icon (favicon), drawn here: a ":material/...:" page icon makes the browser fetch
an SVG from fonts.gstatic.com, which fails offline and leaks each visit to an outside host.
Streamlit serves this image from the dashboard itself (its media endpoint)."""

from __future__ import annotations

import functools
from typing import Any

BLUE = (31, 119, 180, 255)  # the dashboard's first series colour
WHITE = (255, 255, 255, 255)


@functools.cache
def favicon() -> Any:
    """A 32 x 32 RGBA image: a rising curve on a rounded blue square (PIL comes with Streamlit)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle((0, 0, 31, 31), radius=6, fill=BLUE)
    draw.line([(5, 24), (11, 16), (17, 20), (26, 7)], fill=WHITE, width=3, joint="curve")
    return img
