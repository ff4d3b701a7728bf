"""Content keys of jobs, and reuse of earlier SUCCEEDED jobs whose artifacts still exist.

These tests run against a real SQLite database and a real local store; what a worker would
have written (result.json, an ensemble file) is written with the store API, so the reuse
logic is checked without training anything (test_run.py covers the real runs).
"""

from __future__ import annotations

import copy
import json
import os

import pytest
import sqlalchemy as sa

from backend.analysis import cache
from backend.campaigns import DEMO_CONFIG, expand, validate_config


def tiny_config(name: str = "keys") -> dict:
    cfg = copy.deepcopy(DEMO_CONFIG)
    cfg["name"] = name
    cfg["training"].update(ensemble_size=4, members_per_job=2)
    cfg["fit"]["nuisances"] = ["lumi"]
    cfg["impacts"]["enabled"] = True
    cfg["scan"].update(enabled=True, poi_values=[0.0, 1.0, 2.0, 3.0], points_per_job=2)
    return cfg


def keys_of(cfg: dict) -> dict[str, str]:
    return cache.plan_keys(expand(validate_config(cfg)))


# --------------------------------------------------------------------------- keys


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch):
    """Each test its own NSBI_HOME (the checksum memo file lives there) and a cold memo."""
    monkeypatch.setenv("NSBI_HOME", str(tmp_path / "home"))
    cache.clear_checksum_memo()
    yield tmp_path / "home"
    cache.clear_checksum_memo()


def test_file_checksum_follows_content_not_path(tmp_path):
    a = tmp_path / "a.npz"
    a.write_bytes(b"x" * 1000)
    first = cache.file_checksum(a)
    b = tmp_path / "moved.npz"
    b.write_bytes(a.read_bytes())
    assert cache.file_checksum(b) == first  # same bytes elsewhere: same checksum
    a.write_bytes(b"y" * 1000)  # same size, new content (and a new mtime)
    st = a.stat()
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert cache.file_checksum(a) != first
    # the memo outlives the process: an unchanged file is not read again by the next run
    memo = json.loads((tmp_path / "home" / cache.MEMO_FILE).read_text())
    assert cache.file_checksum(b) in memo.values()
    cache.clear_checksum_memo()
    assert (
        cache.file_checksum(a) == memo[f"{a.resolve()}|{a.stat().st_size}|{a.stat().st_mtime_ns}"]
    )
    with pytest.raises(cache.CacheKeyError, match="missing.root"):
        cache.file_checksum(tmp_path / "missing.root")


def test_train_key_covers_what_defines_the_ensemble(tmp_path):
    data = tmp_path / "s.parquet"
    data.write_bytes(b"events-v1")
    cfg = tiny_config()
    cfg["processes"]["S"] = {
        "path": str(data),
        "features": {"m4l": "m4l"},
        "weight": "w",
        "selection": "m4l > 0",
    }
    base = keys_of(cfg)
    train = "train-S_vs_B-g0-m0-1"
    assert train in base and len(set(base.values())) == len(base)  # every job its own key

    def changed(mutate) -> set[str]:
        c = copy.deepcopy(cfg)
        mutate(c)
        new = keys_of(c)
        return {n for n in base if new.get(n) != base[n]}

    s_jobs = {n for n in base if n.startswith("train-S_vs_B")}
    fit_stage = {n for n in base if not n.startswith("train-")}
    for mutate in (
        lambda c: c["processes"]["S"].update(features={"m4l": "m4l * 1.01"}),
        lambda c: c["processes"]["S"].update(weight="2 * w"),
        lambda c: c["processes"]["S"].update(selection="m4l > 1"),
    ):
        assert changed(mutate) == s_jobs | fit_stage
    # the TrainConfig and the seed change every training (and so every fit built on them)
    assert changed(lambda c: c["training"]["params"].update(width=48)) == set(base)
    assert changed(lambda c: c["training"].update(seed=5)) == set(base)
    # names do not count
    assert changed(lambda c: c.update(name="renamed", description="other words")) == set()
    # the file's bytes count, its path does not
    moved = tmp_path / "elsewhere.parquet"
    moved.write_bytes(data.read_bytes())
    assert changed(lambda c: c["processes"]["S"].update(path=str(moved))) == set()
    moved.write_bytes(b"events-v2")
    assert changed(lambda c: c["processes"]["S"].update(path=str(moved))) == s_jobs | fit_stage
    # member packs: the pack m2-3 is a different ensemble from m0-1
    assert base["train-S_vs_B-g0-m0-1"] != base["train-S_vs_B-g0-m2-3"]


