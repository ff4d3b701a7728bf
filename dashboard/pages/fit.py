"""Fit: start fits, impacts, scans and toys as jobs; show mu-hat, pulls, impacts, correlations, scan, toys."""

from __future__ import annotations

import streamlit as st

from dashboard import cache, figures, intents, widgets


def fit_page() -> None:
    st.title("Fit")
    db = cache.database_key()
    campaign_id = cache.select_campaign(key="fit-campaign")
    if campaign_id is None:
        widgets.nothing_yet("Nothing yet: train an ensemble on the Campaigns page, then fit here.")
        return
    with st.expander("Start a fit", expanded=False):
        _start_form(campaign_id)
    view, table = cache.fit(db, campaign_id)
    if view.empty:
        widgets.nothing_yet("Nothing yet: no fit results for this campaign. Train first, then start a fit above.")
        return
    _headline(view)
    tabs = st.tabs(["Pulls", "Impacts", "Correlations", "Scan", "Toys", "Jobs"])
    with tabs[0]:
        if view.pulls.empty:
            widgets.nothing_yet("No pulls.")
        else:
            widgets.chart(figures.pulls(view.pulls), "pulls")
    with tabs[1]:
        if view.impacts.empty:
            widgets.nothing_yet("No impacts yet: start an impacts job.")
        else:
            top = st.slider("Top impacts", 5, max(5, min(60, len(view.impacts))), min(20, len(view.impacts)),
                            key="fit-top") if len(view.impacts) > 5 else len(view.impacts)
            widgets.chart(figures.impacts_ranking(view.impacts, poi=view.poi, top=top), "impacts")
    with tabs[2]:
        if view.corr_matrix.size:
            widgets.chart(figures.correlation(view.corr_names, view.corr_matrix), "correlation")
        else:
            widgets.nothing_yet("No correlation matrix.")
    with tabs[3]:
        if view.scan.empty:
            widgets.nothing_yet("No scan yet: start a scan job.")
        else:
            widgets.chart(figures.likelihood_scan(view.scan, poi=view.poi), "scan")
    with tabs[4]:
        if view.toys.size:
            widgets.chart(figures.toy_pulls(view.toys, poi=view.poi), "toys")
        else:
            widgets.nothing_yet("No toys yet: start a toys job.")
    with tabs[5]:
        st.dataframe(table, hide_index=True)


def _headline(view) -> None:
    cols = st.columns(3)
    if view.mu_hat is not None:
        if view.sigma_up is not None and view.sigma_down is not None:
            text = f"{view.mu_hat:.3f} +{abs(view.sigma_up):.3f} −{abs(view.sigma_down):.3f}"
        else:
            text = f"{view.mu_hat:.3f} ± {view.sigma:.3f}" if view.sigma is not None else f"{view.mu_hat:.3f}"
        cols[0].metric(f"best-fit {view.poi}", text)
    cols[1].metric("Data", view.data)
    cols[2].metric("Nuisance parameters", len(view.pulls))


def _start_form(campaign_id: int) -> None:
    with st.form("fit-start"):
        c1, c2 = st.columns(2)
        data = c1.radio("Data", ("asimov", "observed"), horizontal=True, key="fit-data")
        mu_true = c2.number_input("Asimov μ", value=1.0, key="fit-mu-true")
        steps = st.multiselect("Run", intents.FIT_KINDS, default=list(intents.FIT_KINDS), key="fit-steps")
        c3, c4, c5 = st.columns(3)
        scan_lo = c3.number_input("Scan from", value=0.0, key="fit-scan-lo")
        scan_hi = c4.number_input("Scan to", value=2.0, key="fit-scan-hi")
        scan_n = c5.number_input("Scan points", min_value=3, max_value=201, value=21, key="fit-scan-n")
        n_toys = st.number_input("Toys", min_value=10, max_value=100_000, value=200, step=10, key="fit-toys")
        submitted = st.form_submit_button("Start fit", type="primary")
    if submitted:
        request = {"data": data, "mu_true": mu_true, "steps": steps,
                   "scan": {"low": scan_lo, "high": scan_hi, "points": int(scan_n)}, "toys": int(n_toys)}
        try:
            n = intents.start_fit(campaign_id, request)
        except Exception as exc:  # validation or backend errors: shown, page keeps working
            widgets.report_error("Could not start the fit", exc)
            return
        cache.clear()
        st.success(f"{n} fit job(s) started; they run when the controller picks them up.")


fit_page()
