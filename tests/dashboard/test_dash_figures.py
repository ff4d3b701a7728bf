"""Figure builders: plain pytest on DataFrames, numbers checked against numpy/scipy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from scipy import stats

from dashboard import figures, queries


def _metrics(n_members=4, n_steps=50, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for m in range(n_members):
        for s in range(n_steps):
            rows.append(
                {
                    "member": m,
                    "step": s,
                    "name": "train_loss",
                    "value": 1 / (1 + s) + 0.01 * rng.random(),
                }
            )
            rows.append(
                {
                    "member": m,
                    "step": s,
                    "name": "val_loss",
                    "value": 1.1 / (1 + s) + 0.01 * rng.random(),
                }
            )
    return pd.DataFrame(rows)


def test_loss_curves_band_matches_numpy():
    m = _metrics()
    band = queries.ensemble_band(m)
    fig = figures.loss_curves(m, band)
    mean_trace = next(t for t in fig.data if t.name == "train_loss mean")
    vals = m[m.name == "train_loss"].pivot(index="step", columns="member", values="value")
    np.testing.assert_allclose(mean_trace.y, vals.mean(axis=1).to_numpy())
    env = next(t for t in fig.data if t.name == "train_loss min/max")
    n = len(vals)
    np.testing.assert_allclose(env.y[:n], vals.max(axis=1).to_numpy())  # upper edge
    np.testing.assert_allclose(env.y[n:], vals.min(axis=1).to_numpy()[::-1])  # lower edge, reversed
    sd = next(t for t in fig.data if t.name == "train_loss mean ± std")
    np.testing.assert_allclose(sd.y[:n], (vals.mean(axis=1) + vals.std(axis=1, ddof=0)).to_numpy())
    # validation drawn dashed, one faint line per member and series
    assert next(t for t in fig.data if t.name == "val_loss mean").line.dash == "dash"
    assert sum(1 for t in fig.data if "member" in (t.name or "")) == 8


def test_empty_inputs_give_message_figures():
    empty = pd.DataFrame(columns=["member", "step", "name", "value"])
    for fig in (
        figures.loss_curves(empty, queries.ensemble_band(empty)),
        figures.resource_usage(pd.DataFrame()),
        figures.pulls(pd.DataFrame()),
        figures.impacts_ranking(pd.DataFrame()),
        figures.toy_pulls([]),
        figures.likelihood_scan(pd.DataFrame()),
        figures.correlation([], []),
    ):
        assert isinstance(fig, go.Figure)
        assert len(fig.data) == 0 and fig.layout.annotations[0].text


def test_scan_lines_are_chi2_quantiles():
    assert figures.Q_68 == pytest.approx(
        stats.chi2.ppf(stats.norm.cdf(1) - stats.norm.cdf(-1), 1), rel=1e-9
    )
    assert figures.Q_95 == pytest.approx(stats.chi2.ppf(0.95, 1), rel=1e-12)
    mu = np.linspace(0, 2, 21)
    fig = figures.likelihood_scan(pd.DataFrame({"value": mu, "q": ((mu - 1) / 0.3) ** 2}))
    levels = sorted(s.y0 for s in fig.layout.shapes)
    assert levels == pytest.approx([1.0, 3.841458820694124])


def test_impacts_ranking_orders_by_postfit_and_keeps_top():
    rng = np.random.default_rng(1)
    n = 30
    df = pd.DataFrame(
        {
            "name": [f"np{i}" for i in range(n)],
            "prefit_up": rng.normal(0, 0.1, n),
            "prefit_down": rng.normal(0, 0.1, n),
            "postfit_up": rng.normal(0, 0.1, n),
            "postfit_down": rng.normal(0, 0.1, n),
            "pull": rng.normal(0, 1, n),
            "constraint": rng.uniform(0.5, 1, n),
        }
    )
    fig = figures.impacts_ranking(df, top=10)
    post = next(t for t in fig.data if t.name == "post-fit +1σ")
    expected = df.assign(r=np.maximum(df.postfit_up.abs(), df.postfit_down.abs())).nlargest(10, "r")
    assert list(post.y)[::-1] == expected["name"].tolist()  # biggest on top
    assert all(t.xaxis == "x2" for t in fig.data if isinstance(t, go.Bar))
    pulls = next(t for t in fig.data if t.name == "pull")
    assert pulls.xaxis == "x"
    assert fig.layout.xaxis2.overlaying == "x"


def test_pulls_error_bars_are_constraints():
    df = pd.DataFrame({"name": ["a", "b"], "pull": [0.5, -1.2], "constraint": [0.8, 0.95]})
    fig = figures.pulls(df)
    t = fig.data[0]
    assert list(t.x) == [-1.2, 0.5] and list(t.error_x.array) == [0.95, 0.8]  # first row on top


def test_correlation_keeps_most_correlated_parameters():
    n = 80
    m = np.eye(n)
    m[3, 70] = m[70, 3] = 0.9
    names = [f"p{i}" for i in range(n)]
    fig = figures.correlation(names, m, max_params=10)
    hm = fig.data[0]
    assert "p3" in hm.x and "p70" in hm.x and len(hm.x) == 10
    assert hm.zmin == -1 and hm.zmax == 1


def test_toy_pulls_summary_matches_numpy():
    rng = np.random.default_rng(3)
    p = rng.normal(0.2, 1.3, 500)
    fig = figures.toy_pulls(p, bins=25)
    bar = fig.data[0]
    assert int(np.sum(bar.y)) == 500
    fitted = fig.data[2]
    assert fitted.name == f"mean {p.mean():.2f}, std {p.std(ddof=1):.2f}"


def test_closure_ratio_and_title():
    hist = {
        "observable": "m4l",
        "edges": [0, 1, 2, 3],
        "numerator": [10, 20, 0],
        "reweighted": [11, 18, 1],
        "chi2": 4.2,
        "ndf": 3,
    }
    fig = figures.closure(hist)
    ratio = next(t for t in fig.data if t.name == "ratio")
    np.testing.assert_allclose(ratio.y[:2], [1.1, 0.9])
    assert np.isnan(ratio.y[2])
    assert "χ²/ndf = 4.2/3" in fig.layout.title.text


def test_cost_bars_sum_groups():
    df = pd.DataFrame(
        {
            "campaign": ["a", "a", "b"],
            "spot": ["spot", "on-demand", "spot"],
            "cost": [1.0, 2.0, 5.0],
        }
    )
    fig = figures.cost_bars(df, by="campaign", colour_by="spot")
    totals = {}
    for t in fig.data:
        for x, y in zip(t.x, t.y):
            totals[x] = totals.get(x, 0) + y
    assert totals == {"a": 3.0, "b": 5.0}


def test_burn_down_remaining_budget():
    spend = pd.DataFrame({"time": pd.date_range("2026-01-01", periods=3), "cost": [10.0, 5.0, 2.5]})
    fig = figures.burn_down(spend, 100.0)
    np.testing.assert_allclose(fig.data[0].y, [90.0, 85.0, 82.5])


def test_resource_usage_summed_adds_jobs():
    t = pd.to_datetime([0, 0, 60, 60], unit="s", utc=True)
    r = pd.DataFrame(
        {
            "time": t,
            "job_id": [1, 2, 1, 2],
            "name": "gpu_util_percent",
            "value": [10.0, 30.0, 50.0, 20.0],
        }
    )
    total = queries.sum_resources(r)
    assert total["value"].tolist() == [40.0, 70.0]
    fig = figures.resource_usage(r)
    assert {t.name for t in fig.data} == {"job 1", "job 2"}


def test_campaign_states_stacks_counts_newest_on_top():
    df = pd.DataFrame(
        {
            "id": [1, 2],
            "name": ["a", "b"],
            "n_running": [3, 0],
            "n_succeeded": [1, 5],
            "n_jobs": [4, 5],
        }
    )
    fig = figures.campaign_states(df)
    running = next(t for t in fig.data if t.name == "running")
    assert list(running.y) == ["1 · a", "2 · b"] and list(running.x) == [
        3,
        0,
    ]  # newest (2) drawn last = top
    assert fig.layout.barmode == "stack"


@pytest.mark.parametrize(
    "name,val",
    [
        ("val_loss", True),
        ("best_val_loss", True),
        ("validation_loss", True),
        ("train_loss", False),
        ("interval", False),
        ("loss", False),
    ],
)
def test_validation_series_are_recognised(name, val):
    assert figures._is_validation(name) is val
