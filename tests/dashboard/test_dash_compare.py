"""The Compare page and its read models (ensembles across campaigns, member-averaged curves in
SQL, settings with differences), and the Monitor's resource view (sampling-rate buckets, the
GPU panel or the note that says why there is none)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from dash_testkit import run_page, seed

from dashboard import figures, queries


@pytest.fixture
def grid(nsbi_env):
    """Two campaigns: 'seeded' with 6 ensembles (3 tasks x 2 grid points, 2 jobs each) and
    'second' with 3 ensembles."""
    first = seed(
        nsbi_env, n_jobs=12, jobs_per_ensemble=2, with_diagnostics=True, train_states=("SUCCEEDED",)
    )
    second = seed(
        nsbi_env,
        n_jobs=6,
        jobs_per_ensemble=2,
        name="second",
        seed_value=1,
        train_states=("SUCCEEDED",),
    )
    return first, second


def test_ensembles_group_jobs_by_campaign_task_and_grid_point(grid):
    from backend import service

    first, second = grid
    cat = service.ensembles()
    assert len(cat) == 9
    e = cat[0]
    assert (e["key"], e["task"], e["grid_index"], e["job_ids"]) == (
        f"{first.campaign_id} · task0 g0",
        "task0",
        0,
        first.train_job_ids[:2],
    )
    assert e["members"] == 4 and e["settings"]["train.width"] == 32
    assert "train.seed" not in e["settings"]  # per job by construction: not a setting
    g1 = next(x for x in cat if x["key"] == f"{first.campaign_id} · task0 g1")
    assert g1["settings"]["train.width"] == 64
    assert [x["campaign_id"] for x in service.ensembles([second.campaign_id])] == [
        second.campaign_id
    ] * 3


def test_ensemble_curves_are_member_means_computed_in_sql(grid, nsbi_env):
    from backend import service
    from backend.db import MetricPoint, get_engine

    first, _ = grid
    jobs = first.train_job_ids[:2]
    got = pd.DataFrame(service.ensemble_curves(jobs, max_points=1000))
    with get_engine(nsbi_env).connect() as conn:
        raw = pd.read_sql(
            sa.select(MetricPoint.__table__).where(MetricPoint.__table__.c.job_id.in_(jobs)),
            conn,
        )
    want = raw.groupby(["name", "step"])["value"].agg(["mean", "min", "max", "count"])
    assert len(got) == len(want) == 2 * 50
    np.testing.assert_allclose(got["mean"], want["mean"].to_numpy())
    np.testing.assert_allclose(got["max"], want["max"].to_numpy())
    assert set(got["n"]) == {4}  # 2 jobs x 2 members
    thin = pd.DataFrame(service.ensemble_curves(jobs, max_points=10))
    per_name = thin.groupby("name")["step"].agg(["count", "max"])
    assert (per_name["count"] <= 11).all() and (per_name["max"] == 49).all()  # keeps the last


def test_smoothing_settings_and_campaign_pooling():
    assert list(queries.smooth([1.0, 2.0, 3.0], 0.0)) == [1.0, 2.0, 3.0]
    assert queries.smooth([5.0, 5.0, 5.0], 0.9) == pytest.approx([5.0, 5.0, 5.0])  # no bias
    s = queries.smooth(np.r_[np.zeros(50), np.ones(50)], 0.8)
    assert s[0] == 0 and 0.9 < s[-1] < 1.0 and np.all(np.diff(s) >= 0)
    items = {
        "a": {"settings": {"width": 32, "lr": 0.001, "task": "S"}},
        "b": {"settings": {"width": 64, "lr": 0.001, "task": "S"}},
    }
    table, differs = queries.settings_table(items)
    assert dict(zip(table.index, differs)) == {"width": True, "lr": False, "task": False}
    assert table.loc["lr", "a"] == "0.001"
    cat = [
        {
            "key": f"1 · S g{g}",
            "campaign_id": 1,
            "campaign": "c",
            "task": "S",
            "members": 2,
            "job_ids": [g + 1],
            "settings": {"width": 32 * (g + 1), "lr": 1},
        }
        for g in range(2)
    ]
    pooled = queries.compare_items(cat, "Campaigns", ["1 · c"], "S")
    assert pooled["1 · c"]["job_ids"] == [1, 2]
    assert pooled["1 · c"]["settings"]["width"] == "32 | 64"
    assert pooled["1 · c"]["settings"]["members"] == 4


def _charts(at) -> dict[str, dict]:
    return {
        json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec)
        for c in at.get("plotly_chart")
    }


def test_compare_page_overlays_runs_and_highlights_differences(grid):
    first, second = grid
    at = run_page("compare")
    # opens on the newest launched campaign's ensembles ('second': 3 of them)
    picked = at.multiselect(key="compare-ensembles").value
    assert picked == [f"{second.campaign_id} · task{t} g0" for t in range(3)]
    at.multiselect(key="compare-ensembles").set_value(
        [
            f"{first.campaign_id} · task0 g0",
            f"{first.campaign_id} · task0 g1",
            f"{second.campaign_id} · task1 g0",
        ]
    ).run()
    assert not at.exception
    spec = _charts(at)["Loss and validation curves"]
    lines = [t for t in spec["data"] if t.get("showlegend", True)]
    assert len(lines) == 6  # 3 runs x (train, validation)
    colours = {t["legendgroup"]: t["line"]["color"] for t in lines}
    assert list(colours.values()) == list(figures.COMPARE_COLOURS[:3])  # one colour per run
    assert {t["line"]["dash"] for t in lines} == {"solid", "dash"}
    assert spec["layout"]["yaxis"]["type"] == "linear"
    at.toggle(key="compare-log").set_value(True).run()
    assert _charts(at)["Loss and validation curves"]["layout"]["yaxis"]["type"] == "log"
    at.slider(key="compare-smoothing").set_value(0.0).run()
    assert all(t.get("showlegend", True) for t in _charts(at)["Loss and validation curves"]["data"])
    settings = next(d.value for d in at.dataframe if "setting" == d.value.index.name)
    assert settings.loc["train.width"].tolist() == ["32", "64", "32"]
    assert settings.loc["train.batch_size"].nunique() == 1
    at.toggle(key="compare-only-diff").set_value(True).run()
    only = next(d.value for d in at.dataframe if "setting" == d.value.index.name)
    assert "train.width" in only.index and "train.batch_size" not in only.index
    diag = next(d.value for d in at.dataframe if "checks" in d.value.columns)
    assert diag["run"].tolist()[:2] == [f"{first.campaign_id} · task0 g0"] * 1 + [
        f"{first.campaign_id} · task0 g1"
    ]
    fits = next(d.value for d in at.dataframe if "fit run" in d.value.columns)
    assert fits["value"].tolist() == ["1.05 ± 0.21"] * 3
    # campaigns side by side: one line pair per campaign
    at.button_group(key="compare-mode").set_value("Campaigns").run()
    assert not at.exception
    lines = [
        t for t in _charts(at)["Loss and validation curves"]["data"] if t.get("showlegend", True)
    ]
    assert {t["legendgroup"] for t in lines} == {
        f"{first.campaign_id} · seeded",
        f"{second.campaign_id} · second",
    }
    at.button_group(key="compare-mode").set_value("Grid points").run()
    assert not at.exception and at.selectbox(key="compare-grid-task").value == "task0"


def test_compare_page_without_training(empty_db):
    at = run_page("compare")
    assert "Nothing to compare yet" in at.info[0].value


def test_resources_summed_per_sampling_interval():
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    rows = []
    for job, phase in ((1, 0), (2, 2)):  # two jobs sampling every 5 s, out of phase
        for i in range(24):  # two minutes
            rows.append(
                {
                    "time": t0 + pd.Timedelta(seconds=5 * i + phase),
                    "job_id": job,
                    "name": "CPU (%)",
                    "value": 10.0 * job,
                }
            )
    r = pd.DataFrame(rows)
    assert queries.sample_interval(r) == pd.Timedelta(seconds=5)
    total = queries.sum_resources(r)
    assert len(total) >= 23  # a point every 5 s, not one a minute
    assert total["value"].iloc[:-1].tolist() == [30.0] * (len(total) - 1)  # no dips


def _resource_rows(url, job_ids, gpus):
    from backend.db import ResourceSample, get_engine

    now = datetime.now(UTC)
    with get_engine(url).begin() as conn:
        conn.execute(sa.delete(ResourceSample.__table__))
        conn.execute(
            sa.insert(ResourceSample.__table__),
            [
                {
                    "job_id": j,
                    "attempt_no": 1,
                    "time": now - timedelta(seconds=5 * (12 - t)),
                    "cpu_percent": 80.0,
                    "rss_bytes": int(1e9),
                    "gpus": gpus,
                }
                for j in job_ids
                for t in range(12)
            ],
        )


def test_monitor_gpu_panel_or_a_note_why_not(nsbi_env):
    s = seed(nsbi_env, n_jobs=4, train_states=("RUNNING",))
    _resource_rows(nsbi_env, s.train_job_ids, [])
    at = run_page("monitor")
    at.button_group(key="monitor-chart").set_value("Resource usage").run()
    assert list(_charts(at)) == ["CPU and memory"]
    note = " ".join(i.value for i in at.info)
    assert "No GPU readings" in note and "nvidia-l4" in note and "local launcher" in note
    assert any("sample every 5 s" in c.value for c in at.caption)
    _resource_rows(
        nsbi_env,
        s.train_job_ids,
        [{"index": 0, "util_percent": 90.0, "memory_bytes": int(8e9), "power_w": 60.0}],
    )
    at.run()  # the monitor's loaders cache for 2 s
    import streamlit as st

    st.cache_data.clear()
    at.run()
    assert list(_charts(at)) == ["GPU", "CPU and memory"]
    gpu = _charts(at)["GPU"]
    assert {a["text"] for a in gpu["layout"]["annotations"]} >= {"<b>GPU utilisation (%)</b>"}


def test_no_gpu_note_names_the_launcher():
    assert queries.no_gpu_note("local").startswith("No GPU on this machine: the local launcher")
    assert "asked for nvidia-l4" in queries.no_gpu_note("gce", ["nvidia-l4", None])
