"""The GCS store applies the local store's key rules (issue 16, finding 8), on the emulator.

GCS itself would take ``a/../b`` as a literal object name, and the store used to strip a
leading '/' from keys and listing prefixes; now every operation refuses absolute keys and '.',
'..' or '//' parts, so a key names the same object in every store.
"""

from __future__ import annotations

import pytest

from backend.stores import StoreError


@pytest.mark.parametrize("key", ["../x.json", "a/../../x.json", "/abs.json", "./x", "a//b", ""])
def test_every_operation_refuses_keys_that_are_not_relative_paths(gcs_store, key):
    gcs_store.put_bytes("a/one.json", b"1")
    ops = {
        "get_bytes": lambda: gcs_store.get_bytes(key),
        "put_bytes": lambda: gcs_store.put_bytes(key, b"x"),
        "put_new": lambda: gcs_store.put_new(key, b"x"),
        "exists": lambda: gcs_store.exists(key),
        "delete": lambda: gcs_store.delete(key),
        "child": lambda: gcs_store.child(key),
        "uri_for": lambda: gcs_store.uri_for(key),
    }
    for name, op in ops.items():
        with pytest.raises(StoreError, match="invalid store key") as err:
            op()
        assert repr(key) in str(err.value), name
    assert gcs_store.list() == ["a/one.json"]  # nothing was written


def test_listing_prefixes_follow_the_same_rules(gcs_store):
    gcs_store.put_bytes("a/one.json", b"1")
    gcs_store.put_bytes("a/two.json", b"2")
    for prefix in ("../", "..", "/", "/a/", "a/../", "a//"):
        with pytest.raises(StoreError, match="invalid store prefix"):
            gcs_store.list(prefix)
    assert gcs_store.list("") == ["a/one.json", "a/two.json"]
    assert gcs_store.list("a/") == ["a/one.json", "a/two.json"]
    assert gcs_store.list("a/t") == ["a/two.json"]
    assert gcs_store.child("a").list() == ["one.json", "two.json"]
