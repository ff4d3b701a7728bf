"""The Fit page's Contours view (analyses with several POIs) and its round impact ticks."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from dash_testkit import run_page


def _contours() -> dict:
    t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    return {
        k: {
            "pois": ["mu_ggF", "mu_VBF"],
            "best": [1.0, 1.0],
            "x": list(1 + s * np.cos(t)),
            "y": list(1 + 0.7 * s * np.sin(t)),
            "flags": [[]] * 24,
            "area": float(np.pi * 0.7 * s * s),
            "correlation": -0.4,
        }
        for k, s in (("68", 0.3), ("95", 0.5))
    }


def test_fit_page_draws_contours_and_round_impact_ticks(seeded, monkeypatch):
    from dashboard import queries

    load = queries.load_fit

    def with_contours(campaign_id):
        views, table = load(campaign_id)
        extra = {
            "contours": _contours(),
            "pois": {
                "mu_ggF": {"value": 1.0, "error": 0.2, "err_lo": -0.19, "err_hi": 0.22},
                "mu_VBF": {"value": 1.0, "error": 0.15, "err_lo": -0.14, "err_hi": 0.16},
            },
            "poi_correlations": {
                "mu_ggF": {"mu_ggF": 1.0, "mu_VBF": -0.4},
                "mu_VBF": {"mu_ggF": -0.4, "mu_VBF": 1.0},
            },
        }
        return {r: dataclasses.replace(v, **extra) for r, v in views.items()}, table

    monkeypatch.setattr(queries, "load_fit", with_contours)
    at = run_page("fit")
    at.button_group(key="fit-view").set_value("Contours").run()
    assert not at.exception
    (chart,) = at.get("plotly_chart")
    spec = json.loads(chart.proto.spec)
    assert spec["layout"]["title"]["text"].startswith("Profile-likelihood contours of mu_ggF")
    assert len(spec["data"]) == 3  # 68 %, 95 %, best fit
    tables = [d.value for d in at.dataframe]
    assert any("err_lo (profile)" in t.columns for t in tables)
    # impacts: round ticks on the impact axis
    at.button_group(key="fit-view").set_value("Impacts").run()
    (chart,) = at.get("plotly_chart")
    ticks = json.loads(chart.proto.spec)["layout"]["xaxis2"]["tickvals"]
    step = ticks[1] - ticks[0]
    mantissa = step / 10 ** np.floor(np.log10(step))
    assert any(abs(mantissa - m) < 1e-9 for m in (1, 2, 2.5, 5)), ticks


def test_fit_page_without_contours_says_why(seeded):
    at = run_page("fit")
    at.button_group(key="fit-view").set_value("Contours").run()
    assert not at.exception
    assert any("one parameter of interest" in i.value for i in at.info)
