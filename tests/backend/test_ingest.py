"""Store -> database ingest: cursors, idempotence, member mapping, results (SQLite + PostgreSQL)."""

from __future__ import annotations

import math
import time

from sqlmodel import Session, select

from backend import ingest
from backend.db.models import (
    Artifact,
    Attempt,
    Campaign,
    FitResult,
    Job,
    MetricPoint,
    ResourceSample,
)
from backend.states import JobStatus
from backend.stores import layout, open_store, put_json
from backend.stores.base import append_segment, encode_jsonl


def setup_job(session, kind="train", members=(4, 5)):
    camp = Campaign(name="c", config_hash="h")
    session.add(camp)
    session.flush()
    job = Job(
        campaign_id=camp.id,
        name="j",
        kind=kind,
        members=list(members),
        status=JobStatus.RUNNING,
        current_attempt=1,
    )
    session.add(job)
    session.flush()
    att = Attempt(job_id=job.id, attempt_no=1, launcher="local", status=JobStatus.RUNNING)
    session.add(att)
    session.commit()
    return job, att


def metric(member, step, name="val_loss", value=None):
    return {
        "member": member,
        "step": step,
        "epoch": None,
        "name": name,
        "value": value if value is not None else 1.0 / step + member,
    }


def test_ingest_is_idempotent_and_maps_pack_members_to_ensemble_members(engine, tmp_path):
    store = open_store((tmp_path / "s").as_uri(), create=True).child("job")
    append_segment(store, layout.metrics_prefix(1), encode_jsonl([metric(0, 10), metric(1, 10)]))
    append_segment(
        store,
        layout.metrics_prefix(1),
        encode_jsonl([metric(0, 20), metric(1, 20, value=math.nan), {"garbage": True}]),
    )
    t = time.time()
    append_segment(
        store,
        layout.resources_prefix(1),
        encode_jsonl([{"time": t, "cpu_percent": 50.0, "rss_bytes": 123, "gpus": []}]),
    )
    append_segment(store, layout.heartbeat_prefix(1), b'{"t": 1, "step": 20}', suffix=".json")
    with Session(engine, expire_on_commit=False) as s:
        job, att = setup_job(s)
        rep = ingest.ingest_attempt(s, job, att, store)
        s.commit()
        assert (rep.metrics, rep.resources, rep.heartbeats, rep.skipped) == (3, 1, 1, 2)
        assert rep.last_beat == {"t": 1, "step": 20}
        assert att.ingest_cursor == {"metrics": 2, "resources": 1, "heartbeat": 1}
        assert att.last_heartbeat is not None and job.last_heartbeat == att.last_heartbeat
        # nothing new: nothing inserted; and with the cursor lost, re-ingest inserts nothing twice
        assert ingest.ingest_attempt(s, job, att, store).metrics == 0
        att.ingest_cursor = {}
        s.add(att)
        s.commit()
        rep = ingest.ingest_attempt(s, job, att, store)
        s.commit()
        rows = s.exec(select(MetricPoint).order_by(MetricPoint.step, MetricPoint.member)).all()
        # pack-local members 0, 1 are the job's ensemble members 4, 5
        assert [(r.member, r.step, r.value) for r in rows] == [
            (4, 10, 0.1),
            (5, 10, 1.1),
            (4, 20, 0.05),
        ]
        assert len(s.exec(select(ResourceSample)).all()) == 1
        (res,) = s.exec(select(ResourceSample)).all()
        assert abs(res.time.timestamp() - t) < 1e-3 and res.cpu_percent == 50.0
        # a new segment is picked up after the cursor
        append_segment(store, layout.metrics_prefix(1), encode_jsonl([metric(0, 30)]))
        assert ingest.ingest_attempt(s, job, att, store).metrics == 1
        s.commit()
        assert ingest.count_rows(s, MetricPoint, job.id) == 4


def test_result_ingest_records_artifacts_and_fit_results(engine, tmp_path):
    store = open_store((tmp_path / "s").as_uri(), create=True).child("job")
    ws = store.put_bytes("attempts/1/artifacts/workspace.json", b"{}")
    put_json(
        store,
        layout.result_key(1),
        {
            "status": "succeeded",
            "artifacts": {"workspace": ws},
            "summary": {"mu_hat": 1.02, "sigma": 0.11, "nll": 3.0},
        },
    )
    with Session(engine, expire_on_commit=False) as s:
        job, att = setup_job(s, kind="fit", members=())
        ingest.ingest_result(s, job, att, store)
        ingest.ingest_result(s, job, att, store)  # twice: still one row each
        s.commit()
        kinds = sorted(a.kind for a in s.exec(select(Artifact)))
        assert kinds == ["result", "workspace"]
        (ws_row,) = [a for a in s.exec(select(Artifact)) if a.kind == "workspace"]
        assert ws_row.uri == ws and ws_row.size_bytes == 2 and ws_row.attempt_no == 1
        (fr,) = s.exec(select(FitResult)).all()
        assert (fr.mu_hat, fr.sigma, fr.kind) == (1.02, 0.11, "fit") and fr.payload["nll"] == 3.0
    assert ingest.read_exit(store, 1) is None and ingest.read_result(store, 2) is None
