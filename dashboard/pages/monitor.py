"""Monitor: live job table, loss curves with the ensemble band, resource usage."""

from __future__ import annotations

from datetime import timedelta

import streamlit as st

from dashboard import cache, figures, formatting, intents, queries, widgets

STATES = ("PENDING", "LAUNCHING", "RUNNING", "SUCCEEDED", "FAILED", "PREEMPTED", "CANCELLED")
KINDS = ("train", "fit", "impacts", "scan", "toys")
PAGE_SIZE = 50
CHARTS = ("Loss curves", "Resource usage")
JOB_COLUMNS = {  # raw column -> what the table calls it (and which columns it shows)
    "id": "job",
    "name": "name",
    "kind": "kind",
    "task": "task",
    "state": "state",
    "attempts": "attempts",
    "retries": "retries",
    "recoveries": "recoveries",
    "machine_type": "machine",
    "gpu_type": "GPU",
    "spot": "spot",
    "cost_usd": "cost (USD)",
    "started_at": "started (UTC)",
    "finished_at": "finished (UTC)",
    "status_reason": "reason",
}


def monitor_page() -> None:
    st.title("Monitor")
    db = cache.database_key()
    # no status in the labels: the summary below refreshes live, a label would go stale
    campaign_id = cache.select_campaign(key="monitor-campaign", with_status=False)
    if campaign_id is None:
        widgets.nothing_yet("No campaigns yet: create one on the Campaigns page.")
        return
    c1, c2, c3, c4 = st.columns([2, 2, 1, 1])
    states = c1.multiselect("States", STATES, key="monitor-states")
    kind = c2.selectbox("Kind", ("all", *KINDS), key="monitor-kind")
    live = c3.toggle(
        "Live", value=True, key="monitor-live", help="refresh without reloading the page"
    )
    every = c4.number_input("Every (s)", min_value=1, max_value=60, value=3, key="monitor-every")
    run_every = timedelta(seconds=int(every)) if live else None
    _live_view(db, campaign_id, tuple(states), None if kind == "all" else kind, run_every)


def _live_view(
    db: str, campaign_id: int, states: tuple[str, ...], kind: str | None, run_every
) -> None:
    @st.fragment(run_every=run_every)
    def view() -> None:
        _summary(db, campaign_id)
        n_jobs = _job_table(db, campaign_id, states, kind)
        # one chart at a time keeps each refresh cheap for the browser
        shown = (
            st.segmented_control("Show", CHARTS, default=CHARTS[0], key="monitor-chart")
            or CHARTS[0]
        )
        if shown == CHARTS[0]:
            _curves(db, campaign_id)
        else:
            _resources(db, campaign_id, n_jobs)

    view()


def _summary(db: str, campaign_id: int) -> None:
    df = cache.campaigns(db)
    row = df[df["id"] == campaign_id]
    if row.empty:
        return
    r = row.iloc[0]
    cols = st.columns([2.2, 1, 1, 1, 1, 1.4])  # room for "CANCELLING" / "SUCCEEDED"
    cols[0].metric("Status", str(r.get("status", "")))
    for col, state in zip(cols[1:5], ("running", "pending", "succeeded", "failed")):
        col.metric(state.capitalize(), int(r.get(f"n_{state}", 0) or 0))
    cols[5].metric("Cost (USD)", f"{float(r.get('cost', 0) or 0):.2f}")
    st.progress(
        float(r.get("progress", 0) or 0),
        text=f"{100 * float(r.get('progress', 0) or 0):.0f} % done",
    )
    _result_badge(db, campaign_id, str(r.get("status", "")))


@st.cache_data(
    ttl=cache.SLOW_TTL_S / 3, show_spinner=False
)  # a running campaign's status reads its results
def _result_status(db: str, campaign_id: int) -> dict | None:
    from backend import result_status

    s = result_status.campaign_result_status(campaign_id)
    return s.to_dict() if s is not None else None


def _result_badge(db: str, campaign_id: int, campaign_status: str) -> None:
    """The campaign's result status: 'checks passed' or 'needs review: <failed checks>'."""
    from backend import result_status

    try:
        status = result_status.ResultStatus.from_dict(_result_status(db, campaign_id))
    except Exception as exc:
        widgets.report_error("Could not load the result status", exc)
        return
    text = result_status.badge_markdown(status, campaign_status)
    if text:
        st.markdown(
            f"**Result:** {text}",
            help="checks of the trained ratios and the fit; a campaign can "
            "succeed (every job ran) and still need review. Details: the Diagnostics page.",
        )


