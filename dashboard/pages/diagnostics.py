"""Diagnostics per ratio task: traffic lights, calibration, closure, normalisation, spread, AUC.

The page opens with the campaign's result status and on the task with the worst failed check.
"""

from __future__ import annotations

import streamlit as st

from dashboard import cache, figures, formatting, queries, widgets

VIEWS = ("Calibration", "Closure", "Ensemble spread", "Overtraining")
# Streamlit badge colours (text badges: no emoji font needed in the browser or in screenshots)
LIGHTS = {"green": "green", "amber": "orange", "red": "red", "unknown": "gray"}
LABELS = {
    "closure_chi2_ndf": "closure χ²/ndf",
    "normalisation": "normalisation",
    "calibration": "calibration",
    "overtraining": "overtraining",
    "ensemble_spread": "ensemble spread",
    "saturation": "saturation",
    "auc": "AUC",
}


def diagnostics_page() -> None:
    st.title("Diagnostics")
    db = cache.database_key()
    campaign_id = cache.select_campaign(key="diag-campaign")
    if campaign_id is None:
        widgets.nothing_yet("Nothing yet: train an ensemble first (Campaigns page).")
        return
    try:
        by_task = cache.diagnostics(db, campaign_id)
    except Exception as exc:
        widgets.report_error("Could not load diagnostics", exc)
        return
    if not by_task:
        widgets.nothing_yet(
            "Nothing yet: no diagnostics for this campaign. Train first: diagnostics are "
            "written when an ensemble finishes training."
        )
        return
    status = _result_badge(db, campaign_id)
    tasks = sorted(by_task)
    worst = status.worst_task if status is not None else None
    # open on the task with the worst failed check (the first one when every task passes)
    task = st.selectbox(
        "Ratio task", tasks, index=tasks.index(worst) if worst in tasks else 0, key="diag-task"
    )
    view = queries.diagnostics_view(task, by_task[task])
    if by_task[task].get("paired"):
        st.caption(
            "Trained paired: both samples are the same events with two weightings (a hypothesis "
            "simulated by reweighting). Closure and calibration below use the errors of two "
            "independent samples, looser than the pairs' own precision; the noise-to-signal "
            "check of the fit weighs this ratio."
        )
    _lights(view.checks, _excused(status, task))
    _fit_checks(status, task)
    shown = st.segmented_control("Show", VIEWS, default=VIEWS[0], key="diag-view") or VIEWS[0]
    if shown == "Calibration":
        left, right = st.columns(2)
        with left:
            widgets.chart(
                figures.calibration(view.calibration, title=f"Calibration: {task}"), "calibration"
            )
            if view.calibration_note:
                st.caption(view.calibration_note)
        with right:
            if view.roc.empty:
                st.metric("AUC (holdout)", formatting.against(view.auc, 0.5))
            else:
                widgets.chart(figures.roc(view.roc, title=f"ROC: {task}"), "roc")
    elif shown == "Closure":
        if not view.closure:
            widgets.nothing_yet("No closure histograms for this task.")
            return
        names = [str(h.get("observable", i)) for i, h in enumerate(view.closure)]
        i = st.selectbox(
            "Observable", range(len(names)), format_func=names.__getitem__, key="diag-observable"
        )
        widgets.chart(figures.closure(view.closure[i]), f"closure-{names[i]}")
    elif shown == "Ensemble spread":
        left, right = st.columns(2)
        with left:
            widgets.chart(
                figures.histogram(
                    view.spread["normalisation"],
                    x_title="E_ref[r̂] per member",
                    bins=20,
                    title="Ensemble spread: member normalisations",
                    threshold=1.0,
                ),
                "spread",
            )
        with right:
            widgets.chart(
                figures.histogram(
                    view.spread["auc"],
                    title="Ensemble spread: member AUCs",
                    x_title="AUC per member",
                    bins=20,
                ),
                "spread-auc",
            )
    else:
        if view.losses.empty:
            widgets.nothing_yet("No per-member losses reported.")
        else:
            st.markdown(
                "Training vs holdout loss per member (a holdout loss well above training is overtraining)"
            )
            st.dataframe(view.losses, hide_index=True)


@st.cache_data(
    ttl=cache.SLOW_TTL_S / 3, show_spinner=False
)  # a running campaign's status reads its results
def _result_status(db: str, campaign_id: int) -> dict | None:
    from backend import result_status

    s = result_status.campaign_result_status(campaign_id)
    return s.to_dict() if s is not None else None


def _result_badge(db: str, campaign_id: int):
    """Show the campaign's result status ('checks passed' / 'needs review: <failed checks>'); return it."""
    from backend import result_status

    try:
        status = result_status.ResultStatus.from_dict(_result_status(db, campaign_id))
    except Exception as exc:
        widgets.report_error("Could not load the result status", exc)
        return None
    text = result_status.badge_markdown(status)
    if text:
        st.markdown(
            f"**Result:** {text}",
            help="a check fails where its light below is RED; every failed "
            "check of every task is listed here, worst first",
        )
    return status


def _fit_checks(status, task: str) -> None:
    """What the fit measured about this task's ratios: noise relative to the variation the ratio
    must carry (a noisy ratio can pass every check above and still shrink the interval) and
    what recalibrating it does to the result."""
    for c in status.checks if status is not None else ():
        if c.task == task and c.name in ("noise_to_signal", "calibration_effect"):
            text = f"In the fit: {c.message}"
            (st.caption if c.passed else st.error)(text)


def _excused(status, task: str) -> dict[str, str]:
    """Checks of ``task`` that the result status passes although their value is RED (a
    significant miscalibration the fit was shown not to depend on), with the reason."""
    return {
        c.name: c.message
        for c in (status.checks if status is not None else ())
        if c.task == task and c.excused
    }


def _lights(checks, excused: dict[str, str]) -> None:
    st.subheader("Checks")
    cols = st.columns(len(checks))
    for col, row in zip(cols, checks.itertuples()):
        value = formatting.against(row.value, row.limit)
        badge = f":{LIGHTS[row.status]}-badge[{row.status.upper()}]"
        col.markdown(
            f"{badge}  \n**{LABELS.get(row.check, row.check)}**  \n{value}  \n"
            f"<small>{row.threshold}</small>",
            unsafe_allow_html=True,
            help=row.description,
        )
    for row in checks.itertuples():
        label = LABELS.get(row.check, row.check).capitalize()
        if row.check in excused:
            st.info(
                f"{label} is red here, and the result does not depend on it: {excused[row.check]}."
            )
        elif getattr(row, "remedy", ""):
            st.error(f"{label} failed: {row.remedy}.")


diagnostics_page()
