"""Fit: start fits, impacts, scans and toys as jobs; show mu-hat, pulls, impacts, correlations, scan, toys."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import streamlit as st

from backend.analysis.fit_figures import contour_figure, nice_ticks
from dashboard import cache, figures, formatting, intents, queries, widgets

VIEWS = (
    "Parameters",
    "Pulls",
    "Impacts",
    "Correlations",
    "Contours",
    "Scan",
    "Limits",
    "Toys",
    "Jobs",
)
LIVE_EVERY_S = 3  # while a fit run still has unfinished jobs the page refreshes itself


def fit_page() -> None:
    st.title("Fit")
    db = cache.database_key()
    campaign_id = cache.select_campaign(key="fit-campaign")
    if campaign_id is None:
        widgets.nothing_yet("Nothing yet: train an ensemble on the Campaigns page, then fit here.")
        return
    with st.expander("Start a fit", expanded=False):
        _start_form(campaign_id)
    _results(db, campaign_id)


def _round_impact_ticks(fig):
    """Round ticks on the impact axis (top): multiples of a 1-2-5 step such as 0.05, with the
    range widened to the next tick, instead of ticks placed at the pull axis's positions
    (which showed values such as +-0.0816)."""
    rng = fig.layout.xaxis2.range
    if rng is not None:
        ticks, reach = nice_ticks(max(abs(float(rng[0])), abs(float(rng[1]))))
        fig.update_layout(
            xaxis2={
                "range": [-reach, reach],
                "tickmode": "array",
                "tickvals": ticks,
                "ticktext": [f"{t:g}" for t in ticks],
            }
        )
    return fig


def _contours(view) -> None:
    """2-D profile-likelihood contours of the first two POIs, with every POI's errors and their
    correlations (fit jobs of analyses with several POIs)."""
    shown = {k: c for k, c in view.contours.items() if isinstance(c, dict) and c.get("x")}
    if not shown:
        error = view.contours.get("error") if view.contours else None
        widgets.nothing_yet(
            f"The contours failed: {error}"
            if error
            else "No contours: the analysis has one parameter of interest (contours need two: "
            "give pois in the analysis file)."
        )
        return
    widgets.chart(contour_figure(shown), "contours")
    if view.pois:
        rows = [
            {
                "POI": name,
                "value": p.get("value"),
                "error (Hesse)": p.get("error"),
                "err_lo (profile)": p.get("err_lo"),
                "err_hi (profile)": p.get("err_hi"),
            }
            for name, p in view.pois.items()
        ]
        st.dataframe(pd.DataFrame(rows), hide_index=True, key="fit-pois-table")
    if view.poi_correlations:
        corr = pd.DataFrame(view.poi_correlations).T
        st.caption("Correlations between the parameters of interest (Hesse)")
        st.dataframe(corr, key="fit-poi-corr")
    flagged = {k: sorted({f for fl in c.get("flags") or [] for f in fl}) for k, c in shown.items()}
    for k, fl in flagged.items():
        if fl:
            st.warning(f"{k} % contour: some rays are flagged ({', '.join(fl)}).")


def _fit_jobs(db: str, campaign_id: int) -> pd.DataFrame:
    try:
        return cache.fit_jobs(db, campaign_id)
    except Exception as exc:  # the results below still show
        widgets.report_error("Could not load the fit jobs", exc)
        return pd.DataFrame(columns=["id", "name", "kind", "state", "run"])


def _results(db: str, campaign_id: int) -> None:
    views, table = cache.fit(db, campaign_id)
    jobs = _fit_jobs(db, campaign_id)
    runs = sorted(set(views) | {int(r) for r in jobs.get("run", [])}, reverse=True)
    run: int | None = runs[0] if runs else None
    if len(runs) > 1:
        run = st.selectbox("Fit run", runs, format_func=lambda r: f"run {r}", key="fit-run")
    run_jobs = jobs[jobs["run"] == run] if run is not None and len(jobs) else jobs.iloc[0:0]
    _live_progress(db, campaign_id, run, run_jobs)
    view = views.get(run) if run is not None else None
    if view is None or view.empty:
        widgets.nothing_yet(
            "Nothing yet: no fit results for this run. "
            + (
                "Its jobs are still running (progress above)."
                if len(run_jobs)
                else "Train first, then start a fit above."
            )
        )
        if len(run_jobs):
            _jobs_table(run_jobs, table)
        return
    _result_badge(db, campaign_id)
    _headline(view)
    # One view at a time: each Plotly chart costs the browser real work, so a page that draws
    # five at once is slow on a busy machine (and tabs draw all of them).
    shown = st.segmented_control("Show", VIEWS, default=VIEWS[0], key="fit-view") or VIEWS[0]
    if shown == "Parameters":
        _parameters(view)
    elif shown == "Pulls":
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
            fig = _round_impact_ticks(figures.impacts_ranking(view.impacts, poi=view.poi, top=top))
            widgets.chart(fig, "impacts")
            _impacts_table(view)
    elif shown == "Correlations":
        if view.corr_matrix.size:
            widgets.chart(figures.correlation(view.corr_names, view.corr_matrix), "correlation")
        else:
            widgets.nothing_yet("No correlation matrix.")
    elif shown == "Contours":
        _contours(view)
    elif shown == "Scan":
        if view.scan.empty:
            widgets.nothing_yet("No scan yet: start a scan job.")
        else:
            _scan_quality(view)
            _intervals(view)
            widgets.chart(figures.likelihood_scan(view.scan, poi=view.poi), "scan")
    elif shown == "Limits":
        _limits(view)
    elif shown == "Toys":
        if view.toy_summary or view.toys.size:
            _toy_summary(view)
        if view.toys.size:
            widgets.chart(figures.toy_pulls(view.toys, poi=view.poi), "toys")
        elif not view.toy_summary:
            widgets.nothing_yet("No toys yet: start a toys job.")
        else:
            st.caption("The toys jobs reported summaries only (no per-toy pulls to histogram).")
    else:
        _jobs_table(run_jobs, table)


def _live_progress(db: str, campaign_id: int, run: int | None, run_jobs: pd.DataFrame) -> None:
    """The run's progress, refreshed every LIVE_EVERY_S s by a fragment while jobs are
    unfinished; the rest of the page reruns only when another job has finished, so an open
    menu or a selection is not interrupted every few seconds."""
    if run is None or not len(run_jobs):
        return
    finished = queries.run_progress(run_jobs)["finished"]
    live = finished < len(run_jobs)

    @st.fragment(run_every=timedelta(seconds=LIVE_EVERY_S) if live else None)
    def progress() -> None:
        jobs = _fit_jobs(db, campaign_id)
        now = jobs[jobs["run"] == run] if len(jobs) else run_jobs
        _progress(run, now)
        if live and len(now) and queries.run_progress(now)["finished"] != finished:
            st.rerun()  # results arrived: redraw the whole page once

    progress()


def _progress(run: int | None, run_jobs: pd.DataFrame) -> None:
    """Live progress of the run's fit-stage jobs (the fragment refreshes while any is unfinished)."""
    if run is None or not len(run_jobs):
        return
    p = queries.run_progress(run_jobs)
    if p["finished"] == p["total"]:
        text = f"Run {run}: all {p['total']} fit-stage jobs finished"
        if p["failed"]:
            text += f" ({p['failed']} failed)"
        st.caption(text)
        return
    st.progress(
        p["finished"] / max(p["total"], 1),
        text=f"Run {run}: {p['finished']} of {p['total']} fit-stage jobs finished · "
        f"{p['running']} running · {p['pending']} waiting"
        + (f" · {p['failed']} failed" if p["failed"] else ""),
    )


