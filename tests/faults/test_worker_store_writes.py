"""The worker's segment writes under store failures, in process (what the outage tests found):

- a metric batch the store refuses stays buffered and goes out with the next flush;
- two threads flushing at once (the ticker, and the job thread before a checkpoint) never
  write the same segment number, even on a store whose exclusive create is not enforced
  (the GCS emulator ignores preconditions): during the emulator outage both waited on the
  same key, and the second upload replaced the first (two metric points were lost);
- a full local disk is a `StoreError` naming the path, and the old object stays.
"""

from __future__ import annotations

import errno
import threading
import time

import pytest

from backend.stores import StoreError, layout
from backend.stores.base import decode_jsonl
from backend.stores.local import LocalStore
from backend.worker import AttemptWriter


class NonExclusiveStore:
    """A store whose ``put_new`` overwrites (as the emulator does) and can be made to fail."""

    uri = "mem://x"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.objects: dict[str, bytes] = {}
        self.delay_s = delay_s
        self.failing = False

    def put_new(self, key: str, data: bytes) -> bool:
        if self.failing:
            raise StoreError(f"{key}: store unavailable")
        exists = key in self.objects  # checked first, then a slow upload: not atomic
        time.sleep(self.delay_s)
        if exists:
            return False
        self.objects[key] = data
        return True

    def points(self) -> list[int]:
        prefix = layout.metrics_prefix(1)
        return sorted(
            r["step"]
            for k, v in self.objects.items()
            if k.startswith(prefix)
            for r in decode_jsonl(v)
        )


def _point(step: int) -> dict:
    return {"member": -1, "step": step, "epoch": None, "name": "loss", "value": 1.0}


def test_a_refused_metric_batch_is_kept_for_the_next_flush():
    store = NonExclusiveStore()
    writer = AttemptWriter(store, 1)
    writer.add_metrics([_point(1), _point(2)])
    store.failing = True
    with pytest.raises(StoreError):
        writer.flush_metrics()
    writer.add_metrics([_point(3)])
    store.failing = False
    assert writer.flush_metrics() == 3
    assert store.points() == [1, 2, 3]


def test_concurrent_flushes_never_share_a_segment_number():
    store = NonExclusiveStore(delay_s=0.2)
    writer = AttemptWriter(store, 1)

    def flush(step: int) -> None:
        writer.add_metrics([_point(step)])
        writer.flush_metrics()

    threads = []
    for step in range(1, 5):  # each flush starts while the one before is still uploading
        threads.append(threading.Thread(target=flush, args=(step,)))
        threads[-1].start()
        time.sleep(0.02)
    for t in threads:
        t.join()
    assert store.points() == [1, 2, 3, 4]


def test_a_full_disk_is_a_store_error_and_the_old_object_stays(tmp_path, monkeypatch):
    import os

    store = LocalStore(tmp_path, create=True)
    store.put_bytes("a/obj", b"old")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(StoreError, match="cannot write .*/a/obj: .*No space left on device"):
        store.put_bytes("a/obj", b"new")
    with pytest.raises(StoreError, match="No space left on device"):
        store.put_new("a/other", b"x")
    assert store.get_bytes("a/obj") == b"old"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["obj"]  # no temporary file left
