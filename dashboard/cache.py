"""Cached data loaders for the pages: thin `st.cache_data` wrappers over `dashboard.queries`.

Live views use a TTL of a couple of seconds so the monitor fragment sees new rows on its next
run without hammering the database on every widget interaction. Every loader takes the
database URL as its first argument so the cache never serves one database's rows for another
(tests and `nsbi up` point DATABASE_URL elsewhere per process).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import streamlit as st

from dashboard import queries

LIVE_TTL_S = 2.0
SLOW_TTL_S = 30.0


def database_key() -> str:
    """The database the service will use, as the cache key component."""
    from backend.settings import get_settings

    return get_settings().database_url


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def campaigns(db: str) -> pd.DataFrame:
    return queries.load_campaigns()


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def jobs(
    db: str,
    campaign_id: int | None,
    states: tuple[str, ...] = (),
    kind: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[pd.DataFrame, int]:
    return queries.load_jobs(campaign_id, states or None, kind, offset, limit)


@st.cache_data(ttl=SLOW_TTL_S, show_spinner=False)
def train_jobs(db: str, campaign_id: int) -> pd.DataFrame:
    """A campaign's train jobs (id, name, task): the set is fixed at creation, so cache longer."""
    df, _ = queries.load_jobs(campaign_id, None, "train", 0, 100_000)
    return df[[c for c in ("id", "name", "task") if c in df]]


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def metrics(
    db: str,
    job_id: int | None,
    campaign_id: int | None,
    names: tuple[str, ...] = (),
    max_points: int = 2000,
) -> pd.DataFrame:
    return queries.load_metrics(job_id, campaign_id, names or None, max_points)


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def resources(
    db: str, job_id: int | None, campaign_id: int | None, max_points: int = 2000
) -> pd.DataFrame:
    return queries.load_resources(job_id, campaign_id, max_points)


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def events(db: str, job_id: int) -> pd.DataFrame:
    return queries.load_events(job_id)


@st.cache_data(ttl=SLOW_TTL_S / 3, show_spinner=False)
def costs(db: str, group_by: tuple[str, ...]) -> pd.DataFrame:
    return queries.load_costs(group_by)


@st.cache_data(ttl=SLOW_TTL_S / 3, show_spinner=False)
def fit(db: str, campaign_id: int) -> tuple[dict[int, queries.FitView], pd.DataFrame]:
    return queries.load_fit(campaign_id)


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def fit_jobs(db: str, campaign_id: int) -> pd.DataFrame:
    """The campaign's fit-stage jobs (every state) with their fit run."""
    return queries.load_fit_jobs(campaign_id)


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def attempts(db: str, job_id: int) -> list[dict]:
    """A job's attempts with their output (log tail) and failure reason."""
    return queries.load_attempts(job_id)


@st.cache_data(ttl=SLOW_TTL_S / 3, show_spinner=False)
def diagnostics(db: str, campaign_id: int) -> dict:
    return queries.load_diagnostics(campaign_id)


@st.cache_data(ttl=SLOW_TTL_S, show_spinner=False)
def ensembles(db: str) -> list[dict]:
    """Every campaign's ensembles (the Compare page's choices): fixed at campaign creation."""
    return queries.load_ensembles()


@st.cache_data(ttl=LIVE_TTL_S * 2, show_spinner=False)
def ensemble_curves(
    db: str, runs: tuple[tuple[str, tuple[int, ...]], ...], max_points: int = 400
) -> pd.DataFrame:
    """The member-averaged curves of every compared run ((label, job ids), ...) in one frame
    (column `item`): one cache entry per view, so a rerun unpickles one frame, not one per run."""
    frames = [
        queries.load_ensemble_curves(job_ids, max_points=max_points).assign(item=label)
        for label, job_ids in runs
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@st.cache_data(ttl=SLOW_TTL_S, show_spinner=False)
def ensemble_diagnostics(db: str, job_ids: tuple[int, ...]) -> dict | None:
    return queries.load_ensemble_diagnostics(job_ids)


def clear() -> None:
    """Drop every cached answer (after an intent such as launch, so the next view is fresh)."""
    st.cache_data.clear()


def campaign_choices(db: str, *, with_status: bool = True) -> dict[int, str]:
    """{id: "id · name (status)"} for select boxes, newest first (without the status where the
    page around it refreshes on its own: a label drawn once would go stale)."""
    df = campaigns(db)
    if df.empty:
        return {}
    df = df.sort_values("id", ascending=False)
    return {
        int(r.id): f"{int(r.id)} · {r.name}" + (f" ({r.status})" if with_status else "")
        for r in df.itertuples()
    }


def default_campaign(db: str) -> int | None:
    """The campaign a page opens on when none was chosen yet: the newest one that was launched
    and has jobs (a fresh, never-launched or empty campaign has nothing to watch), else the
    newest."""
    df = campaigns(db)
    if df.empty:
        return None
    df = df.sort_values("id", ascending=False)
    n_jobs = pd.to_numeric(df.get("n_jobs", 0), errors="coerce").fillna(0)
    launched = ~df["status"].astype(str).isin(("CREATED",))
    live = df[(n_jobs > 0) & launched]
    return int((live if len(live) else df).iloc[0]["id"])


def select_campaign(
    label: str = "Campaign",
    *,
    key: str,
    options: Sequence[int] | None = None,
    with_status: bool = True,
) -> int | None:
    """A campaign select box remembered across pages through `st.session_state['campaign_id']`."""
    db = database_key()
    choices = campaign_choices(db, with_status=with_status)
    ids = [i for i in choices if options is None or i in options]
    if not ids:
        return None
    current = st.session_state.get("campaign_id")
    if current not in ids:
        current = default_campaign(db)
    index = ids.index(current) if current in ids else 0
    chosen = st.selectbox(label, ids, index=index, format_func=lambda i: choices[i], key=key)
    st.session_state["campaign_id"] = chosen
    return chosen