JOB_COLUMNS = {
    "id": "job",
    "name": "name",
    "kind": "kind",
    "state": "state",
    "attempts": "attempts",
    "mu_hat": "μ̂ ± σ",
    "started_at": "started (UTC)",
    "finished_at": "finished (UTC)",
    "status_reason": "reason",
}


def _jobs_table(run_jobs: pd.DataFrame, results: pd.DataFrame) -> None:
    """The fit-stage jobs of the chosen run only, with their state and (when done) result."""
    if not len(run_jobs):
        widgets.nothing_yet("No fit-stage jobs in this run.")
        return
    df = run_jobs.copy()
    by_job = {}
    if len(results) and "job_id" in results:
        for r in results.to_dict("records"):
            if formatting.present(r.get("mu_hat")):
                by_job[int(r["job_id"])] = formatting.with_error(r.get("mu_hat"), r.get("sigma"))
    df["mu_hat"] = [by_job.get(int(j), "") for j in df["id"]]
    st.dataframe(formatting.display_frame(df, JOB_COLUMNS), hide_index=True, key="fit-jobs")


PARAMETER_HELP = (
    "value ± Hesse error; the asymmetric errors are the 68 % profile-likelihood interval "
    "(stored by the fit job for the POI); pull = (θ̂ − θ₀) / σ₀ and constraint = σ̂ / σ₀ for "
    "constrained nuisance parameters"
)


