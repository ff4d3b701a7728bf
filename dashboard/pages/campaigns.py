"""Campaigns: configure (with validation beside each field), estimate, launch; list with progress; bulk actions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
import streamlit as st

from dashboard import cache, figures, formatting, forms, intents, widgets

if TYPE_CHECKING:
    from collections.abc import Sequence

    from streamlit.delta_generator import DeltaGenerator

ERRORS_KEY = "campaign-form-errors"
DEMO_LABEL = "Launch demo campaign"  # the README names this button: keep them equal
ANALYSIS_ERRORS_KEY = "analysis-file-errors"


def campaigns_page() -> None:
    st.title("Campaigns")
    top = st.columns([2, 5])
    if top[0].button(
        DEMO_LABEL,
        type="primary",
        icon=":material/play_arrow:",
        key="demo-campaign",
        help="create and launch the built-in demo campaign in one click",
    ):
        try:
            cid = intents.create_demo(launch=True)
            cache.clear()
            st.session_state["campaign_id"] = cid
            st.toast(f"Demo campaign {cid} created and launched.")
        except Exception as exc:
            widgets.report_error("Could not create the demo campaign", exc)
    created = st.session_state.pop("campaign-created", None)
    if created:
        cid, launched = created
        st.success(
            f"Campaign {cid} created"
            + (" and launch requested." if launched else ". Launch it from the list.")
        )
    _campaign_list()
    keep_open = bool(st.session_state.get(ERRORS_KEY) or st.session_state.get("campaign-estimate"))
    with st.expander("New campaign", expanded=keep_open):
        _campaign_form()
    with st.expander(
        "From an analysis file", expanded=bool(st.session_state.get(ANALYSIS_ERRORS_KEY))
    ):
        _analysis_form()


# --------------------------------------------------------------------------- list


def _campaign_list() -> None:
    db = cache.database_key()
    df = cache.campaigns(db)
    st.subheader("Campaigns")
    if df.empty:
        widgets.nothing_yet(f"No campaigns yet: press “{DEMO_LABEL}” or fill in the form below.")
        return
    df = df.sort_values("id", ascending=False)
    df = df.assign(result=_result_column(db, df))
    state_cols = [c for c in df.columns if c.startswith("n_") and c != "n_jobs"]
    event = st.dataframe(
        _table(df, state_cols),
        hide_index=True,
        key="campaign-table",
        on_select="rerun",
        selection_mode="multi-row",
        column_config={
            "result": st.column_config.TextColumn(
                "result",
                help="the result's checks: “checks passed”, or “needs review” with the failed checks "
                "(value vs threshold); stored when the campaign settles",
            ),
            "progress": st.column_config.ProgressColumn(
                "progress", min_value=0.0, max_value=1.0, format="percent"
            ),
        },
    )
    rows = event.selection.rows if event is not None and hasattr(event, "selection") else []
    selected = [int(df.iloc[i]["id"]) for i in rows]
    cols = st.columns([1.3, 1.3, 1.7, 3])
    label = f" ({len(selected)})" if selected else ""
    actions = (
        ("Launch", intents.launch, ":material/rocket_launch:"),
        ("Cancel", lambda ids: intents.cancel(campaign_ids=ids), ":material/cancel:"),
        ("Retry failed", lambda ids: intents.retry(campaign_ids=ids), ":material/replay:"),
    )
    for col, (name, action, icon) in zip(cols, actions):
        if col.button(name + label, disabled=not selected, key=f"bulk-{name}", icon=icon):
            try:
                action(selected)
                cache.clear()
                st.toast(f"{name}: requested for campaign(s) {', '.join(map(str, selected))}.")
            except Exception as exc:
                widgets.report_error(f"{name} failed", exc)
    if not selected:
        cols[3].caption("Select campaigns in the table for launch, cancel or retry.")
    widgets.chart(figures.campaign_states(df), "campaign-states", exportable=False)


def money(x: object) -> str:
    """USD with thousands separators; blank when there is none."""
    return f"{float(x):,.2f}" if formatting.present(x) else ""  # type: ignore[arg-type]


def _table(df: pd.DataFrame, state_cols: list[str]) -> pd.DataFrame:
    """The campaign list as people read it: human column names, money with separators, a
    blank instead of 'None' (no budget, nothing estimated)."""
    out = pd.DataFrame(
        {
            "id": df["id"].astype(int),
            "name": df["name"].astype(str),
            "status": df["status"].astype(str),
            "result": df["result"],
            "progress": df["progress"],
            "jobs": pd.to_numeric(df.get("n_jobs", 0), errors="coerce").fillna(0).astype(int),
        }
    )
    for c in state_cols:
        out[c[2:].lower()] = pd.to_numeric(df[c], errors="coerce").fillna(0).astype(int)
    out["cost (USD)"] = [money(v) for v in df.get("cost", [None] * len(df))]
    out["budget (USD)"] = [
        money(v) if formatting.present(v) else "no budget"
        for v in df.get("budget", [None] * len(df))
    ]
    if "estimate_cost" in df:
        out["estimated cost (USD)"] = [money(v) for v in df["estimate_cost"]]
    if "created" in df:
        created = pd.to_datetime(df["created"], utc=True, errors="coerce")
        out["created (UTC)"] = created.dt.strftime("%Y-%m-%d %H:%M").fillna("")
    return out


@st.cache_data(ttl=cache.LIVE_TTL_S, show_spinner=False)
def _stored_result_statuses(db: str) -> dict[int, dict | None]:
    from backend import result_status

    return {
        cid: (s.to_dict() if s is not None else None)
        for cid, s in result_status.result_statuses(failing_so_far=True).items()
    }


def _result_column(db: str, df: pd.DataFrame) -> list[str]:
    """Per campaign: 'checks passed (N checks)', 'needs review: <failed checks>' (also while it
    runs, once a finished job failed a check), 'checks pending'."""
    from backend import result_status

    try:
        stored = _stored_result_statuses(db)
    except Exception:  # a database not yet upgraded must not hide the list
        stored = {}
    return [
        result_status.badge(result_status.ResultStatus.from_dict(stored.get(int(cid))), str(state))
        for cid, state in zip(df["id"], df["status"])
    ]


# --------------------------------------------------------------------------- form


def _field_errors(field: str) -> None:
    for message in st.session_state.get(ERRORS_KEY, {}).get(field, []):
        st.error(message, icon=":material/error:")


def _catalogue_options() -> tuple[list[str], list[str]]:
    try:
        from backend.costs import load_catalogue

        cat = load_catalogue()
        machines = sorted({m.machine_type for m in cat.machines}, key=lambda m: (m != "local", m))
        gpus = sorted({g.gpu_type for g in cat.gpus})
        return machines, gpus
    except Exception:  # a broken catalogue must not hide the form
        return ["local"], []


def _campaign_form() -> None:
    defaults = forms.default_values()
    machines, gpus = _catalogue_options()
    with st.form("campaign-form", border=False):
        c: Sequence[DeltaGenerator] = st.columns(2)  # reused below for rows of 2 to 5 columns
        with c[0]:
            name = st.text_input("Name", value=defaults["name"], key="f-name")
            _field_errors("name")
        with c[1]:
            budget = st.number_input(
                "Budget (USD, 0 = none)",
                value=float(defaults["budget"]),
                step=10.0,
                format="%.2f",
                key="f-budget",
            )
            _field_errors("budget")

        st.markdown("**Samples** (source: `demo` for the built-in simulator, or a file path)")
        samples = st.data_editor(
            pd.DataFrame(defaults["samples"]),
            num_rows="dynamic",
            key="f-samples",
            hide_index=True,
            width="stretch",
        )
        _field_errors("samples")
        c = st.columns(2)
        with c[0]:
            process_names = [p for p in samples["process"].dropna().astype(str) if p.strip()]
            reference = st.selectbox(
                "Reference process (denominator of every ratio task)",
                process_names or ["B"],
                index=(
                    process_names.index(defaults["reference"])
                    if defaults["reference"] in process_names
                    else 0
                ),
                key="f-reference",
            )
            _field_errors("reference")
        with c[1]:
            nuisances = st.text_input(
                "Extra nuisance parameters (comma separated)",
                value=defaults["nuisances"],
                key="f-nuisances",
            )
            _field_errors("nuisances")
        st.markdown("**Systematic variations** (up/down: `demo` or a file path)")
        systematics = st.data_editor(
            pd.DataFrame(defaults["systematics"]),
            num_rows="dynamic",
            key="f-systematics",
            hide_index=True,
            width="stretch",
        )
        _field_errors("systematics")

        st.markdown("**Ratio estimators**")
        c = st.columns(5)
        # No min/max on the number fields: a browser-side limit only turns a field red and the
        # submit then sends the old value silently; the checks below (the form's and the
        # backend's own validation) explain every refusal next to its field instead.
        hidden = c[0].number_input("Hidden layers", value=defaults["hidden_layers"], key="f-layers")
        width = c[1].number_input("Width", value=defaults["width"], key="f-width")
        activation = c[2].selectbox("Activation", forms.ACTIVATIONS, key="f-activation")
        max_steps = c[3].number_input("Steps", value=defaults["max_steps"], key="f-steps")
        batch = c[4].number_input("Batch size", value=defaults["batch_size"], key="f-batch")
        _field_errors("architecture")
        c = st.columns(2)
        with c[0]:
            ens = st.number_input(
                "Ensemble size", value=defaults["ensemble_size"], key="f-ensemble"
            )
            per_job = st.number_input(
                "Members per job", value=defaults["members_per_job"], key="f-per-job"
            )
            _field_errors("ensemble_size")
        with c[1]:
            grid = st.text_area(
                "Hyper-parameter grid (one `key = v1, v2` per line)",
                value=defaults["grid"],
                placeholder="learning_rate = 1e-3, 3e-4\nwidth = 32, 64",
                key="f-grid",
            )
            _field_errors("grid")

        st.markdown("**Where it runs**")
        c = st.columns(4)
        with c[0]:
            launcher = st.selectbox("Backend", forms.LAUNCHERS, key="f-launcher")
            _field_errors("launcher")
        with c[1]:
            machine = st.selectbox("Machine type", machines, key="f-machine")
        with c[2]:
            gpu_type = st.selectbox(
                "GPU type", [None, *gpus], format_func=lambda g: g or "none", key="f-gpu"
            )
        with c[3]:
            gpu_count = st.number_input("GPUs", value=0, key="f-gpus")
        _field_errors("machine")
        c = st.columns(3)
        with c[0]:
            spot = st.checkbox("Spot (preemptible)", value=False, key="f-spot")
            _field_errors("spot")
        with c[1]:
            zones = st.text_input(
                "Zones (comma separated)",
                value="",
                placeholder="us-central1-a, us-central1-b",
                key="f-zones",
            )
            _field_errors("zones")
        with c[2]:
            concurrency = st.number_input(
                "Max concurrent jobs", value=defaults["max_concurrency"], key="f-concurrency"
            )
            _field_errors("max_concurrency")

        st.markdown("**After training**")
        c = st.columns(5)
        fit = c[0].checkbox("Fit", value=defaults["fit"], key="f-fit")
        impacts = c[1].checkbox("Impacts", value=defaults["impacts"], key="f-impacts")
        scan = c[2].checkbox("Scan", value=defaults["scan"], key="f-scan")
        toys = c[3].checkbox("Toys", value=defaults["toys"], key="f-toys")
        with c[4]:
            n_toys = st.number_input("Number of toys", value=defaults["n_toys"], key="f-ntoys")
            _field_errors("n_toys")
        _field_errors("stages")
        _field_errors("_general")

        b = st.columns([1.1, 1.1, 1.9, 3])  # wide enough for "Create and launch" with its icon
        do_estimate = b[0].form_submit_button("Estimate", icon=":material/calculate:")
        do_create = b[1].form_submit_button("Create", icon=":material/add:")
        do_launch = b[2].form_submit_button(
            "Create and launch", type="primary", icon=":material/rocket_launch:"
        )

    if not (do_estimate or do_create or do_launch):
        _show_estimate()
        return
    values = {
        "name": name,
        "budget": budget,
        "samples": samples.to_dict("records"),
        "reference": reference,
        "systematics": systematics.to_dict("records"),
        "nuisances": nuisances,
        "hidden_layers": hidden,
        "width": width,
        "activation": activation,
        "max_steps": max_steps,
        "batch_size": batch,
        "ensemble_size": ens,
        "members_per_job": per_job,
        "grid": grid,
        "launcher": launcher,
        "machine_type": machine,
        "gpu_type": gpu_type,
        "gpu_count": gpu_count,
        "spot": spot,
        "zones": zones,
        "max_concurrency": concurrency,
        "fit": fit,
        "impacts": impacts,
        "scan": scan,
        "toys": toys,
        "n_toys": n_toys,
    }
    st.session_state["campaign-machine"] = {
        "machine type": machine,
        "GPU": f"{gpu_count} × {gpu_type}" if gpu_type and gpu_count else "none",
        "pricing": "spot" if spot else "on-demand",
    }
    _submit(values, create=do_create or do_launch, launch=do_launch)


def _submit(values: dict, *, create: bool, launch: bool) -> None:
    result = forms.build_config(values)
    estimate = None
    backend_errors: dict[str, list[str]] = {}
    try:  # the backend's validation runs every time, so its refusals show beside the fields too
        estimate = intents.estimate(result.config)
    except Exception as exc:  # CampaignConfigError carries one message per problem
        backend_errors = forms.file_backend_errors(getattr(exc, "errors", None) or [str(exc)])
    errors = forms.merge_errors(result.errors, backend_errors)
    if errors:
        estimate = None
    st.session_state[ERRORS_KEY] = errors
    st.session_state["campaign-estimate"] = estimate
    if errors or not create:
        st.rerun()
    try:
        cid = intents.create(result.config, launch=launch)
    except Exception as exc:
        st.session_state[ERRORS_KEY] = forms.file_backend_errors(
            getattr(exc, "errors", None) or [str(exc)]
        )
        st.rerun()
    cache.clear()
    st.session_state["campaign_id"] = cid
    st.session_state["campaign-created"] = (cid, launch)
    st.session_state["campaign-estimate"] = None
    st.rerun()


UPLOAD_MODE = "Upload a file"
FOLDER_MODE = "A file in the analysis folder"


def _analysis_form() -> None:
    """Start a campaign from an analysis file (an upload, or a file in the analysis folder);
    every problem of the file is shown here with its line, and nothing is created until it is
    valid. A path opens only files inside the analysis folder (NSBI_ANALYSIS_DIR), and the
    problems never quote what the file holds (`intents.redact_problem`)."""
    st.caption(
        "An analysis file (YAML, see docs/analysis.md) defines samples, systematics, training "
        "and the fit in one place. Jobs that an earlier run already did are reused, not run again. "
        "The controller (`nsbi up`) runs the campaign; `nsbi analysis run FILE` also writes a report."
    )
    mode = st.radio(
        "Analysis file", (UPLOAD_MODE, FOLDER_MODE), index=0, horizontal=True, key="a-mode"
    )
    upload = None
    path = ""
    if mode == UPLOAD_MODE:
        upload = st.file_uploader("Analysis file (YAML)", type=["yaml", "yml"], key="a-upload")
    else:
        folder = intents.analysis_folder()
        files = intents.analysis_files(folder)
        path = st.text_input(
            "File in the analysis folder",
            key="a-path",
            placeholder=files[0] if files else "analysis.yaml",
            help=f"a path relative to {folder} (NSBI_ANALYSIS_DIR); no file outside it is opened",
        )
        st.caption(
            f"Analysis folder: `{folder}`"
            + (
                f"; files: {', '.join(f'`{f}`' for f in files[:12])}"
                if files
                else " (no files yet)"
            )
            + (" …" if len(files) > 12 else "")
        )
    c = st.columns([1, 1.9, 3.2])
    do_check = c[0].button("Check", key="a-check", icon=":material/fact_check:")
    do_run = c[1].button(
        "Create and launch", key="a-run", type="primary", icon=":material/rocket_launch:"
    )
    for message in st.session_state.get(ANALYSIS_ERRORS_KEY, []):
        st.error(message, icon=":material/error:")
    checked = st.session_state.get("analysis-checked")
    if checked and not st.session_state.get(ANALYSIS_ERRORS_KEY):
        st.success(f"{checked}: valid.")
    if not (do_check or do_run):
        return
    st.session_state["analysis-checked"] = None
    try:
        if mode == UPLOAD_MODE:
            if upload is None:
                st.session_state[ANALYSIS_ERRORS_KEY] = [
                    "upload an analysis file (or choose “A file in the analysis folder”)"
                ]
                st.rerun()
            source = intents.save_upload(upload.name, upload.getvalue())
            shown = upload.name
        else:
            source = str(intents.resolve_analysis_path(path))
            shown = path.strip()
        problems = intents.analysis_problems(source)
        st.session_state[ANALYSIS_ERRORS_KEY] = problems
        if problems or not do_run:
            st.session_state["analysis-checked"] = None if problems else shown
            st.rerun()
        cid = intents.create_from_analysis(source, launch=True)
    except intents.AnalysisPathError as exc:
        st.session_state[ANALYSIS_ERRORS_KEY] = [str(exc)]
        st.rerun()
    except Exception as exc:  # AnalysisError lists problems; anything else is shown as one line
        problems = [str(p) for p in getattr(exc, "problems", [])] or [
            f"{type(exc).__name__}: {exc}"
        ]
        st.session_state[ANALYSIS_ERRORS_KEY] = [intents.redact_problem(p) for p in problems]
        st.rerun()
    cache.clear()
    st.session_state["campaign_id"] = cid
    st.session_state["campaign-created"] = (cid, True)
    st.session_state[ANALYSIS_ERRORS_KEY] = []
    st.rerun()


def _show_estimate() -> None:
    if st.session_state.get(ERRORS_KEY):
        st.warning("The form has problems: see the messages beside the fields.")
    est = st.session_state.get("campaign-estimate")
    if est:
        per_job = [forms.as_plain(j) for j in est.get("per_job", ()) or ()]
        c = st.columns(4)
        c[0].metric("Estimated cost (USD)", money(est.get("cost", 0.0)))
        c[1].metric("Estimated GPU-hours", formatting.number(est.get("gpu_hours", 0.0), 3))
        c[2].metric("Machine-hours", formatting.number(est.get("machine_hours", 0.0), 3))
        c[3].metric("Jobs", len(per_job))
        breakdown = forms.estimate_breakdown(per_job, st.session_state.get("campaign-machine"))
        if len(breakdown):
            st.markdown(
                "**Estimate by task**",
                help="per job kind and ratio task: jobs, machine-hours, GPU-hours, the price "
                "per machine-hour from the catalogue and the cost (no retries or preemptions)",
            )
            st.dataframe(breakdown, hide_index=True, key="estimate-breakdown")


campaigns_page()
