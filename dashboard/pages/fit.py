"""Fit: start fits, impacts, scans and toys as jobs; show mu-hat, pulls, impacts, correlations, scan, toys."""

from __future__ import annotations

import streamlit as st

from dashboard import cache, figures, intents, queries, widgets

VIEWS = ("Pulls", "Impacts", "Correlations", "Scan", "Toys", "Jobs")


def fit_page() -> None:
    st.title("Fit")
    db = cache.database_key()
    campaign_id = cache.select_campaign(key="fit-campaign")
    if campaign_id is None:
        widgets.nothing_yet("Nothing yet: train an ensemble on the Campaigns page, then fit here.")
        return
    with st.expander("Start a fit", expanded=False):
        _start_form(campaign_id)
    views, table = cache.fit(db, campaign_id)
    if len(views) > 1:
        run = st.selectbox(
            "Fit run", sorted(views, reverse=True), format_func=lambda r: f"run {r}", key="fit-run"
        )
        view = views.get(run)
    else:
        view = next(iter(views.values()), None)
    if view is None or view.empty:
        widgets.nothing_yet(
            "Nothing yet: no fit results for this campaign. Train first, then start a fit above."
        )
        return
    _result_badge(db, campaign_id)
    _headline(view)
    # One view at a time: each Plotly chart costs the browser real work, so a page that draws
    # five at once is slow on a busy machine (and tabs draw all of them).
    shown = st.segmented_control("Show", VIEWS, default="Pulls", key="fit-view") or "Pulls"
    if shown == "Pulls":
        if view.pulls.empty:
            widgets.nothing_yet("No pulls.")
        else:
            widgets.chart(figures.pulls(view.pulls), "pulls")
    elif shown == "Impacts":
        if view.impacts.empty:
            widgets.nothing_yet("No impacts yet: start an impacts job.")
        else:
            n = len(view.impacts)
            top = st.slider("Top impacts", 5, min(60, n), min(20, n), key="fit-top") if n > 5 else n
            widgets.chart(figures.impacts_ranking(view.impacts, poi=view.poi, top=top), "impacts")
    elif shown == "Correlations":
        if view.corr_matrix.size:
            widgets.chart(figures.correlation(view.corr_names, view.corr_matrix), "correlation")
        else:
            widgets.nothing_yet("No correlation matrix.")
    elif shown == "Scan":
        if view.scan.empty:
            widgets.nothing_yet("No scan yet: start a scan job.")
        else:
            _intervals(view)
            widgets.chart(figures.likelihood_scan(view.scan, poi=view.poi), "scan")
    elif shown == "Toys":
        if view.toy_summary:
            _toy_summary(view.toy_summary)
        if view.toys.size:
            widgets.chart(figures.toy_pulls(view.toys, poi=view.poi), "toys")
        elif not view.toy_summary:
            widgets.nothing_yet("No toys yet: start a toys job.")
        else:
            st.caption("The toys jobs reported summaries only (no per-toy pulls to histogram).")
    else:
        st.dataframe(table, hide_index=True)


def _toy_summary(summary: dict) -> None:
    cols = st.columns(5)
    cols[0].metric(
        "Toys (converged)",
        f"{int(summary.get('n_converged', 0))} / {int(summary.get('n_toys', 0))}",
    )
    cols[1].metric("Pull mean", queries.format_value(summary.get("pull_mean")))
    cols[2].metric("Pull width", queries.format_value(summary.get("pull_width")))
    cols[3].metric(
        "Coverage 68 % (profile)", queries.format_value(summary.get("coverage_profile_68"))
    )
    cols[4].metric(
        "Coverage 95 % (profile)", queries.format_value(summary.get("coverage_profile_95"))
    )


def _intervals(view) -> None:
    cols = st.columns(2)
    for col, (level, label) in zip(cols, ((figures.Q_68, "68 % CL"), (figures.Q_95, "95 % CL"))):
        lo, hi = queries.scan_interval(view.scan, level)
        text = f"[{queries.format_value(lo)}, {queries.format_value(hi)}]"
        col.metric(f"{view.poi} {label} (scan)", text)