def _parameters(view) -> None:
    """Every fitted parameter with its errors, pull and constraint, numbers by their errors."""
    p = view.parameters
    if p.empty:
        widgets.nothing_yet("The fit reported no parameter values.")
        return
    has = formatting.present
    rows = []
    for r in p.to_dict("records"):
        err = r["error"] if has(r["error"]) else None
        rows.append(
            {
                "parameter": r["parameter"],
                "role": r["role"],
                "value ± error": formatting.with_error(r["value"], err),
                "asymmetric (68 % profile)": (
                    formatting.asymmetric(r["value"], r["err_lo"], r["err_hi"])
                    if has(r["err_lo"]) or has(r["err_hi"])
                    else ""
                ),
                "pull": formatting.error(r["pull"], r["constraint"]) if has(r["pull"]) else "",
                "constraint": (
                    formatting.error(r["constraint"], r["constraint"])
                    if has(r["constraint"])
                    else ""
                ),
                "note": r["note"],
            }
        )
    st.markdown(f"**Fitted parameters** ({len(rows)})", help=PARAMETER_HELP)
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="fit-parameters")
    _breakdown_table(view)


def _breakdown_table(view) -> None:
    """The error breakdown of the POI: total, statistical, systematic and the learned model's
    own components where the fit job measured them."""
    fmt = formatting.error
    b, u = view.breakdown, view.uncertainty
    ref = view.sigma
    rows = []
    for key, label, what in (
        ("total", "Hesse total", "data statistics and modelled systematics (exact Hessian)"),
        ("stat", "statistical", "all nuisance parameters fixed at their best fit"),
        ("syst", "systematic", "√(total² − stat²)"),
    ):
        if b.get(key) is not None:
            rows.append({"component": label, "error": fmt(b[key], ref), "what it is": what})
    inc = set(u.get("included") or [])
    for key, label, what in (
        ("nn", "NN training", "spread of the best fit over one-member refits"),
        ("sim", "simulation statistics", "Poisson bootstrap of the normalisation sample"),
    ):
        if u.get(key) is not None:
            se = u.get(key + "_se")
            rows.append(
                {
                    "component": label + ("" if key in inc else " (not in total)"),
                    "error": formatting.with_error(u[key], se) if se else fmt(u[key], ref),
                    "what it is": what,
                }
            )
    if u.get("total") is not None:
        rows.append(
            {
                "component": "total (with the learned model's components)",
                "error": fmt(u["total"], ref),
                "what it is": "Hesse total and the included components in quadrature",
            }
        )
    if rows:
        st.markdown(f"**Error breakdown of {view.poi}**")
        st.dataframe(pd.DataFrame(rows), hide_index=True, key="fit-breakdown")


