"""Usage and cost: GPU-hours and cost by campaign, day, machine, GPU type and spot; burn-down; CSV."""

from __future__ import annotations

import streamlit as st

from dashboard import cache, figures, queries, widgets

# cost_summary group keys, and the column each one gives in the frame (with its label)
SERVICE_GROUPS = ("campaign", "day", "machine", "gpu", "spot")
GROUPS = {
    "campaign_name": "campaign",
    "day": "day",
    "machine": "machine type",
    "gpu": "GPU type",
    "spot": "spot / on-demand",
}
VIEWS = ("By group", "Over time", "Budget burn-down", "Table")


def costs_page() -> None:
    st.title("Usage and cost")
    db = cache.database_key()
    try:
        usage = cache.costs(db, SERVICE_GROUPS)
    except Exception as exc:
        widgets.report_error("Could not load the cost summary", exc)
        return
    if usage.empty:
        widgets.nothing_yet("No usage yet: costs accrue once jobs are launched.")
        return
    total_cost = float(usage["cost"].sum()) if "cost" in usage else 0.0
    total_gpu = float(usage["gpu_hours"].sum()) if "gpu_hours" in usage else 0.0
    c1, c2, c3 = st.columns(3)
    c1.metric("Total cost (USD)", f"{total_cost:,.2f}")
    c2.metric("GPU-hours", f"{total_gpu:,.1f}")
    c3.download_button(
        "CSV",
        usage.to_csv(index=False).encode(),
        file_name="nsbi-usage.csv",
        mime="text/csv",
        icon=":material/download:",
        key="cost-csv",
        on_click="ignore",
    )

    shown = st.segmented_control("Show", VIEWS, default=VIEWS[0], key="cost-view") or VIEWS[0]
    value = st.radio(
        "Quantity",
        ("cost", "gpu_hours"),
        horizontal=True,
        key="cost-value",
        format_func={"cost": "cost (USD)", "gpu_hours": "GPU-hours"}.get,
    )
    if shown == "By group":
        available = [g for g in GROUPS if g in usage]
        c1, c2 = st.columns(2)
        by = c1.selectbox(
            "Group by", available, format_func=lambda g: GROUPS.get(g, g), key="cost-by"
        )
        stack_options = ["none", *[g for g in available if g != by]]
        stack = c2.selectbox(
            "Stack by", stack_options, format_func=lambda g: GROUPS.get(g, g), key="cost-stack"
        )
        widgets.chart(
            figures.cost_bars(
                usage, by=by, value=value, colour_by=None if stack == "none" else stack
            ),
            "cost-bars",
        )
    elif shown == "Over time":
        if "day" in usage:
            widgets.chart(
                figures.usage_over_time(
                    usage.rename(columns={"day": "time"}),
                    value=value,
                    by="campaign_name" if "campaign_name" in usage else None,
                ),
                "usage-time",
            )
    elif shown == "Budget burn-down":
        _burn_down(db, usage)
    else:
        st.dataframe(usage, hide_index=True)


def _burn_down(db: str, usage) -> None:
    campaigns = cache.campaigns(db)
    if campaigns.empty or "campaign" not in usage:
        return
    budgeted = (
        campaigns[campaigns["budget"].notna()] if "budget" in campaigns else campaigns.iloc[0:0]
    )
    if budgeted.empty:
        widgets.nothing_yet("No campaign has a budget.")
        return
    choices = {int(r.id): f"{int(r.id)} · {r.name}" for r in budgeted.itertuples()}
    cid = st.selectbox(
        "Campaign",
        list(choices),
        format_func=lambda c: choices.get(c, str(c)),
        key="cost-burn-campaign",
    )
    row = budgeted[budgeted["id"] == cid].iloc[0]
    mine = usage[usage["campaign"] == cid]
    widgets.chart(
        figures.burn_down(
            queries.spend_over_time(mine),
            float(row["budget"]),
            title=f"Budget burn-down: {row['name']}",
        ),
        "burn-down",
    )


costs_page()
