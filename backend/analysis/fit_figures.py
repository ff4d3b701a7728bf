"""Figures of fit results shared by the analysis report and the dashboard's Fit page: the 2-D
profile-likelihood contours of two POIs, and round axis ticks for impact plots.

Pure Plotly on the fit result's JSON (no JAX: the contour points are computed in the fit job,
`sbi_engine.fit.contours`, and travel in the result as ``contours`` {"68", "95"}: pois, best,
x, y, flags, area, correlation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["nice_step", "nice_ticks", "contour_figure", "CONTOUR_STYLE", "LIMIT_BAND_KEYS"]

# keys of a limit result's "expected" map, in plotting order: the expected limit where mu-hat
# is N sigma from 0 under the background-only hypothesis (sbi_engine.fit.limits.BANDS, as text)
LIMIT_BAND_KEYS = ("-2", "-1", "0", "1", "2")

CONTOUR_STYLE = {"68": ("#1f78b4", "solid"), "95": ("#33a02c", "dash")}


def nice_step(span: float, target: int = 5) -> float:
    """A 1-2-5 x 10^k step giving about ``target`` intervals over ``span``."""
    if not (span > 0 and math.isfinite(span)):
        return 1.0
    raw = span / max(target, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= m * mag * (1 + 1e-9):
            return m * mag
    return 10.0 * mag


def nice_ticks(reach: float, target: int = 6) -> tuple[list[float], float]:
    """(tick values, rounded reach) for a symmetric axis [-reach, reach]: round multiples of a
    1-2-5 step (e.g. 0.05, not 0.0816), with the range widened to the next tick."""
    if not (reach > 0 and math.isfinite(reach)):
        reach = 1.0
    step = nice_step(2.0 * reach, target)
    n = math.ceil(reach / step - 1e-9)
    ticks = [round(k * step, 12) for k in range(-n, n + 1)]
    return ticks, n * step


def contour_figure(contours: Mapping[str, Any], title: str | None = None) -> Any:
    """The 68 % and 95 % contours of two POIs with the best fit marked (a Plotly figure)."""
    import plotly.graph_objects as go  # noqa: PLC0415

    fig = go.Figure()
    pois: list[str] = ["", ""]
    best = None
    for key, c in sorted(contours.items()):
        if not isinstance(c, Mapping) or not c.get("x"):
            continue
        pois = list(c.get("pois") or pois)
        best = c.get("best") or best
        colour, dash = CONTOUR_STYLE.get(key, ("#555", "dot"))
        xs, ys = list(c["x"]), list(c["y"])
        fig.add_trace(
            go.Scatter(
                x=xs + xs[:1],
                y=ys + ys[:1],
                mode="lines",
                line={"color": colour, "dash": dash, "width": 2},
                name=f"{key} % CL",
            )
        )
    if best is not None:
        fig.add_trace(
            go.Scatter(
                x=[best[0]],
                y=[best[1]],
                mode="markers",
                marker={"symbol": "cross", "size": 11, "color": "black"},
                name="best fit",
            )
        )
    rho = next((c.get("correlation") for c in contours.values() if isinstance(c, Mapping)), None)
    sub = f" (correlation {rho:+.2f})" if isinstance(rho, (int, float)) else ""
    fig.update_layout(
        title=title or f"Profile-likelihood contours of {pois[0]} and {pois[1]}{sub}",
        xaxis={"title": pois[0]},
        yaxis={"title": pois[1]},
        template="plotly_white",
        width=700,
        height=560,
    )
    return fig
