"""Small Streamlit building blocks the pages share (chart + export buttons, empty states)."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from dashboard import export


def _exporter(fig: go.Figure, fmt: str):
    # Bound now, rendered only when the user clicks (each export starts a headless browser).
    def render() -> bytes:
        return export.figure_bytes(fig, fmt)

    return render


def chart(fig: go.Figure, key: str, *, exportable: bool = True) -> None:
    """Show a Plotly figure with PNG and PDF download buttons under it."""
    st.plotly_chart(fig, key=f"chart-{key}", config={"displaylogo": False})
    if not exportable:
        return
    title = fig.layout.title.text if fig.layout.title and fig.layout.title.text else key
    cols = st.columns([1, 1, 6])
    for col, fmt in zip(cols, ("png", "pdf")):
        with col:
            st.download_button(
                f"{fmt.upper()}",
                data=_exporter(fig, fmt),
                file_name=export.safe_filename(title, fmt),
                mime=export.FORMATS[fmt],
                key=f"export-{fmt}-{key}",
                icon=":material/download:",
                on_click="ignore",
            )


def nothing_yet(message: str) -> None:
    """The clear 'nothing yet' state pages show instead of empty charts."""
    st.info(message, icon=":material/hourglass_empty:")


def report_error(where: str, exc: Exception) -> None:
    """Show a backend error without a traceback wall; the page keeps working."""
    st.error(f"{where}: {type(exc).__name__}: {exc}")
