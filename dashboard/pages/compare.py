"""Compare: ensembles, grid points or campaigns side by side.

Overlaid loss and validation curves (mean over members, smoothing, log scale), the
diagnostics and fit results of each, and a table of their settings with the differences
highlighted. One colour per compared run on every chart and table.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import cache, figures, queries, widgets

DEFAULT_ITEMS = 20  # what the page opens on: a campaign's first ensembles
RAW_UP_TO = 8  # runs up to which the unsmoothed curves are drawn behind the smoothed ones


def compare_page() -> None:
    st.title("Compare")
    db = cache.database_key()
    try:
        catalog = cache.ensembles(db)
    except Exception as exc:
        widgets.report_error("Could not load the ensembles", exc)
        return
    if not catalog:
        widgets.nothing_yet("Nothing to compare yet: no campaign has training jobs.")
        return
    mode = (
        st.segmented_control(
            "Compare", queries.COMPARE_MODES, default=queries.COMPARE_MODES[0], key="compare-mode"
        )
        or queries.COMPARE_MODES[0]
    )
    items = _choose(db, catalog, mode)
    if not items:
        widgets.nothing_yet("Choose what to compare above.")
        return
    colours = figures.compare_colours(list(items))
    _curves(db, items, colours)
    _diagnostics(db, items, colours)
    _fits(db, items, colours)
    _settings(items, colours)


def _current_campaign(db: str, catalog: list[dict]) -> int:
    have = {int(e["campaign_id"]) for e in catalog}
    current = st.session_state.get("campaign_id")
    if current in have:
        return int(current)
    default = cache.default_campaign(db)
    return default if default in have else int(catalog[-1]["campaign_id"])


def _choose(db: str, catalog: list[dict], mode: str) -> dict[str, dict]:
    if mode == "Ensembles":
        keys = [str(e["key"]) for e in catalog]
        cid = _current_campaign(db, catalog)
        default = [str(e["key"]) for e in catalog if e["campaign_id"] == cid][:DEFAULT_ITEMS]
        picks = st.multiselect(
            "Ensembles (campaign · task grid point)",
            keys,
            default=default,
            max_selections=queries.MAX_COMPARED,
            key="compare-ensembles",
            help="any ensembles of any campaigns; the page opens on the current campaign's",
        )
        return queries.compare_items(catalog, mode, picks)
    if mode == "Grid points":
        campaigns = {
            int(e["campaign_id"]): f"{e['campaign_id']} · {e['campaign']}" for e in catalog
        }
        ids = sorted(campaigns, reverse=True)
        cid = _current_campaign(db, catalog)
        c1, c2 = st.columns(2)
        chosen = c1.selectbox(
            "Campaign",
            ids,
            index=ids.index(cid),
            format_func=campaigns.__getitem__,
            key="compare-grid-campaign",
        )
        tasks = list(dict.fromkeys(str(e["task"]) for e in catalog if e["campaign_id"] == chosen))
        task = c2.selectbox("Task", tasks, key="compare-grid-task")
        keys = [str(e["key"]) for e in catalog if e["campaign_id"] == chosen and e["task"] == task][
            : queries.MAX_COMPARED
        ]
        return queries.compare_items(catalog, mode, keys)
    labels = list(dict.fromkeys(f"{e['campaign_id']} · {e['campaign']}" for e in catalog))[::-1]
    c1, c2 = st.columns([3, 1])
    picks = c1.multiselect(
        "Campaigns",
        labels,
        default=labels[: min(3, len(labels))],
        max_selections=queries.MAX_COMPARED,
        key="compare-campaigns",
    )
    tasks = list(
        dict.fromkeys(
            str(e["task"]) for e in catalog if f"{e['campaign_id']} · {e['campaign']}" in picks
        )
    )
    chosen_task = c2.selectbox("Task", tasks, key="compare-campaign-task") if tasks else None
    return queries.compare_items(catalog, mode, picks, chosen_task)


def _curves(db: str, items: dict[str, dict], colours: dict[str, str]) -> None:
    c1, c2, c3, c4 = st.columns([3, 1, 1, 1])
    weight = c1.slider(
        "Smoothing",
        min_value=0.0,
        max_value=0.99,
        value=0.6,
        step=0.01,
        key="compare-smoothing",
        help="exponential moving average with the start-up bias removed (as in TensorBoard)",
    )
    log_y = c2.toggle("Log scale", value=False, key="compare-log")
    show_train = c3.checkbox("Training", value=True, key="compare-train")
    show_val = c4.checkbox("Validation", value=True, key="compare-val")
    # a budget of points per chart, shared by the runs (two curves each)
    per_curve = max(100, queries.MAX_CHART_POINTS * 2 // max(1, 2 * len(items)))
    runs = tuple((label, tuple(it["job_ids"])) for label, it in items.items())
    everything = cache.ensemble_curves(db, runs, per_curve)
    keep = [n for n, on in (("train_loss", show_train), ("val_loss", show_val)) if on]
    curves = (
        {label: g[g["name"].isin(keep)] for label, g in everything.groupby("item", sort=False)}
        if len(everything)
        else {}
    )
    frame = queries.compare_curves_frame(curves, weight)
    # the unsmoothed curves faintly behind, while there are few enough runs to read them
    raw = weight > 0 and len(items) <= RAW_UP_TO
    widgets.chart(
        figures.compare_curves(frame, colours, log_y=log_y, show_raw=raw),
        "compare-curves",
    )


def _swatch(df: pd.DataFrame, colours: dict[str, str], column: str):
    """The table with its first column painted in each run's colour."""
    styler = df.style.apply(
        lambda col: [f"background-color: {colours.get(str(v), '')}" for v in df[column]],
        subset=["colour"],
    )
    return styler