def test_fit_stage_keys_follow_fit_settings_and_ensembles():
    cfg = tiny_config()
    base = keys_of(cfg)

    def changed(mutate) -> set[str]:
        c = copy.deepcopy(cfg)
        mutate(c)
        new = keys_of(c)
        return {n for n in base if new.get(n) != base[n]}

    fit_stage = {n for n in base if not n.startswith("train-")}
    assert changed(lambda c: c["fit"].update(mu_true=1.5)) == fit_stage
    assert changed(lambda c: c["fit"].update(options={"tolerance": 1e-7})) == fit_stage
    # a new scan range re-runs only the scan jobs
    assert changed(lambda c: c["scan"].update(poi_values=[0.0, 1.0, 2.0, 4.0])) == {"scan-001"}
    # a retrained ensemble (other sample) invalidates the fits that use it
    assert changed(lambda c: c["processes"]["SBI"]["demo"].update(seed=99)) == (
        {n for n in base if n.startswith("train-SBI_vs_B")} | fit_stage
    )
    # the engine version is part of every key
    plans = expand(validate_config(cfg))
    assert cache.plan_keys(plans, version="0.1.0") != cache.plan_keys(plans, version="0.2.0")


# --------------------------------------------------------------------------- reuse


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def plane(request, tmp_path, monkeypatch):
    """A database (SQLite file, or the real PostgreSQL: the key lookup uses JSON operators that
    differ between the two) and a local store."""
    from backend.db import dispose_engines, get_engine, init_db
    from backend.db.models import SQLModel

    monkeypatch.setenv("NSBI_HOME", str(tmp_path))
    (tmp_path / "store").mkdir()
    monkeypatch.setenv("NSBI_STORE", f"file://{tmp_path / 'store'}")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'nsbi.db'}"
        monkeypatch.setenv("DATABASE_URL", url)
        yield init_db(get_engine(url)), tmp_path / "store"
        dispose_engines()
        return
    engine = request.getfixturevalue("pg_engine_module")
    yield engine, tmp_path / "store"
    tables = ", ".join(t.name for t in SQLModel.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE " + tables + " RESTART IDENTITY CASCADE"))


def _finish_like_a_worker(
    engine, store_root, campaign_id: int, names: set[str] | None = None
) -> dict[str, str]:
    """Write result.json (+ an ensemble file for train jobs) for each job and mark it SUCCEEDED
    with one attempt, as the controller does after a worker succeeded. Returns name -> ensemble URI."""
    from backend.db.models import Attempt, Job
    from backend.states import utcnow
    from backend.stores import layout, open_store, put_json

    store = open_store(f"file://{store_root}")
    uris = {}
    with engine.begin() as conn:
        jobs = conn.execute(
            sa.select(Job.__table__).where(Job.__table__.c.campaign_id == campaign_id)
        ).all()
        now = utcnow()
        for j in jobs:
            if names is not None and j.name not in names:
                continue
            prefix = layout.job_prefix(f"c{campaign_id}", f"{j.name}-{j.id}")
            js = store.child(prefix)
            artifacts = {}
            if j.kind == "train":
                artifacts["ensemble"] = js.put_bytes(
                    f"{layout.artifacts_prefix(1)}/ensemble.npz", b"weights"
                )
                uris[j.name] = artifacts["ensemble"]
            summary = (
                {"task": j.task}
                if j.kind == "train"
                else {"mu_hat": 1.0, "sigma": 0.3, "kind": j.kind}
            )
            put_json(js, layout.result_key(1), {"artifacts": artifacts, "summary": summary})
            conn.execute(
                sa.update(Job.__table__)
                .where(Job.__table__.c.id == j.id)
                .values(
                    status="SUCCEEDED",
                    uri=store.uri_for(prefix),
                    current_attempt=1,
                    finished_at=now,
                )
            )
            conn.execute(
                sa.insert(Attempt.__table__).values(
                    job_id=j.id,
                    attempt_no=1,
                    status="SUCCEEDED",
                    launcher="local",
                    created_at=now,
                    launched_at=now,
                    ended_at=now,
                )
            )
    return uris


def _jobs(engine, campaign_id):
    from backend.db.models import Job

    with engine.connect() as conn:
        return {
            r.name: r
            for r in conn.execute(
                sa.select(Job.__table__).where(Job.__table__.c.campaign_id == campaign_id)
            )
        }


def test_second_campaign_reuses_every_job_and_records_where_from(plane):
    from backend import service
    from backend.db.models import Event

    engine, store = plane
    first = service.create_campaign_from_analysis(
        tiny_config(),
        analysis={"name": "a", "path": "/a.yaml", "file_hash": "1" * 64},
        engine=engine,
    )
    _finish_like_a_worker(engine, store, first)
    old = _jobs(engine, first)
    second = service.create_campaign_from_analysis(
        tiny_config(),
        analysis={"name": "a", "path": "/a.yaml", "file_hash": "1" * 64},
        engine=engine,
    )
    new = _jobs(engine, second)
    assert set(new) == set(old)
    for name, job in new.items():
        assert job.status == "SUCCEEDED", name
        assert job.spec["cached_from"] == old[name].id
        assert job.spec["cache_key"] == old[name].spec["cache_key"]
        assert (
            job.uri == old[name].uri and job.current_attempt == 1
        )  # dependants read the same result.json
    with engine.connect() as conn:
        events = conn.execute(
            sa.select(Event.__table__).where(
                Event.__table__.c.campaign_id == second, Event.__table__.c.reason == "cached"
            )
        ).all()
    assert {e.detail["cached_from"] for e in events} == {j.id for j in old.values()}
    progress = service.campaign_progress(second, engine=engine)
    assert all(k["reused"] == k["total"] == k["done"] for k in progress["kinds"].values())
    assert service.campaign_analysis(second, engine=engine)["reused"] == sorted(new)
    # the copied summaries make the reused fit visible like a fit that ran
    fits = {f["job_name"]: f for f in service.fit_results(second, engine=engine)}
    assert fits["fit"]["mu_hat"] == 1.0 and fits["fit"]["sigma"] == 0.3
    # nothing left to do: the next controller pass settles the campaign as SUCCEEDED
    service.request_launch(second, engine=engine)
    from backend.controller import Controller

    Controller(engine, f"file://{store}", {}).tick()
    assert service.get_campaign(second, engine=engine).summary.status == "SUCCEEDED"
    # a third campaign's reuse points at the job that actually ran, not at the copy
    third = service.create_campaign_from_analysis(tiny_config(), engine=engine)
    assert {j.spec["cached_from"] for j in _jobs(engine, third).values()} == {
        j.id for j in old.values()
    }


def test_deleted_artifacts_are_not_reused(plane):
    from backend import service
    from backend.stores.local import path_from_uri

    engine, store = plane
    first = service.create_campaign_from_analysis(tiny_config(), engine=engine)
    uris = _finish_like_a_worker(engine, store, first)
    path_from_uri(uris["train-S_vs_B-g0-m0-1"]).unlink()  # someone cleaned the store
    second = service.create_campaign_from_analysis(tiny_config(), engine=engine)
    new = _jobs(engine, second)
    assert new["train-S_vs_B-g0-m0-1"].status == "PENDING"
    assert "cached_from" not in new["train-S_vs_B-g0-m0-1"].spec
    # its fit-stage jobs consume that ensemble, so they wait for it; other trainings are reused
    assert new["train-S_vs_B-g0-m2-3"].status == "SUCCEEDED"
    assert new["fit"].status == "SUCCEEDED"  # same key: the old fit's result is still there
    # without reuse, nothing is reused
    third = service.create_campaign_from_analysis(tiny_config(), reuse=False, engine=engine)
    assert {j.status for j in _jobs(engine, third).values()} == {"PENDING"}


def test_only_succeeded_jobs_are_sources_and_plan_preview_matches(plane):
    from backend import service

    engine, store = plane
    first = service.create_campaign_from_analysis(tiny_config(), engine=engine)
    done = {"train-S_vs_B-g0-m0-1", "train-S_vs_B-g0-m2-3"}
    _finish_like_a_worker(engine, store, first, names=done)
    plan = service.analysis_plan(tiny_config(), engine=engine)
    assert plan["reused"] == sorted(done)
    assert plan["n_jobs"] == len(_jobs(engine, first))
    changed = tiny_config()
    changed["fit"]["mu_true"] = 0.5  # fit-stage change only: both trainings still reused
    assert service.analysis_plan(changed, engine=engine)["reused"] == sorted(done)
    second = service.create_campaign_from_analysis(changed, engine=engine)
    new = _jobs(engine, second)
    assert {n for n, j in new.items() if j.status == "SUCCEEDED"} == done
    # the estimate counts only the jobs that will run
    c1, c2 = service.get_campaign(first, engine=engine), service.get_campaign(second, engine=engine)
    assert c2.summary.estimate_gpu_hours <= c1.summary.estimate_gpu_hours