def _impacts_table(view) -> None:
    imp = view.impacts.copy()
    ref = view.sigma
    imp["rank"] = (
        imp[["postfit_up", "postfit_down"]].abs().max(axis=1).rank(ascending=False, method="first")
    )
    imp = imp.sort_values("rank")
    table = pd.DataFrame(
        {
            "nuisance parameter": imp["name"],
            "post-fit +1σ": [formatting.error(v, ref) for v in imp["postfit_up"]],
            "post-fit −1σ": [formatting.error(v, ref) for v in imp["postfit_down"]],
            "pre-fit +1σ": [formatting.error(v, ref) for v in imp["prefit_up"]],
            "pre-fit −1σ": [formatting.error(v, ref) for v in imp["prefit_down"]],
            "method": imp["method"].fillna("").astype(str),
        }
    )
    st.markdown(
        f"**Impacts on {view.poi}** ({len(table)}, largest first)",
        help="shift of the best-fit POI when the nuisance parameter is moved by ±1σ "
        "(pre-fit: its prior width; post-fit: its constraint) and the others refitted "
        "('refit') or linearly ('covariance')",
    )
    st.dataframe(table, hide_index=True, key="fit-impacts-table")


def _scan_quality(view) -> None:
    problems = queries.scan_problems(view)
    if problems:
        st.warning("Scan needs a look: " + "; ".join(problems) + ".", icon=":material/warning:")
    else:
        st.caption(
            "Scan quality: every point converged and the curve rises away from the best fit."
        )


def _toy_summary(view) -> None:
    summary = view.toy_summary
    mean, se = queries.toy_pull_mean(view)
    n_conv = summary.get("n_converged", view.toys.size)
    n_toys = summary.get("n_toys", view.toys.size)
    width = summary.get("pull_width")
    if width is None and view.toys.size > 1:
        width = float(view.toys.std(ddof=1))
    width_se = (
        float(width) / (2.0 * (float(n_conv) - 1.0)) ** 0.5
        if width is not None and n_conv and float(n_conv) > 1
        else None
    )
    cols = st.columns(5)
    cols[0].metric("Toys (converged)", f"{int(n_conv or 0)} / {int(n_toys or 0)}")
    cols[1].metric(
        "Pull mean",
        formatting.with_error(mean, se),
        help="mean of (μ̂ − μ_true) / σ over the converged toys ± its standard error "
        "(width / √n); 0 for an unbiased fit",
    )
    cols[2].metric(
        "Pull width",
        formatting.with_error(width, width_se),
        help="standard deviation of the pulls ± its standard error (width / √(2(n − 1))); "
        "1 when the errors are right",
    )
    cols[3].metric(
        "Coverage 68 % (profile)", formatting.number(summary.get("coverage_profile_68"), 3)
    )
    cols[4].metric(
        "Coverage 95 % (profile)", formatting.number(summary.get("coverage_profile_95"), 3)
    )
    flags = []
    if mean is not None and se:
        z = abs(mean) / se
        if z > 3:
            flags.append(f"the pull mean is {z:.1f} standard errors from 0 (biased fit)")
    if width is not None and width_se:
        z = abs(float(width) - 1.0) / width_se
        if z > 3:
            flags.append(f"the pull width is {z:.1f} standard errors from 1 (errors mis-sized)")
    if n_toys and n_conv is not None and float(n_conv) < float(n_toys):
        flags.append(f"{int(float(n_toys) - float(n_conv))} toy fit(s) did not converge")
    if flags:
        st.warning("Toys need a look: " + "; ".join(flags) + ".", icon=":material/warning:")
    elif n_conv and float(n_conv) < 50:
        st.caption(
            f"Only {int(n_conv)} toys: the pull mean and width are known to "
            f"± {formatting.number(se, 2)} and ± {formatting.number(width_se, 2)}."
        )


