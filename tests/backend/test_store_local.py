"""The local artifact store: atomic writes, exclusive segments, listing, URIs, errors."""

from __future__ import annotations

import os
import threading

import pytest

from backend.stores import (
    ObjectNotFound,
    StoreError,
    append_segment,
    layout,
    list_segments,
    open_store,
)
from backend.stores.base import decode_jsonl, encode_jsonl, get_json, put_json
from backend.stores.local import LocalStore, path_from_uri


def test_put_get_exists_list_roundtrip(tmp_path):
    store = open_store(tmp_path.as_uri())
    uri = store.put_bytes("a/b/c.bin", b"\x00\x01payload")
    assert uri == (tmp_path / "a/b/c.bin").as_uri()
    assert store.get_bytes("a/b/c.bin") == b"\x00\x01payload"
    assert store.exists("a/b/c.bin") and not store.exists("a/b/zzz")
    store.put_bytes("a/x.txt", b"1")
    store.put_bytes("ab.txt", b"2")
    assert store.list("a/") == ["a/b/c.bin", "a/x.txt"]
    assert store.list("a") == ["a/b/c.bin", "a/x.txt", "ab.txt"]  # a plain prefix, not a folder
    assert store.list("nothing/") == []
    store.put_bytes("a/x.txt", b"replaced")
    assert store.get_bytes("a/x.txt") == b"replaced"
    store.delete("a/x.txt")
    store.delete("a/x.txt")  # absent: ignored
    assert not store.exists("a/x.txt")


def test_missing_object_and_bad_keys_name_the_problem(tmp_path):
    store = open_store(tmp_path.as_uri())
    with pytest.raises(ObjectNotFound, match="no such object") as err:
        store.get_bytes("jobs/j/spec.json")
    assert str(tmp_path / "jobs/j/spec.json") in str(err.value)
    for bad in ("../escape", "a/../b", "a//b", ""):
        with pytest.raises(StoreError, match="invalid store key"):
            store.put_bytes(bad, b"x")


def test_missing_root_is_a_clear_error_unless_created(tmp_path):
    missing = tmp_path / "no" / "store"
    with pytest.raises(StoreError, match="does not exist"):
        open_store(missing.as_uri())
    assert not missing.exists()
    store = open_store(missing.as_uri(), create=True)
    assert missing.is_dir() and store.uri == missing.as_uri()


def test_uri_parsing_and_registry_errors(tmp_path):
    assert path_from_uri("file:///abs/x/../y") == path_from_uri("/abs/y")
    with pytest.raises(StoreError, match="empty host"):
        path_from_uri("file://host/abs")
    with pytest.raises(StoreError, match="no artifact store for scheme 's3'"):
        open_store("s3://bucket/x")
    with pytest.raises(StoreError, match="needs a scheme"):
        open_store("relative/path")


def test_atomic_write_leaves_no_temp_files_and_readers_never_see_partial(tmp_path):
    store = LocalStore(tmp_path)
    big_a, big_b = b"a" * 2_000_000, b"b" * 2_000_000
    store.put_bytes("obj", big_a)
    seen: set[bytes] = set()
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            data = store.get_bytes("obj")
            seen.add(data[:1] + data[-1:] + bytes([len(data) == 2_000_000]))

    t = threading.Thread(target=reader)
    t.start()
    for i in range(20):
        store.put_bytes("obj", big_b if i % 2 else big_a)
    stop.set()
    t.join()
    assert seen <= {b"aa\x01", b"bb\x01"}  # whole old or whole new object, never mixed/short
    assert [p.name for p in tmp_path.iterdir()] == ["obj"]


def test_put_new_is_exclusive_and_segments_are_unique_under_concurrency(tmp_path):
    store = LocalStore(tmp_path)
    assert store.put_new("k", b"1") and not store.put_new("k", b"2")
    assert store.get_bytes("k") == b"1"
    keys: list[str] = []
    lock = threading.Lock()

    def writer(w):
        for i in range(25):
            _, key = append_segment(store, "m", encode_jsonl([{"w": w, "i": i}]))
            with lock:
                keys.append(key)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 100
    segs = list_segments(store, "m")
    assert [s for s, _ in segs] == list(range(1, 101))
    records = [r for _, k in segs for r in decode_jsonl(store.get_bytes(k))]
    assert sorted((r["w"], r["i"]) for r in records) == [
        (w, i) for w in range(4) for i in range(25)
    ]


def test_child_store_json_helpers_and_layout(tmp_path):
    root = open_store(tmp_path.as_uri())
    job = root.child(layout.job_prefix("camp", "job-1"))
    put_json(job, layout.SPEC, {"kind": "noop"})
    assert get_json(root, "campaigns/camp/jobs/job-1/spec.json") == {"kind": "noop"}
    assert job.uri == root.uri + "/campaigns/camp/jobs/job-1"
    job.put_bytes(layout.checkpoint_key(2, 30), b"x")
    job.put_bytes(layout.checkpoint_key(2, 4), b"y")
    assert [s for s, _ in list_segments(job, layout.checkpoints_prefix(2))] == [4, 30]
    root.put_bytes("bad.json", b"{not json")
    with pytest.raises(StoreError, match="bad.json: not valid JSON"):
        get_json(root, "bad.json")
    assert sorted(os.listdir(tmp_path)) == ["bad.json", "campaigns"]
