"""GCSStore against the gcp-storage-emulator, checked against the local store's behaviour."""

from __future__ import annotations

import os

import pytest

from backend.stores import ObjectNotFound, StoreError, append_segment, list_segments, open_store
from backend.stores.base import ArtifactStore, get_json, put_json
from backend.stores.gcs import GCSStore, parse_gs_uri
from backend.stores.local import LocalStore


def _exercise(store) -> dict:
    """The same sequence of calls on any store; returns everything observable."""
    out = {}
    out["put"] = store.put_bytes("a/b/one.json", b'{"x": 1}').rsplit("/", 3)[-3:]
    store.put_bytes("a/b/one.json", b'{"x": 2}')  # replace
    store.put_bytes("a/two.bin", bytes(range(256)))
    store.put_bytes("c.txt", b"")
    out["new_taken"] = store.put_new("a/two.bin", b"other")
    out["new_free"] = store.put_new("a/three.bin", b"3")
    out["get"] = [store.get_bytes(k) for k in ("a/b/one.json", "a/two.bin", "c.txt", "a/three.bin")]
    out["exists"] = [store.exists(k) for k in ("a/b/one.json", "a/b", "nope")]
    out["list_all"] = store.list()
    out["list_a"] = store.list("a/")
    out["list_partial"] = store.list("a/t")
    child = store.child("a")
    out["child"] = (child.list(), child.get_bytes("b/one.json"), child.uri == store.uri + "/a")
    out["segs"] = [append_segment(store, "m", f"{i}".encode(), suffix=".jsonl") for i in range(3)]
    out["list_segs"] = list_segments(store, "m")
    store.delete("a/two.bin")
    store.delete("never/there")
    out["after_delete"] = store.list()
    put_json(store, "j.json", {"k": [1, 2]})
    out["json"] = get_json(store, "j.json")
    return out


def test_gcs_store_behaves_like_the_local_store(gcs_store, tmp_path):
    assert isinstance(gcs_store, ArtifactStore)
    gcs = _exercise(gcs_store)
    local = _exercise(LocalStore(tmp_path / "root", create=True))
    assert gcs == local
    assert gcs["new_taken"] is False and gcs["new_free"] is True
    assert gcs["get"][0] == b'{"x": 2}' and gcs["get"][1] == bytes(range(256))
    assert [s for s, _ in gcs["list_segs"]] == [1, 2, 3]


def test_uris_missing_objects_and_bad_keys(gcs_store):
    bucket, prefix = parse_gs_uri(gcs_store.uri)
    assert bucket == "b" and gcs_store.uri == f"gs://b/{prefix}"
    assert gcs_store.uri_for("x/y.json") == f"gs://b/{prefix}/x/y.json"
    with pytest.raises(ObjectNotFound, match=r"gs://b/.*/missing.json: no such object"):
        gcs_store.get_bytes("missing.json")
    for bad in ("", "a//b", "../x", "a/./b"):
        with pytest.raises(StoreError, match="invalid store key"):
            gcs_store.put_bytes(bad, b"x")
    for bad_uri in ("gs://", "s3://b/x", "gs://b/a/../c"):
        with pytest.raises(StoreError):
            GCSStore(bad_uri)
    assert GCSStore("gs://b").uri == "gs://b"


def test_open_store_resolves_gs_uris_and_create_makes_the_bucket(gcs_emulator):
    store = open_store("gs://b/reg-test/")
    assert isinstance(store, GCSStore) and store.uri == "gs://b/reg-test"
    fresh = open_store("gs://fresh-bucket-1/x", create=True)
    fresh.put_bytes("k", b"v")
    assert open_store("gs://fresh-bucket-1/x").get_bytes("k") == b"v"


def test_large_objects_go_up_in_resumable_chunks(proxied_store, flaky_proxy, monkeypatch):
    import backend.stores.gcs as gcs

    monkeypatch.setattr(gcs, "RESUMABLE_THRESHOLD", 256 * 1024)
    monkeypatch.setattr(gcs, "CHUNK_SIZE", 256 * 1024)
    data = os.urandom(1024 * 1024 + 123)  # 5 chunks, the last one short
    proxied_store.put_bytes("ckpt/00000001.ckpt", data)
    assert proxied_store.get_bytes("ckpt/00000001.ckpt") == data
    starts = [
        line
        for line in flaky_proxy.lines
        if line.startswith("POST") and "uploadType=resumable" in line
    ]
    puts = [line for line in flaky_proxy.lines if line.startswith("PUT")]
    assert len(starts) == 1 and len(puts) == 5, flaky_proxy.lines
    proxied_store.put_bytes("small.json", b"{}")  # below the threshold: one multipart request
    assert sum("uploadType=multipart" in line for line in flaky_proxy.lines) == 1


def test_transient_errors_are_retried_with_backoff(proxied_store, flaky_proxy):
    flaky_proxy.fail_every = 2  # every second request answers 503
    for i in range(4):
        proxied_store.put_bytes(f"r/{i}.json", f"{i}".encode())
    assert [proxied_store.get_bytes(f"r/{i}.json") for i in range(4)] == [b"0", b"1", b"2", b"3"]
    assert proxied_store.list("r/") == [f"r/{i}.json" for i in range(4)]
    assert proxied_store.exists("r/0.json")
    proxied_store.delete("r/0.json")
    assert flaky_proxy.failed >= 5  # the calls above really met errors and got through


def test_a_store_that_stays_down_fails_with_the_uri_in_the_message(proxied_store, flaky_proxy):
    short = GCSStore(proxied_store.uri, client=proxied_store.client, retry_deadline_s=1.5)
    flaky_proxy.fail_all = True
    with pytest.raises(StoreError, match=r"gs://b/p-.*/k.json: upload failed"):
        short.put_bytes("k.json", b"x")


def test_a_resumable_upload_survives_failed_chunks(proxied_store, flaky_proxy, monkeypatch):
    import backend.stores.gcs as gcs

    monkeypatch.setattr(gcs, "RESUMABLE_THRESHOLD", 256 * 1024)
    monkeypatch.setattr(gcs, "CHUNK_SIZE", 256 * 1024)
    data = os.urandom(768 * 1024 + 5)
    flaky_proxy.fail_every = 3
    proxied_store.put_bytes("ckpt/big.ckpt", data)
    flaky_proxy.fail_every = 0
    assert proxied_store.get_bytes("ckpt/big.ckpt") == data
    assert flaky_proxy.failed >= 1