def _limits(view) -> None:
    """The CLs upper limit with its expected band, the discovery test, and the expected
    (Asimov) result beside the observed fit, as the fit job computed them."""
    lim, exp = view.limits, view.expected
    if not lim and not exp:
        widgets.nothing_yet(
            "No upper limit or expected result in this run: tick them in the start form below, "
            "or set compute.limits / compute.expected in the analysis file."
        )
        return
    if lim:
        cl = float(lim.get("cl") or 0.95)
        method = str(lim.get("method") or "")
        if method == "toys":
            method += f", {lim.get('n_toys')} toys per hypothesis and point"
        if lim.get("error"):
            st.error(f"The upper limit could not be computed: {lim['error']}")
        else:
            warning = (lim.get("extra") or {}).get("asymptotic_warning")
            if warning:
                st.warning(f"Asymptotic limit not to be trusted as it is: {warning}.")
            e = dict(lim.get("expected") or {})
            cols = st.columns(3)
            cols[0].metric(
                f"observed {100 * cl:g} % CL limit",
                formatting.number(lim.get("observed")),
                help=f"CLs with q~_mu, {method}",
            )
            cols[1].metric(
                "expected (median)",
                formatting.number(e.get("0")),
                help="the median limit under background only (mu = 0)",
            )
            cols[2].metric(
                "expected ±1σ",
                f"[{formatting.number(e.get('-1'))}, {formatting.number(e.get('1'))}]",
                help=f"±2σ: [{formatting.number(e.get('-2'))}, {formatting.number(e.get('2'))}]",
            )
            widgets.chart(
                figures.limit_band(lim.get("observed"), e, poi=view.poi, cl=cl), "limit-band"
            )
        disc = lim.get("discovery") or {}
        if disc.get("error"):
            st.caption(f"Discovery test failed: {disc['error']}")
        elif disc:
            st.caption(
                f"Discovery test on the data: q₀ = {formatting.number(disc.get('q0'))}, "
                f"Z = {formatting.number(disc.get('significance'))} σ, "
                f"p₀ = {formatting.number(disc.get('p0'))}"
            )
    if exp:
        st.markdown(f"**Expected result** ({exp.get('data') or 'Asimov data'})")
        cols = st.columns(3)
        cols[0].metric(
            f"expected {view.poi}",
            formatting.asymmetric(exp.get("mu_hat"), exp.get("mu_err_lo"), exp.get("mu_err_hi")),
            help="fit of the model's Asimov data; the errors from the profile likelihood",
        )
        cols[1].metric(
            f"observed {view.poi}",
            formatting.asymmetric(view.mu_hat, view.mu_err_lo, view.mu_err_hi),
            help="the fit of this run's data, for comparison",
        )
        z = (exp.get("discovery") or {}).get("significance")
        cols[2].metric("expected significance", f"{formatting.number(z)} σ")


def _intervals(view) -> None:
    cols = st.columns(2)
    for col, (level, label) in zip(cols, ((figures.Q_68, "68 % CL"), (figures.Q_95, "95 % CL"))):
        lo, hi = queries.scan_interval(view.scan, level)
        d = formatting.decimals_for(view.sigma or 0.0)
        ends = [formatting.NA if v is None else f"{v:.{d}f}" for v in (lo, hi)]
        text = f"[{ends[0]}, {ends[1]}]".replace("-", formatting.MINUS)
        col.metric(f"{view.poi} {label} (scan)", text)


def _headline(view) -> None:
    cols = st.columns(4)
    if view.mu_hat is not None:
        cols[0].metric(
            f"best-fit {view.poi}",
            formatting.with_error(view.mu_hat, view.sigma),
            help="Hessian (symmetric) error; the asymmetric profile-likelihood errors are in "
            "the Parameters view and the Scan view",
        )
    if view.mu_err_lo is not None or view.mu_err_hi is not None:
        cols[1].metric(
            "68 % profile interval",
            formatting.asymmetric(view.mu_hat, view.mu_err_lo, view.mu_err_hi),
            help="asymmetric errors by root finding on the profile likelihood (the fit job)",
        )
    elif view.breakdown:
        cols[1].metric(
            "stat / syst",
            f"{formatting.error(view.breakdown.get('stat'), view.sigma)} / "
            f"{formatting.error(view.breakdown.get('syst'), view.sigma)}",
        )
    cols[2].metric("Nuisance parameters", len(view.pulls))
    if view.converged is not None:
        cols[3].metric(
            "Minimiser",
            "converged" if view.converged else "NOT converged",
            help="whether the minimiser converged; whether the result can be trusted is the "
            "result status above (the checks of the ratios and of the fit)",
        )
    _components(view.uncertainty, view.sigma)
    _noise_shrinkage(view.noise_shrinkage)


