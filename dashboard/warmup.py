"""Warm Plotly up in the background when the dashboard process starts.

Plotly imports the validators of each trace type lazily: the first figure of a process
costs about 2 s, every later one tens of milliseconds. Building one figure of each kind the
pages use, on a daemon thread started once per server process, moves that cost off the
first page a user opens that has a chart.
"""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import streamlit as st


def _build_all() -> None:
    from dashboard import figures, queries

    metrics = pd.DataFrame(
        {
            "member": [0, 0, 1, 1],
            "step": [0, 1, 0, 1],
            "name": "train_loss",
            "value": [1.0, 0.5, 1.1, 0.6],
        }
    )
    pulls = pd.DataFrame({"name": ["a"], "pull": [0.1], "constraint": [0.9]})
    impacts = pulls.assign(prefit_up=0.1, prefit_down=-0.1, postfit_up=0.05, postfit_down=-0.05)
    usage = pd.DataFrame(
        {
            "campaign_name": ["c"],
            "spot": ["spot"],
            "cost": [1.0],
            "gpu_hours": [1.0],
            "time": pd.to_datetime(["2026-01-01"]),
        }
    )
    built = [
        figures.loss_curves(metrics, queries.ensemble_band(metrics)),
        figures.pulls(pulls),
        figures.impacts_ranking(impacts),
        figures.correlation(["a"], [[1.0]]),
        figures.likelihood_scan(pd.DataFrame({"value": [0.0, 1.0], "q": [1.0, 0.0]})),
        figures.toy_pulls(np.zeros(3)),
        figures.histogram([1.0, 2.0], title="h", x_title="x"),
        figures.cost_bars(usage, by="campaign_name", colour_by="spot"),
        figures.burn_down(usage, 10.0),
        figures.usage_over_time(usage),
        figures.calibration(pd.DataFrame({"label": ["e"], "predicted": [0.5], "observed": [0.5]})),
    ]
    for fig in built:
        fig.to_json()


@st.cache_resource(show_spinner=False)
def start() -> threading.Thread:
    """Start the warm-up thread (once per process; later calls return the same thread)."""
    thread = threading.Thread(target=_build_all, name="nsbi-plotly-warmup", daemon=True)
    thread.start()
    return thread