def _diagnostics(db: str, items: dict[str, dict], colours: dict[str, str]) -> None:
    st.subheader("Diagnostics")
    rows = []
    for label, it in items.items():
        try:
            diag = cache.ensemble_diagnostics(db, tuple(it["job_ids"]))
        except Exception as exc:
            widgets.report_error("Could not load diagnostics", exc)
            return
        rows.append({"colour": "", "run": label, **queries.diagnostics_summary(it["task"], diag)})
    df = pd.DataFrame(rows).fillna("")
    st.dataframe(_swatch(df, colours, "run"), hide_index=True, key="compare-diagnostics")
    st.caption(
        "Each check as value (light); thresholds and plots on the Diagnostics page. For a "
        "campaign, the first ensemble of the task that recorded diagnostics."
    )


def _fits(db: str, items: dict[str, dict], colours: dict[str, str]) -> None:
    from backend import result_status

    st.subheader("Fit results")
    rows = []
    by_campaign: dict[int, tuple[dict, str]] = {}  # one fit and one status per campaign
    for label, it in items.items():
        cid = int(it["campaign_id"])
        if cid not in by_campaign:
            try:
                views, _ = cache.fit(db, cid)
                status = result_status.ResultStatus.from_dict(_result_status(db, cid))
            except Exception as exc:
                widgets.report_error("Could not load fit results", exc)
                return
            by_campaign[cid] = (
                queries.fit_summary(views),
                result_status.badge(status) or "checks pending",
            )
        summary, badge = by_campaign[cid]
        rows.append({"colour": "", "run": label, "campaign": cid, "result": badge, **summary})
    df = pd.DataFrame(rows)
    c1, c2 = st.columns([3, 2])
    first = [c for c in ("colour", "run", "value", "converged", "result") if c in df]
    shown = df[first + [c for c in df if c not in first and c not in ("mu_hat", "sigma")]]
    shown = shown.fillna("")
    c1.dataframe(_swatch(shown, colours, "run"), hide_index=True, key="compare-fits")
    c1.caption("A fit uses every ensemble of its campaign: runs of one campaign share its fit.")
    if "mu_hat" in df:
        with c2:
            widgets.chart(
                figures.compare_fit(
                    df.rename(columns={"run": "item"}).assign(poi=df.get("poi", "mu").fillna("mu")),
                    colours,
                ),
                "compare-fit",
                exportable=False,
            )


@st.cache_data(ttl=cache.SLOW_TTL_S / 3, show_spinner=False)
def _result_status(db: str, campaign_id: int) -> dict | None:
    from backend import result_status

    s = result_status.campaign_result_status(campaign_id)
    return s.to_dict() if s is not None else None


def _settings(items: dict[str, dict], colours: dict[str, str]) -> None:
    st.subheader("Settings")
    table, differs = queries.settings_table(items)
    only = st.toggle("Only differences", value=False, key="compare-only-diff")
    n_diff = sum(differs)
    st.caption(
        f"{n_diff} of {len(table)} settings differ between the runs (highlighted)."
        if len(items) > 1
        else "One run: nothing to compare against."
    )
    shown = table[differs] if only else table
    mask = pd.Series(differs, index=table.index).loc[shown.index]
    styler = shown.style.apply(
        lambda row: (
            [
                "background-color: rgba(255, 193, 7, 0.35); font-weight: 600"
                if mask.loc[row.name]
                else ""
            ]
            * len(row)
        ),
        axis=1,
    )
    st.dataframe(styler, key="compare-settings", height=min(600, 38 + 35 * len(shown)))
    st.download_button(
        "Settings (CSV)",
        table.assign(differs=differs).to_csv().encode(),
        file_name="compare-settings.csv",
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
        key="compare-settings-csv",
    )


compare_page()