def _job_table(db: str, campaign_id: int, states: tuple[str, ...], kind: str | None):
    total_pages_key = "monitor-page"
    page = int(st.session_state.get(total_pages_key, 1))
    jobs, total = cache.jobs(db, campaign_id, states, kind, (page - 1) * PAGE_SIZE, PAGE_SIZE)
    n_pages = max(1, -(-total // PAGE_SIZE))
    st.subheader(f"Jobs ({total})")
    if jobs.empty:
        widgets.nothing_yet("No jobs match the filters.")
        return total
    event = st.dataframe(
        formatting.display_frame(jobs, JOB_COLUMNS),
        hide_index=True,
        key="monitor-jobs",
        height=min(400, 38 + 35 * len(jobs)),
        on_select="rerun",
        selection_mode="multi-row",
    )
    if n_pages > 1:
        st.number_input(
            f"Page (of {n_pages})",
            min_value=1,
            max_value=n_pages,
            value=min(page, n_pages),
            key=total_pages_key,
        )
    rows = event.selection.rows if event is not None and hasattr(event, "selection") else []
    picked = jobs.iloc[[i for i in rows if i < len(jobs)]]
    selected = [int(j) for j in picked["id"]]
    _job_actions(selected, [str(s) for s in picked["state"]])
    if len(selected) == 1:
        _job_events(db, selected[0])
    return total


# what each action can do something about (backend.intents: retry takes FAILED jobs only;
# cancelling a final job changes nothing)
RETRYABLE = ("FAILED",)
CANCELLABLE = ("PENDING", "LAUNCHING", "RUNNING", "PREEMPTED")


def _job_actions(selected: list[int], states: list[str]) -> None:
    cols = st.columns([1.3, 1.3, 5])
    for col, (name, action, allowed) in zip(
        cols,
        (
            ("Cancel jobs", intents.cancel, CANCELLABLE),
            ("Retry jobs", intents.retry, RETRYABLE),
        ),
    ):
        ids = [j for j, s in zip(selected, states) if s in allowed]
        label = f" ({len(ids)})" if ids else ""
        why = (
            None
            if ids
            else f"only {' / '.join(allowed)} jobs can be {name.split()[0].lower()}ed"
            if selected
            else None
        )
        if col.button(name + label, disabled=not ids, key=f"jobs-{name}", help=why):
            try:
                action(job_ids=ids)
                cache.clear()
                st.toast(f"{name}: requested for job(s) {', '.join(map(str, ids))}.")
            except Exception as exc:
                widgets.report_error(f"{name} failed", exc)
    if not selected:
        cols[2].caption(
            "Select jobs in the table to cancel or retry them; select one to see its history "
            "and output."
        )
    elif not any(s in RETRYABLE + CANCELLABLE for s in states):
        cols[2].caption("The selected jobs are finished: nothing to cancel or retry.")


EVENT_COLUMNS = {
    "time": "time (UTC)",
    "from_state": "from",
    "to_state": "to",
    "reason": "reason",
    "actor": "by",
    "attempt_no": "attempt",
}


def _job_events(db: str, job_id: int) -> None:
    events = cache.events(db, job_id)
    with st.expander(f"History of job {job_id}", expanded=True):
        if events.empty:
            st.caption("No events yet.")
        else:
            st.dataframe(formatting.display_frame(events, EVENT_COLUMNS), hide_index=True)
        _job_output(db, job_id)


def _job_output(db: str, job_id: int) -> None:
    """Each attempt's output (stdout and stderr as the worker wrote them) and its error with
    the traceback; the output tails while the attempt runs (the view refreshes live)."""
    try:
        attempts = cache.attempts(db, job_id)
    except Exception as exc:
        widgets.report_error("Could not load the attempts", exc)
        return
    if not attempts:
        st.caption("No attempts yet: output appears once the job is launched.")
        return
    labels = {int(a["attempt_no"]): f"attempt {a['attempt_no']} · {a['status']}" for a in attempts}
    newest = max(labels)
    no = st.selectbox(
        "Output of",
        sorted(labels, reverse=True),
        index=0,
        format_func=labels.__getitem__,
        key=f"monitor-attempt-{job_id}",
    )
    a = next(x for x in attempts if int(x["attempt_no"]) == no)
    if a.get("failure_reason"):
        st.markdown("**Error and traceback**")
        st.code(str(a["failure_reason"]), language=None)
    output = a.get("output")
    note = a.get("output_note") or ""
    if output is None:
        st.caption(f"Output (stdout + stderr): not available here: {note}.")
        return
    st.markdown(
        "**Output** (stdout + stderr)"
        + (f" · {note}" if note else "")
        + (" · tailing while it runs" if no == newest and a["status"] == "RUNNING" else "")
    )
    st.code(output[-20_000:] or "(empty)", language=None, height=300)
    st.download_button(
        "Download output",
        output.encode(),
        file_name=f"job-{job_id}-attempt-{no}.log",
        mime="text/plain",
        icon=":material/download:",
        key=f"monitor-log-{job_id}-{no}",
        on_click="ignore",
    )


def _curves(db: str, campaign_id: int) -> None:
    train = cache.train_jobs(db, campaign_id)
    if train.empty:
        widgets.nothing_yet("This campaign has no training jobs.")
        return
    groups = queries.ensembles(train)
    c1, c2, c3 = st.columns([3, 3, 1])
    key = c1.selectbox("Ensemble", list(groups), key="monitor-ensemble")
    job_ids = groups[key]
    names = {0: "all members"} | {j: f"job {j}" for j in job_ids}
    one = c2.selectbox(
        "Jobs", list(names), format_func=lambda j: names.get(j, str(j)), key="monitor-job"
    )
    show_members = c3.checkbox("Members", value=True, key="monitor-members")
    chosen = job_ids if one == 0 else [one]
    # a budget of a few thousand points per chart, shared by the series of the chosen jobs
    per_series = max(50, queries.MAX_CHART_POINTS // max(1, 4 * len(chosen)))
    frames = [cache.metrics(db, j, None, (), per_series) for j in chosen]
    metrics = queries.label_members(frames)
    if metrics.empty:
        widgets.nothing_yet("No training metrics yet: they appear as soon as a worker reports.")
        return
    # train_loss and val_loss; best_val_loss (a running minimum) would only duplicate val_loss
    loss = metrics[
        metrics["name"].str.contains("loss", case=False) & ~metrics["name"].str.startswith("best")
    ]
    band = queries.ensemble_band(loss)
    widgets.chart(
        figures.loss_curves(
            loss, band, show_members=show_members, title=f"Training vs validation loss: {key}"
        ),
        "loss",
    )


def _resources(db: str, campaign_id: int, n_jobs: int) -> None:
    summed = st.toggle("Sum over jobs", value=True, key="monitor-summed")
    res = cache.resources(
        db, None, campaign_id, max(10, queries.MAX_CHART_POINTS // max(1, n_jobs))
    )
    if res.empty:
        widgets.nothing_yet("No resource samples yet.")
        return
    host, gpu = queries.split_gpu(res)
    every = queries.sample_interval(host if len(host) else res).total_seconds()
    st.caption(
        f"Workers sample every {every:.0f} s; "
        + ("the sum adds the jobs' samples per interval." if summed else "one line per job.")
    )
    if gpu.empty:
        campaigns = cache.campaigns(db)
        row = campaigns[campaigns["id"] == campaign_id]
        launcher = str(row.iloc[0]["launcher"]) if len(row) and "launcher" in row else None
        jobs, _ = cache.jobs(db, campaign_id, (), None, 0, 200)
        gpu_types = list(jobs["gpu_type"]) if "gpu_type" in jobs else []
        st.info(queries.no_gpu_note(launcher, gpu_types), icon=":material/memory:")
    else:
        data = queries.sum_resources(gpu) if summed else gpu
        widgets.chart(figures.resource_usage(data, summed=summed, title="GPU"), "resources-gpu")
    if len(host):
        data = queries.sum_resources(host) if summed else host
        widgets.chart(
            figures.resource_usage(data, summed=summed, title="CPU and memory"), "resources"
        )


monitor_page()
