"""Plotly figure builders for the dashboard.

Every builder takes plain pandas DataFrames or dicts (the shapes `dashboard.queries` returns)
and returns a `go.Figure`. Nothing here calls Streamlit, so plain pytest covers it, and the
same figures can be exported to PNG/PDF by `dashboard.export`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from backend.analysis.fit_figures import LIMIT_BAND_KEYS
from dashboard.formatting import finite_or_none

# Colours: train/validation and pre/post-fit pairs that stay readable in print.
TRAIN_COLOUR = "#1f77b4"
VAL_COLOUR = "#d62728"
PREFIT_COLOUR = "#7fb3e6"
POSTFIT_COLOUR = "#1f4e9c"
# The colours of traces that name none (resource panels, compared runs), in order. Pinned in
# every figure's layout: otherwise the screen takes Streamlit's theme colours and an exported
# PNG/PDF the export template's, and the same line would change colour between the two.
COLORWAY = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)

# Quantiles of the chi2 distribution with one degree of freedom: the thresholds for 68 % and
# 95 % intervals of a one-parameter profile-likelihood scan of q = -2 Delta ln L.
Q_68 = 1.0
Q_95 = 3.841458820694124


def _layout(
    fig: go.Figure,
    title: str,
    *,
    height: int = 420,
    shapes: Sequence[dict] = (),
    annotations: Sequence[dict] = (),
) -> go.Figure:
    # No template here: Streamlit applies its theme in the app, and `export` sets plotly_white
    # for static files. Assigning a template costs ~40 ms per figure (it is deep-copied and
    # validated), which adds up on pages with several charts.
    fig.update_layout(
        title={"text": title, "x": 0.01},
        colorway=list(COLORWAY),
        height=height,
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 1.0, "xanchor": "right"},
        shapes=[*fig.layout.shapes, *shapes],
        annotations=[*fig.layout.annotations, *annotations],
    )
    return fig


# Reference lines and bands as plain shape dicts: fig.add_hline/add_vrect re-validate the whole
# layout on every call (~12 ms each), these cost nothing until the one update_layout above.
def _hline(
    y: float,
    colour: str,
    dash: str = "dash",
    *,
    xref: str = "x domain",
    yref: str = "y",
    width: float = 1.5,
) -> dict:
    return {
        "type": "line",
        "xref": xref,
        "x0": 0,
        "x1": 1,
        "yref": yref,
        "y0": y,
        "y1": y,
        "line": {"color": colour, "dash": dash, "width": width},
    }


def _vline(x: float, colour: str, dash: str = "solid", *, width: float = 1.0) -> dict:
    return {
        "type": "line",
        "yref": "y domain",
        "y0": 0,
        "y1": 1,
        "xref": "x",
        "x0": x,
        "x1": x,
        "line": {"color": colour, "dash": dash, "width": width},
    }


def _vrect(x0: float, x1: float, colour: str, opacity: float) -> dict:
    return {
        "type": "rect",
        "yref": "y domain",
        "y0": 0,
        "y1": 1,
        "xref": "x",
        "x0": x0,
        "x1": x1,
        "fillcolor": colour,
        "opacity": opacity,
        "line": {"width": 0},
        "layer": "below",
    }


def _label(
    text: str, *, x: float, y: float, xref: str = "x domain", yref: str = "y", xanchor: str = "left"
) -> dict:
    return {
        "text": text,
        "x": x,
        "y": y,
        "xref": xref,
        "yref": yref,
        "showarrow": False,
        "xanchor": xanchor,
        "yanchor": "bottom",
        "font": {"size": 11},
    }


def empty_figure(message: str, *, title: str = "") -> go.Figure:
    """A blank figure carrying a message, so a page never shows a broken chart."""
    fig = go.Figure()
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    note = {
        "text": message,
        "x": 0.5,
        "y": 0.5,
        "xref": "paper",
        "yref": "paper",
        "showarrow": False,
        "font": {"size": 15, "color": "#666"},
    }
    return _layout(fig, title, height=300, annotations=[note])


def _is_validation(name: str) -> bool:
    """val_loss, validation_loss, loss_val, best_val_loss: any 'val'/'valid(ation)' token."""
    tokens = set(re.split(r"[^a-z]+", name.lower()))
    return bool(tokens & {"val", "valid", "validation", "holdout"})


def _stacked_axes(
    titles: Sequence[str], heights: Sequence[float] | None = None, gap: float = 0.06
) -> tuple[dict, list[dict]]:
    """Layout axes for panels stacked vertically over one shared x axis (top panel first).

    A hand-made replacement for make_subplots(rows=n, shared_xaxes=True), which spends
    ~200 ms building and validating its grid; here panel i uses yaxis 'y<i+1>'.
    """
    n = len(titles)
    heights = list(heights or [1.0] * n)
    usable = 1.0 - gap * (n - 1)
    total = sum(heights)
    layout: dict = {}
    notes: list[dict] = []
    top = 1.0
    for i, (title, h) in enumerate(zip(titles, heights)):
        span = usable * h / total
        lo = max(0.0, top - span)
        key = "yaxis" if i == 0 else f"yaxis{i + 1}"
        layout[key] = {"domain": [lo, top], "anchor": "x"}
        if title:
            notes.append(
                {
                    "text": f"<b>{title}</b>",
                    "x": 0.0,
                    "y": top,
                    "xref": "paper",
                    "yref": "paper",
                    "showarrow": False,
                    "xanchor": "left",
                    "yanchor": "bottom",
                    "font": {"size": 12},
                }
            )
        top = lo - gap
    layout["xaxis"] = {"anchor": "y" if n == 1 else f"y{n}"}
    return layout, notes


# --------------------------------------------------------------------------- training


def loss_curves(
    metrics: pd.DataFrame,
    band: pd.DataFrame,
    *,
    title: str = "Loss per member",
    show_members: bool = True,
    log_y: bool = False,
) -> go.Figure:
    """Per-member loss curves plus the ensemble band (mean +- std and min/max).

    `metrics` has columns member, step, name, value; `band` is `queries.ensemble_band(metrics)`
    (columns name, step, mean, std, min, max, n). Validation series (names starting with
    "val") are drawn dashed in red, training series solid in blue.
    """
    if metrics.empty and band.empty:
        return empty_figure("No metrics recorded yet.", title=title)
    traces: list[dict] = []  # plain dicts: ~3x cheaper than go.Scatter + add_trace per line
    for name in sorted(band["name"].unique()) if not band.empty else []:
        val = _is_validation(name)
        colour = VAL_COLOUR if val else TRAIN_COLOUR
        fill = "rgba(214,39,40,{a})" if val else "rgba(31,119,180,{a})"
        b = band[band["name"] == name].sort_values("step")
        x = b["step"].to_numpy()
        # min/max envelope (light) then mean +- std (darker), drawn as closed polygons.
        for lo, hi, alpha, label in (
            (b["min"], b["max"], 0.12, "min/max"),
            (b["mean"] - b["std"], b["mean"] + b["std"], 0.28, "mean ± std"),
        ):
            traces.append(
                {
                    "type": "scatter",
                    "x": np.concatenate([x, x[::-1]]),
                    "y": np.concatenate([hi.to_numpy(), lo.to_numpy()[::-1]]),
                    "fill": "toself",
                    "fillcolor": fill.format(a=alpha),
                    "line": {"width": 0},
                    "hoverinfo": "skip",
                    "name": f"{name} {label}",
                    "legendgroup": name,
                }
            )
        traces.append(
            {
                "type": "scatter",
                "x": x,
                "y": b["mean"].to_numpy(),
                "mode": "lines",
                "name": f"{name} mean",
                "legendgroup": name,
                "line": {"color": colour, "width": 2.5, "dash": "dash" if val else "solid"},
            }
        )
    if show_members and not metrics.empty:
        for (name, member), g in metrics.groupby(["name", "member"], sort=True):
            val = _is_validation(str(name))
            g = g.sort_values("step")
            traces.append(
                {
                    "type": "scatter",
                    "x": g["step"].to_numpy(),
                    "y": g["value"].to_numpy(),
                    "mode": "lines",
                    "opacity": 0.35,
                    "showlegend": False,
                    "line": {
                        "color": VAL_COLOUR if val else TRAIN_COLOUR,
                        "width": 1,
                        "dash": "dash" if val else "solid",
                    },
                    "name": f"{name} member {member}",
                    "legendgroup": f"{name}-members",
                }
            )
    fig = go.Figure(
        data=traces,
        layout={
            "xaxis": {"title": "step"},
            "yaxis": {"title": "loss", "type": "log" if log_y else "linear"},
        },
    )
    return _layout(fig, title)


def resource_usage(
    resources: pd.DataFrame, *, title: str = "Resource usage", summed: bool = False
) -> go.Figure:
    """Resource samples over time, one subplot per metric (GPU util, memory, power, CPU, RSS).

    `resources` is long: columns time, job_id, name, value. With `summed`, values of all jobs
    are added per (time bucket, name) to show the campaign's total footprint.
    """
    if resources.empty:
        return empty_figure("No resource samples yet.", title=title)
    names = sorted(resources["name"].unique())
    axes, notes = _stacked_axes(names)
    traces = []
    for row, name in enumerate(names, start=1):
        yaxis = "y" if row == 1 else f"y{row}"
        r = resources[resources["name"] == name]
        if summed:
            total = r.groupby("time", as_index=False)["value"].sum().sort_values("time")
            traces.append(
                {
                    "type": "scatter",
                    "x": total["time"],
                    "y": total["value"],
                    "mode": "lines",
                    "name": f"{name} (sum)",
                    "showlegend": False,
                    "yaxis": yaxis,
                }
            )
        else:
            for job_id, g in r.groupby("job_id", sort=True):
                g = g.sort_values("time")
                traces.append(
                    {
                        "type": "scatter",
                        "x": g["time"],
                        "y": g["value"],
                        "mode": "lines",
                        "name": f"job {job_id}",
                        "legendgroup": str(job_id),
                        "showlegend": row == 1,
                        "yaxis": yaxis,
                    }
                )
    fig = go.Figure(data=traces, layout=axes)
    return _layout(fig, title, height=max(300, 170 * len(names)), annotations=notes)


STATE_COLOURS = {
    "pending": "#bdbdbd",
    "launching": "#9ecae1",
    "running": "#3182bd",
    "succeeded": "#31a354",
    "failed": "#de2d26",
    "preempted": "#fd8d3c",
    "cancelled": "#636363",
}


def campaign_states(
    campaigns: pd.DataFrame, *, title: str = "Jobs by state", top: int = 10
) -> go.Figure:
    """Stacked horizontal bars: each campaign's jobs by state (columns id, name, n_<state>).

    Shows the `top` newest campaigns, newest on top.
    """
    cols = [f"n_{s}" for s in STATE_COLOURS if f"n_{s}" in campaigns]
    if campaigns.empty or not cols:
        return empty_figure("No campaigns.", title=title)
    df = campaigns.sort_values("id", ascending=False).head(top).iloc[::-1]
    labels = [f"{int(i)} · {n}" for i, n in zip(df["id"], df["name"])]
    traces = [
        {
            "type": "bar",
            "orientation": "h",
            "x": df[c].fillna(0).to_numpy(),
            "y": labels,
            "name": c[2:],
            "marker": {"color": STATE_COLOURS[c[2:]]},
        }
        for c in cols
    ]
    fig = go.Figure(
        data=traces,
        layout={"barmode": "stack", "xaxis": {"title": "jobs"}, "yaxis": {"type": "category"}},
    )
    return _layout(fig, title, height=140 + 30 * len(df))


# --------------------------------------------------------------------------- diagnostics


def calibration(curves: pd.DataFrame, *, title: str = "Calibration") -> go.Figure:
    """Reliability curves: observed vs predicted classifier output, with the diagonal.

    `curves` has columns label (e.g. ensemble member or "ensemble"), predicted, observed and
    optionally error.
    """
    if curves.empty:
        return empty_figure("No calibration data.", title=title)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="perfect", line={"color": "#888", "dash": "dot"}
        )
    )
    for label, g in curves.groupby("label", sort=True):
        err = g["error"] if "error" in g and g["error"].notna().any() else None
        fig.add_trace(
            go.Scatter(
                x=g["predicted"],
                y=g["observed"],
                mode="lines+markers",
                name=str(label),
                error_y={"type": "data", "array": err, "visible": True}
                if err is not None
                else None,
            )
        )
    fig.update_xaxes(title="predicted s(x)", range=[0, 1])
    fig.update_yaxes(title="observed fraction", range=[0, 1])
    return _layout(fig, title)


def closure(hist: Mapping, *, title: str | None = None) -> go.Figure:
    """Closure of one observable: numerator vs ratio-reweighted denominator, with the ratio.

    `hist` has edges, numerator, reweighted, optionally denominator, numerator_err,
    reweighted_err, chi2, ndf, observable.
    """
    edges = np.asarray(hist.get("edges", []), dtype=float)
    if edges.size < 2:
        return empty_figure("No closure histogram.", title=title or "Closure")
    centres = 0.5 * (edges[1:] + edges[:-1])
    num = np.asarray(hist["numerator"], dtype=float)
    rew = np.asarray(hist["reweighted"], dtype=float)
    obs = hist.get("observable", "x")
    chi2, ndf = hist.get("chi2"), hist.get("ndf")
    label = f"{obs}" + (f": χ²/ndf = {chi2:.1f}/{ndf}" if chi2 is not None and ndf else "")
    axes, _ = _stacked_axes(["", ""], heights=[0.7, 0.3], gap=0.04)
    axes["yaxis"]["title"] = "weighted events"
    axes["yaxis2"]["title"] = "reweighted / num"
    axes["xaxis"]["title"] = obs
    traces = []
    if hist.get("denominator") is not None:
        traces.append(
            {
                "type": "scatter",
                "x": centres,
                "y": np.asarray(hist["denominator"], dtype=float),
                "mode": "lines",
                "line": {"shape": "hvh", "color": "#999"},
                "name": "denominator",
            }
        )
    traces.append(
        {
            "type": "scatter",
            "x": centres,
            "y": num,
            "mode": "lines",
            "name": "numerator",
            "line": {"shape": "hvh", "color": "black"},
            "error_y": _err(hist.get("numerator_err")),
        }
    )
    traces.append(
        {
            "type": "scatter",
            "x": centres,
            "y": rew,
            "mode": "lines",
            "name": "denominator × r(x)",
            "line": {"shape": "hvh", "color": VAL_COLOUR, "dash": "dash"},
            "error_y": _err(hist.get("reweighted_err")),
        }
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(num > 0, rew / num, np.nan)
    traces.append(
        {
            "type": "scatter",
            "x": centres,
            "y": ratio,
            "mode": "markers",
            "yaxis": "y2",
            "marker": {"color": VAL_COLOUR},
            "name": "ratio",
            "showlegend": False,
        }
    )
    fig = go.Figure(
        data=[{k: v for k, v in t.items() if v is not None} for t in traces], layout=axes
    )
    return _layout(fig, title or label, shapes=[_hline(1.0, "#888", "dot", yref="y2")])


def _err(values) -> dict | None:
    if values is None:
        return None
    return {
        "type": "data",
        "array": np.asarray(values, dtype=float),
        "visible": True,
        "thickness": 1,
    }


def histogram(
    values: Sequence[float] | np.ndarray,
    *,
    title: str,
    x_title: str,
    threshold: float | None = None,
    bins: int = 40,
) -> go.Figure:
    """A histogram with an optional vertical threshold line (ensemble spread, normalisation)."""
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return empty_figure("No values.", title=title)
    fig = go.Figure(go.Histogram(x=arr, nbinsx=bins, marker={"color": TRAIN_COLOUR}, name=x_title))
    shapes, notes = [], []
    if threshold is not None:
        shapes.append(_vline(threshold, VAL_COLOUR, "dash", width=1.5))
        notes.append(
            _label(f"threshold {threshold:g}", x=threshold, y=1.0, xref="x", yref="y domain")
        )
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title="entries")
    return _layout(fig, title, shapes=shapes, annotations=notes)


def roc(curve: pd.DataFrame, *, title: str = "ROC") -> go.Figure:
    """ROC curves (columns label, fpr, tpr, optional auc) for train and validation sets."""
    if curve.empty:
        return empty_figure("No ROC data.", title=title)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", line={"color": "#888", "dash": "dot"}, name="random"
        )
    )
    for label, g in curve.groupby("label", sort=True):
        auc = g["auc"].iloc[0] if "auc" in g else None
        name = f"{label} (AUC {auc:.3f})" if auc is not None and np.isfinite(auc) else str(label)
        fig.add_trace(go.Scatter(x=g["fpr"], y=g["tpr"], mode="lines", name=name))
    fig.update_xaxes(title="false positive rate", range=[0, 1])
    fig.update_yaxes(title="true positive rate", range=[0, 1])
    return _layout(fig, title)


# --------------------------------------------------------------------------- fit


def pulls(pulls_df: pd.DataFrame, *, title: str = "Nuisance-parameter pulls") -> go.Figure:
    """Pulls (theta_hat - theta_0)/sigma_0 with post-fit constraints as error bars.

    Columns: name, pull, constraint. The green/yellow bands mark +-1 and +-2 sigma.
    """
    if pulls_df.empty:
        return empty_figure("No nuisance parameters.", title=title)
    df = pulls_df.iloc[::-1]  # first parameter on top
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=df["pull"],
            y=df["name"],
            mode="markers",
            marker={"color": "black", "size": 8},
            error_x={
                "type": "data",
                "array": df["constraint"],
                "visible": True,
                "color": "black",
                "thickness": 1.5,
            },
            name="pull ± post-fit constraint",
        )
    )
    span = max(2.5, float(np.nanmax(np.abs(df["pull"]) + df["constraint"])) + 0.3)
    fig.update_xaxes(title="(θ̂ − θ₀) / Δθ", range=[-span, span], zeroline=False)
    fig.update_yaxes(type="category")
    bands = [
        _vrect(-2, 2, "#ffd92f", 0.45),
        _vrect(-1, 1, "#66c2a5", 0.55),
        _vline(0, "#333", "dot"),
    ]
    return _layout(fig, title, height=max(300, 120 + 24 * len(df)), shapes=bands)


def impacts_ranking(
    impacts_df: pd.DataFrame, *, poi: str = "mu", top: int = 20, title: str | None = None
) -> go.Figure:
    """The ranking plot of the largest impacts, in the ATLAS/cabinetry style.

    Bars on the top axis: pre-fit (open) and post-fit (filled) +-1 sigma impacts on the POI,
    up-variations in one colour and down in another; black points with error bars on the
    bottom axis: the pull and post-fit constraint of each nuisance parameter. Columns: name,
    prefit_up, prefit_down, postfit_up, postfit_down, and optionally pull, constraint.
    Rows are ordered by the larger absolute post-fit impact, biggest on top.
    """
    title = title or f"Impact on {poi}: top {top}"
    if impacts_df.empty:
        return empty_figure("No impacts.", title=title)
    df = impacts_df.copy()
    df["_rank"] = np.maximum(np.abs(df["postfit_up"]), np.abs(df["postfit_down"]))
    df = df.sort_values("_rank", ascending=False).head(top).iloc[::-1]
    names = df["name"].tolist()
    fig = go.Figure()
    bar = {"orientation": "h", "xaxis": "x2", "y": names}
    fig.add_trace(
        go.Bar(
            x=df["prefit_up"],
            name="pre-fit +1σ",
            marker={"color": "rgba(0,0,0,0)", "line": {"color": PREFIT_COLOUR, "width": 2}},
            **bar,
        )
    )
    fig.add_trace(
        go.Bar(
            x=df["prefit_down"],
            name="pre-fit −1σ",
            marker={"color": "rgba(0,0,0,0)", "line": {"color": "#7fc97f", "width": 2}},
            **bar,
        )
    )
    fig.add_trace(
        go.Bar(x=df["postfit_up"], name="post-fit +1σ", marker={"color": POSTFIT_COLOUR}, **bar)
    )
    fig.add_trace(
        go.Bar(x=df["postfit_down"], name="post-fit −1σ", marker={"color": "#2ca25f"}, **bar)
    )
    if "pull" in df:
        fig.add_trace(
            go.Scatter(
                x=df["pull"],
                y=names,
                mode="markers",
                marker={"color": "black", "size": 8},
                xaxis="x",
                error_x={
                    "type": "data",
                    "array": df.get("constraint", pd.Series(np.ones(len(df)))),
                    "visible": True,
                    "color": "black",
                },
                name="pull",
            )
        )
    reach = float(
        np.nanmax(np.abs(df[["prefit_up", "prefit_down", "postfit_up", "postfit_down"]].to_numpy()))
    )
    reach = reach * 1.15 if reach > 0 else 1.0
    fig.update_layout(
        barmode="overlay",
        bargap=0.35,
        xaxis={"title": "(θ̂ − θ₀) / Δθ", "range": [-2.2, 2.2], "side": "bottom", "zeroline": False},
        xaxis2={
            "title": f"Δ{poi}",
            "overlaying": "x",
            "side": "top",
            "range": [-reach, reach],
            "showgrid": False,
        },
        yaxis={"type": "category"},
    )
    height = max(380, 190 + 28 * len(df))
    fig = _layout(fig, title, height=height, shapes=[_vline(0, "#333")])
    fig.update_layout(
        margin={"t": 110, "b": 110},
        legend={"y": -70 / (height - 220), "yanchor": "top", "x": 0, "xanchor": "left"},
    )
    return fig


def correlation(
    names: Sequence[str],
    matrix: Sequence[Sequence[float]] | np.ndarray,
    *,
    title: str = "Correlation matrix",
    max_params: int = 60,
) -> go.Figure:
    """Heat map of the post-fit correlation matrix, diverging colour scale fixed to [-1, 1].

    Above `max_params`, keep the parameters with the largest off-diagonal correlation so
    the map stays legible.
    """
    m = np.asarray(matrix, dtype=float)
    if m.size == 0:
        return empty_figure("No correlation matrix.", title=title)
    labels = list(names)
    if len(labels) > max_params:
        off = np.abs(m - np.diag(np.diag(m))).max(axis=1)
        keep = np.sort(np.argsort(-off)[:max_params])
        m = m[np.ix_(keep, keep)]
        labels = [labels[i] for i in keep]
        title = f"{title} (top {max_params} by |ρ|)"
    text = [[f"{v:.2f}" for v in row] for row in m] if len(labels) <= 25 else None
    fig = go.Figure(
        go.Heatmap(
            z=m,
            x=labels,
            y=labels,
            zmin=-1,
            zmax=1,
            colorscale="RdBu_r",
            text=text,
            texttemplate="%{text}" if text else None,
            colorbar={"title": "ρ"},
        )
    )
    fig.update_yaxes(autorange="reversed")
    side = max(400, 120 + 22 * len(labels))
    return _layout(fig, title, height=side)


def likelihood_scan(scan: pd.DataFrame, *, poi: str = "mu", title: str | None = None) -> go.Figure:
    """Profile-likelihood scan q = -2 Delta ln L with the 68 % and 95 % CL lines.

    `scan` has columns value (the POI) and q; if an `expected` column is present it is drawn
    dashed. The 1D intervals are where q crosses 1.0 and 3.84.
    """
    title = title or f"Profile likelihood scan of {poi}"
    if scan.empty:
        return empty_figure("No scan points.", title=title)
    s = scan.sort_values("value")
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=s["value"], y=s["q"], mode="lines+markers", name="observed", line={"color": "black"}
        )
    )
    if "expected" in s and s["expected"].notna().any():
        fig.add_trace(
            go.Scatter(
                x=s["value"],
                y=s["expected"],
                mode="lines",
                name="expected",
                line={"color": "black", "dash": "dash"},
            )
        )
    levels = ((Q_68, "68 % CL", "#1b9e77"), (Q_95, "95 % CL", "#d95f02"))
    fig.update_xaxes(title=poi)
    fig.update_yaxes(title="−2 Δ ln L", rangemode="tozero")
    return _layout(
        fig,
        title,
        shapes=[_hline(q, c) for q, _, c in levels],
        annotations=[_label(t, x=0.0, y=q) for q, t, _ in levels],
    )


def limit_band(
    observed: float | None,
    expected: Mapping[str, float | None],
    *,
    poi: str = "mu",
    cl: float = 0.95,
    title: str | None = None,
) -> go.Figure:
    """The CLs upper limit as one row of the usual 'Brazil' plot: the expected limit (dashed)
    with its +-1 sigma (green) and +-2 sigma (yellow) bands, the observed limit as a marker.

    `expected` maps "-2" .. "2" to the expected limits (as in the fit job's result JSON);
    missing or non-finite ones are left out of the bands."""
    title = title or f"{100 * cl:g} % CL upper limit on {poi} (CLs)"
    e = {k: finite_or_none(expected.get(k)) for k in LIMIT_BAND_KEYS}
    obs = finite_or_none(observed)
    known = [v for v in (*e.values(), obs) if v is not None]
    if not known:
        return empty_figure("No limit.", title=title)
    shapes: list[dict] = []
    for lo, hi, colour, opacity in (("-2", "2", "#ffd92f", 0.7), ("-1", "1", "#66c2a5", 0.8)):
        x0, x1 = e[lo], e[hi]
        if x0 is not None and x1 is not None:
            shapes.append(_vrect(x0, x1, colour, opacity))
    median = e["0"]
    if median is not None:
        shapes.append(_vline(median, "black", "dash", width=2.0))
    fig = go.Figure()
    if obs is not None:
        fig.add_trace(
            go.Scatter(
                x=[obs],
                y=[0.5],
                mode="markers",
                marker={"color": "black", "size": 14, "symbol": "diamond"},
                name=f"observed {obs:.3g}",
            )
        )
    if median is not None:  # a legend entry for the dashed median line
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="lines",
                line={"color": "black", "dash": "dash"},
                name=f"expected {median:.3g}",
            )
        )
    span = max(known) - min(0.0, min(known))
    fig.update_xaxes(
        title=f"{poi} upper limit", range=[min(0.0, min(known)), max(known) + 0.15 * span]
    )
    fig.update_yaxes(visible=False, range=[0, 1])
    return _layout(fig, title, height=220, shapes=shapes)


def toy_pulls(
    pulls_values: Sequence[float] | np.ndarray,
    *,
    poi: str = "mu",
    title: str | None = None,
    bins: int = 30,
) -> go.Figure:
    """Distribution of toy pulls (mu_hat - mu_true)/sigma with a fitted Gaussian overlay.

    For a well-behaved fit the pulls follow a unit normal; the legend shows the sample mean
    and standard deviation so a bias or mis-estimated error shows at a glance.
    """
    title = title or f"Toy pulls of {poi}"
    arr = np.asarray(pulls_values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return empty_figure("No toys.", title=title)
    mean, std = float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    lo, hi = min(-4.0, arr.min()), max(4.0, arr.max())
    counts, edges = np.histogram(arr, bins=bins, range=(lo, hi))
    width = edges[1] - edges[0]
    centres = 0.5 * (edges[1:] + edges[:-1])
    fig = go.Figure(
        go.Bar(
            x=centres,
            y=counts,
            width=width,
            name=f"{arr.size} toys",
            marker={"color": PREFIT_COLOUR},
        )
    )
    xs = np.linspace(lo, hi, 200)
    norm = arr.size * width / math.sqrt(2 * math.pi)
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=norm * np.exp(-0.5 * xs**2),
            mode="lines",
            name="N(0, 1)",
            line={"color": "#888", "dash": "dot"},
        )
    )
    if std > 0:
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=norm / std * np.exp(-0.5 * ((xs - mean) / std) ** 2),
                mode="lines",
                name=f"mean {mean:.2f}, std {std:.2f}",
                line={"color": POSTFIT_COLOUR},
            )
        )
    fig.update_xaxes(title=f"({poi}̂ − {poi}_true) / σ")
    fig.update_yaxes(title="toys")
    return _layout(fig, title)


# --------------------------------------------------------------------------- cost


def cost_bars(
    costs: pd.DataFrame,
    *,
    by: str,
    value: str = "cost",
    colour_by: str | None = None,
    title: str | None = None,
) -> go.Figure:
    """Bar chart of cost or GPU-hours grouped by one column, optionally stacked by another."""
    title = title or f"{value.replace('_', ' ')} by {by.replace('_', ' ')}"
    if costs.empty or by not in costs or value not in costs:
        return empty_figure("No usage recorded yet.", title=title)
    fig = go.Figure()
    if colour_by and colour_by in costs:
        for key, g in costs.groupby(colour_by, sort=True):
            agg = g.groupby(by, as_index=False)[value].sum()
            fig.add_trace(go.Bar(x=agg[by].astype(str), y=agg[value], name=str(key)))
        fig.update_layout(barmode="stack")
    else:
        agg = costs.groupby(by, as_index=False)[value].sum()
        fig.add_trace(go.Bar(x=agg[by].astype(str), y=agg[value], name=value))
    fig.update_xaxes(title=by.replace("_", " "), type="category")
    fig.update_yaxes(title=_unit(value))
    return _layout(fig, title)


def _unit(value: str) -> str:
    return {
        "cost": "cost (USD)",
        "gpu_hours": "GPU-hours",
        "cpu_hours": "CPU-hours",
        "wall_hours": "wall time (h)",
    }.get(value, value)


def burn_down(
    spend: pd.DataFrame, budget: float | None, *, title: str = "Budget burn-down"
) -> go.Figure:
    """Remaining budget over time (columns time, cost: incremental spend per time bucket)."""
    if spend.empty:
        return empty_figure("Nothing spent yet.", title=title)
    s = spend.sort_values("time")
    cumulative = s["cost"].cumsum()
    fig = go.Figure()
    if budget is not None and budget > 0:
        fig.add_trace(
            go.Scatter(
                x=s["time"],
                y=budget - cumulative,
                mode="lines",
                fill="tozeroy",
                name="remaining budget",
                line={"color": POSTFIT_COLOUR},
            )
        )
    fig.add_trace(
        go.Scatter(
            x=s["time"],
            y=cumulative,
            mode="lines",
            name="spent",
            line={"color": VAL_COLOUR, "dash": "dash"},
        )
    )
    fig.update_yaxes(title="USD")
    zero = [_hline(0.0, VAL_COLOUR, "solid")] if budget is not None and budget > 0 else []
    return _layout(fig, title, shapes=zero)


def usage_over_time(
    usage: pd.DataFrame,
    *,
    value: str = "gpu_hours",
    by: str | None = None,
    title: str | None = None,
) -> go.Figure:
    """GPU-hours (or cost) per time bucket, stacked by `by` when given (columns time, value, by)."""
    title = title or f"{value.replace('_', ' ')} over time"
    if usage.empty or value not in usage:
        return empty_figure("No usage recorded yet.", title=title)
    fig = go.Figure()
    groups = usage.groupby(by, sort=True) if by and by in usage else [(value, usage)]
    for key, g in groups:
        agg = g.groupby("time", as_index=False)[value].sum().sort_values("time")
        fig.add_trace(go.Bar(x=agg["time"], y=agg[value], name=str(key)))
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title=_unit(value))
    # one bar per UTC day: ticks on whole days (plotly's automatic ticks on a few daily
    # points land on odd instants such as 23:59:59.9996)
    fig.update_xaxes(type="date", tickformat="%Y-%m-%d", dtick=86_400_000, title="day (UTC)")
    return _layout(fig, title)


# --------------------------------------------------------------------------- compare

# One colour per compared run, the same on every chart and table of the Compare page: the
# colorway first, then the distinct darker colours of Plotly's Dark24.
COMPARE_COLOURS = (
    *COLORWAY,
    "#2E91E5",
    "#E15F99",
    "#1CA71C",
    "#FB0D0D",
    "#DA16FF",
    "#222A2A",
    "#B68100",
    "#750D86",
    "#EB663B",
    "#511CFB",
    "#00A08B",
    "#FB00D1",
    "#FC0080",
    "#B2828D",
)


def compare_colours(labels: Sequence[str]) -> dict[str, str]:
    """{label: colour} by position, cycling after len(COMPARE_COLOURS)."""
    return {lab: COMPARE_COLOURS[i % len(COMPARE_COLOURS)] for i, lab in enumerate(labels)}


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def compare_curves(
    curves: pd.DataFrame,
    colours: Mapping[str, str],
    *,
    title: str = "Loss and validation curves",
    log_y: bool = False,
    show_raw: bool = False,
) -> go.Figure:
    """Overlaid mean curves of the compared runs: one colour per run (`colours`), training
    solid, validation dashed. `curves` is `queries.compare_curves_frame` (item, name, step,
    raw, value); with `show_raw`, the unsmoothed curve is drawn faintly behind."""
    if curves.empty:
        return empty_figure("No metrics recorded for these runs yet.", title=title)
    traces: list[dict] = []
    for (item, name), g in curves.groupby(["item", "name"], sort=False):
        colour = colours.get(str(item), COLORWAY[0])
        dash = "dash" if _is_validation(str(name)) else "solid"
        x = g["step"].to_numpy()
        if show_raw:
            traces.append(
                {
                    "type": "scatter",
                    "x": x,
                    "y": g["raw"].to_numpy(),
                    "mode": "lines",
                    "line": {"color": _rgba(colour, 0.25), "width": 1, "dash": dash},
                    "hoverinfo": "skip",
                    "showlegend": False,
                    "legendgroup": str(item),
                }
            )
        traces.append(
            {
                "type": "scatter",
                "x": x,
                "y": g["value"].to_numpy(),
                "mode": "lines",
                "name": f"{item} · {name}",
                "legendgroup": str(item),
                "line": {"color": colour, "width": 2, "dash": dash},
            }
        )
    fig = go.Figure(
        data=traces,
        layout={
            "xaxis": {"title": "step"},
            "yaxis": {"title": "loss (mean over members)", "type": "log" if log_y else "linear"},
        },
    )
    fig = _layout(fig, title, height=480)
    fig.update_layout(
        legend={"orientation": "v", "x": 1.01, "xanchor": "left", "y": 1.0, "yanchor": "top"},
        margin={"r": 260},
    )
    return fig


def compare_fit(
    fits: pd.DataFrame, colours: Mapping[str, str], *, title: str = "Fitted POI"
) -> go.Figure:
    """The fitted POI with its error per run (columns item, mu_hat, sigma), in run colours."""
    fits = fits.dropna(subset=["mu_hat"]) if len(fits) else fits
    if fits.empty:
        return empty_figure("No fit results for these runs.", title=title)
    traces = [
        {
            "type": "scatter",
            "x": [float(r.mu_hat)],
            "y": [str(r.item)],
            "mode": "markers",
            "name": str(r.item),
            "showlegend": False,
            "marker": {"color": colours.get(str(r.item), "black"), "size": 11},
            "error_x": {
                "type": "data",
                "array": [float(r.sigma) if pd.notna(r.sigma) else 0.0],
                "color": colours.get(str(r.item), "black"),
                "thickness": 2,
            },
        }
        for r in fits.itertuples()
    ]
    fig = go.Figure(
        data=traces,
        layout={
            "xaxis": {"title": str(fits["poi"].iloc[0]) if "poi" in fits else "POI"},
            "yaxis": {"type": "category", "autorange": "reversed"},
        },
    )
    return _layout(fig, title, height=120 + 40 * len(fits))
