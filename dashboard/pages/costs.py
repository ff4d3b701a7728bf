"""Usage and cost: GPU-hours and cost by campaign, day, machine, GPU type and spot; burn-down; CSV."""

from __future__ import annotations

import streamlit as st

from dashboard import cache, figures, formatting, queries, widgets

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
QUANTITIES = {
    "cost": "cost (USD)",
    "gpu_hours": "GPU-hours",
    "cpu_hours": "CPU-hours",
    "wall_hours": "wall time (h)",
}
TABLE_COLUMNS = {
    "campaign": "campaign",
    "campaign_name": "name",
    "day": "day",
    "machine": "machine type",
    "gpu": "GPU type",
    "spot": "spot / on-demand",
    "attempts": "attempts",
    "wall_hours": "wall time (h)",
    "cpu_hours": "CPU-hours",
    "gpu_hours": "GPU-hours",
    "cost": "cost (USD)",
}


def _duration(hours: float) -> str:
    """'2 h 05 min' / '4 min 10 s': wall time people read."""
    seconds = int(round(hours * 3600))
    h, rest = divmod(seconds, 3600)
    m, sec = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {sec:02d} s"


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
    totals = {q: float(usage[q].sum()) if q in usage else 0.0 for q in QUANTITIES}
    c1, c2, c3, c4, c5 = st.columns([1.2, 1, 1, 1.3, 0.8])
    c1.metric("Total cost (USD)", f"{totals['cost']:,.2f}")
    c2.metric("GPU-hours", f"{totals['gpu_hours']:,.1f}")
    c3.metric(
        "CPU-hours",
        f"{totals['cpu_hours']:,.2f}",
        help="wall time × mean CPU use (in cores) from the workers' resource samples",
    )
    c4.metric(
        "Wall time",
        _duration(totals["wall_hours"]),
        help="summed over attempts, launch to end (or now)",
    )
    c5.download_button(
        "CSV",
        usage.to_csv(index=False).encode(),
        file_name="nsbi-usage.csv",
        mime="text/csv",
        icon=":material/download:",
        key="cost-csv",
        on_click="ignore",
    )

    shown = st.segmented_control("Show", VIEWS, default=VIEWS[0], key="cost-view") or VIEWS[0]
    available = [q for q in QUANTITIES if q in usage]
    # local runs cost nothing and use no GPU: open on what they did use
    default = next((q for q in available if totals[q] > 0), available[0])
    value = st.radio(
        "Quantity",
        available,
        index=available.index(default),
        horizontal=True,
        key="cost-value",
        format_func=QUANTITIES.get,
    )
    if shown in ("By group", "Over time") and totals.get(value, 0.0) <= 0:
        widgets.nothing_yet(
            f"No {QUANTITIES[value]} recorded: "
            + (
                "these runs used no GPU (local runs use the CPU: see CPU-hours and wall time)."
                if value == "gpu_hours"
                else "local runs are free (cost 0): see CPU-hours and wall time."
                if value == "cost"
                else "no attempt has run long enough yet."
            )
        )
        return
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
        table = usage.copy()
        if "day" in table:
            table["day"] = table["day"].dt.strftime("%Y-%m-%d")
        for q in ("wall_hours", "cpu_hours", "gpu_hours"):
            if q in table:
                table[q] = table[q].round(3)
        if "cost" in table:
            table["cost"] = table["cost"].round(2)
        st.dataframe(formatting.display_frame(table, TABLE_COLUMNS), hide_index=True)


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