def _components(u: dict, ref: float | None) -> None:
    """The learned model's error components next to the Hesse error (docs/validation.md)."""
    if not u:
        return
    inc = set(u.get("included") or [])
    cols = st.columns(4)
    cols[0].metric(
        "total error",
        formatting.error(u.get("total"), ref),
        help="Hesse error with the included components added in quadrature",
    )
    cols[1].metric(
        "Hesse",
        formatting.error(u.get("hesse"), ref),
        help="data statistics and modelled systematics (exact Hessian)",
    )
    for col, key, label, how in (
        (cols[2], "nn", "NN training", "spread of the best fit over one-member refits"),
        (cols[3], "sim", "simulation statistics", "Poisson bootstrap of the normalisation sample"),
    ):
        suffix = "" if key in inc else " (not in total)"
        col.metric(label + suffix, formatting.with_error(u.get(key), u.get(key + "_se")), help=how)


def _noise_shrinkage(rows: list) -> None:
    """One line on how much network noise the fit shrank out of each learned process ratio."""
    shrunk = [r for r in rows if (r.get("lambda") or 1.0) < 0.9995]
    if not rows:
        return
    if not shrunk:
        st.caption("Noise shrinkage of the learned ratios: none needed (lambda 1).")
        return
    parts = [
        f"{r.get('task')} lambda {r['lambda']:.3f} (noise {formatting.number(r.get('noise'))} "
        f"against a spread of {formatting.number(r.get('residual'))})"
        for r in shrunk
    ]
    st.caption(
        "Noise shrinkage of the learned ratios (the noisy part of each log ratio scaled by lambda "
        "before the fit; docs/validation.md): " + "; ".join(parts)
    )


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
        l1, l2, l3, l4 = st.columns(4)
        want_limit = l1.checkbox(
            "Upper limit (CLs)",
            key="fit-limit",
            help="computed in the fit job (Limits view); unticked: as the campaign's config says",
        )
        cl = l2.number_input("CL", 0.5, 0.999, 0.95, step=0.01, key="fit-limit-cl")
        method = l3.radio("Limit method", ("asymptotic", "toys"), key="fit-limit-method")
        limit_toys = l4.number_input(
            "Limit toys",
            min_value=10,
            max_value=100_000,
            value=1000,
            step=100,
            key="fit-limit-toys",
            help="toys per hypothesis and tested point (method toys)",
        )
        e1, e2 = st.columns(2)
        want_expected = e1.checkbox(
            "Expected result",
            key="fit-expected",
            help="fit of the model's Asimov data; unticked: as the campaign's config says",
        )
        expected_mu = e2.number_input("Expected at μ", value=1.0, key="fit-expected-mu")
        submitted = st.form_submit_button("Start fit", type="primary")
    if submitted:
        request = {
            "data": data,
            "mu_true": mu_true,
            "steps": steps,
            "scan": {"low": scan_lo, "high": scan_hi, "points": int(scan_n)},
            "toys": int(n_toys),
        }
        if want_limit:  # unticked: as the campaign's config says (compute.limits)
            request["limits"] = {"cl": float(cl), "method": method} | (
                {"toys": int(limit_toys)} if method == "toys" else {}
            )
        if want_expected:
            request["expected"] = {"mu": float(expected_mu)}
        try:
            n = intents.start_fit(campaign_id, request)
        except Exception as exc:  # validation or backend errors: shown, page keeps working
            widgets.report_error("Could not start the fit", exc)
            return
        cache.clear()
        st.success(f"{n} fit job(s) started; they run when the controller picks them up.")


fit_page()