def _headline(view) -> None:
    cols = st.columns(4)
    if view.mu_hat is not None:
        text = (
            f"{view.mu_hat:.3f} ± {view.sigma:.3f}"
            if view.sigma is not None
            else f"{view.mu_hat:.3f}"
        )
        cols[0].metric(
            f"best-fit {view.poi}",
            text,
            help="Hessian (symmetric) error; the Scan view gives the profile-likelihood interval",
        )
    if view.breakdown:
        cols[1].metric(
            "stat / syst",
            f"{queries.format_value(view.breakdown.get('stat'))} / "
            f"{queries.format_value(view.breakdown.get('syst'))}",
        )
    cols[2].metric("Nuisance parameters", len(view.pulls))
    if view.converged is not None:
        cols[3].metric("Fit", "converged" if view.converged else "NOT converged")
    _components(view.uncertainty)


def _components(u: dict) -> None:
    """The learned model's error components next to the Hesse error (docs/validation.md)."""
    if not u:
        return
    fmt = queries.format_value
    inc = set(u.get("included") or [])
    cols = st.columns(4)
    cols[0].metric(
        "total error",
        fmt(u.get("total")),
        help="Hesse error with the included components added in quadrature",
    )
    cols[1].metric(
        "Hesse",
        fmt(u.get("hesse")),
        help="data statistics and modelled systematics (exact Hessian)",
    )
    for col, key, label, how in (
        (cols[2], "nn", "NN training", "spread of the best fit over one-member refits"),
        (cols[3], "sim", "simulation statistics", "Poisson bootstrap of the normalisation sample"),
    ):
        suffix = "" if key in inc else " (not in total)"
        col.metric(label + suffix, f"{fmt(u.get(key))} ± {fmt(u.get(key + '_se'))}", help=how)


@st.cache_data(
    ttl=cache.SLOW_TTL_S / 3, show_spinner=False
)  # a running campaign's status reads its results
def _result_status(db: str, campaign_id: int) -> dict | None:
    from backend import result_status

    s = result_status.campaign_result_status(campaign_id)
    return s.to_dict() if s is not None else None


def _result_badge(db: str, campaign_id: int) -> None:
    """The result status next to mu-hat: a converged fit on ratios that fail their checks needs review."""
    from backend import result_status

    try:
        status = result_status.ResultStatus.from_dict(_result_status(db, campaign_id))
    except Exception as exc:
        widgets.report_error("Could not load the result status", exc)
        return
    text = result_status.badge_markdown(status)
    if text:
        st.markdown(
            f"**Result:** {text}",
            help="checks of the trained ratios (Diagnostics page) and of the fit",
        )


def _start_form(campaign_id: int) -> None:
    with st.form("fit-start"):
        c1, c2 = st.columns(2)
        data = c1.radio("Data", ("asimov", "observed"), horizontal=True, key="fit-data")
        mu_true = c2.number_input("Asimov μ", value=1.0, key="fit-mu-true")
        steps = st.multiselect(
            "Run", intents.FIT_KINDS, default=list(intents.FIT_KINDS), key="fit-steps"
        )
        c3, c4, c5 = st.columns(3)
        scan_lo = c3.number_input("Scan from", value=0.0, key="fit-scan-lo")
        scan_hi = c4.number_input("Scan to", value=2.0, key="fit-scan-hi")
        scan_n = c5.number_input(
            "Scan points", min_value=3, max_value=201, value=21, key="fit-scan-n"
        )
        n_toys = st.number_input(
            "Toys", min_value=10, max_value=100_000, value=200, step=10, key="fit-toys"
        )
        submitted = st.form_submit_button("Start fit", type="primary")
    if submitted:
        request = {
            "data": data,
            "mu_true": mu_true,
            "steps": steps,
            "scan": {"low": scan_lo, "high": scan_hi, "points": int(scan_n)},
            "toys": int(n_toys),
        }
        try:
            n = intents.start_fit(campaign_id, request)
        except Exception as exc:  # validation or backend errors: shown, page keeps working
            widgets.report_error("Could not start the fit", exc)
            return
        cache.clear()
        st.success(f"{n} fit job(s) started; they run when the controller picks them up.")


fit_page()
