"""Every store key stays inside the store's root (issue 16, finding 8).

`LocalStore.list("../")` used to walk the folder above the root and return its files. Now
every operation (list, get, put, put_new, exists, delete, child, path_for) refuses absolute
keys and '.', '..' or '//' parts, and the local store resolves each path and refuses one that
leaves the root through a symbolic link. The GCS store applies the same key rules
(tests/gcp/test_gcs_store_keys.py).
"""

from __future__ import annotations

import os

import pytest

from backend.stores import StoreError, open_store
from backend.stores.base import check_key, check_prefix
from backend.stores.local import LocalStore


@pytest.fixture
def layout(tmp_path):
    """<tmp>/outside/secret.txt next to the store root <tmp>/store, which holds one object."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret")
    root = tmp_path / "store"
    store = open_store(root.as_uri(), create=True)
    store.put_bytes("campaigns/c/spec.json", b"{}")
    return store, root, outside


def _all_operations(store, key):
    return {
        "list": lambda: store.list(key),
        "get_bytes": lambda: store.get_bytes(key),
        "put_bytes": lambda: store.put_bytes(key, b"x"),
        "put_new": lambda: store.put_new(key, b"x"),
        "exists": lambda: store.exists(key),
        "delete": lambda: store.delete(key),
        "child": lambda: store.child(key),
        "path_for": lambda: store.path_for(key),
        "uri_for": lambda: store.uri_for(key),
    }


def test_list_dotdot_no_longer_returns_files_outside_the_root(layout):
    store, _root, outside = layout
    with pytest.raises(StoreError, match=r"invalid store prefix '\.\./'.*'\.\.'"):
        store.list("../")
    for prefix in ("..", "../outside/", "campaigns/../../", "/", "/etc/", "a//b"):
        with pytest.raises(StoreError, match="invalid store prefix"):
            store.list(prefix)
    assert store.list("") == ["campaigns/c/spec.json"]
    assert (outside / "secret.txt").read_text() == "top secret"


@pytest.mark.parametrize(
    "key",
    [
        "../outside/secret.txt",
        "campaigns/../../outside/secret.txt",
        "/etc/passwd",
        "./x",
        "a//b",
        "",
    ],
)
def test_every_operation_refuses_keys_that_are_not_relative_paths(layout, key):
    store, root, outside = layout
    for name, op in _all_operations(store, key).items():
        if name == "list" and key == "":
            assert op() == ["campaigns/c/spec.json"]  # the empty prefix lists everything
            continue
        with pytest.raises(StoreError, match=r"invalid store (key|prefix)") as err:
            op()
        assert repr(key) in str(err.value), name  # the message names the key
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert not (root.parent / "x").exists()


def test_symlinks_out_of_the_root_are_refused_for_every_operation(layout):
    store, root, outside = layout
    os.symlink(outside, root / "linkdir")  # a folder link leading out
    os.symlink(outside / "secret.txt", root / "linkfile")  # a file link leading out
    for key in ("linkdir/secret.txt", "linkdir/new.txt", "linkfile"):
        for name, op in _all_operations(store, key).items():
            if name in ("uri_for", "list"):
                continue  # naming only / a prefix: checked below
            with pytest.raises(StoreError, match="leads outside the store root") as err:
                op()
            assert str(outside) in str(err.value), name  # where it resolves to
    with pytest.raises(StoreError, match="leads outside the store root"):
        store.list("linkdir/")
    with pytest.raises(StoreError, match="leads outside the store root"):
        store.child("linkdir")
    # the whole listing shows no object of the outside folder and no link out
    assert store.list() == ["campaigns/c/spec.json"]
    assert store.list("link") == []
    # nothing was written, replaced or deleted outside
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "top secret"


def test_a_child_store_stays_inside_its_parents_root(layout):
    store, root, outside = layout
    child = store.child("campaigns/c")
    assert child.get_bytes("spec.json") == b"{}"
    os.symlink(outside, root / "campaigns" / "c" / "out")
    with pytest.raises(StoreError, match="leads outside the store root"):
        child.get_bytes("out/secret.txt")
    with pytest.raises(StoreError, match="invalid store key"):
        child.get_bytes("../../../outside/secret.txt")


def test_links_inside_the_root_and_ordinary_keys_still_work(layout):
    store, root, _outside = layout
    os.symlink(root / "campaigns" / "c" / "spec.json", root / "alias.json")
    assert store.get_bytes("alias.json") == b"{}" and store.exists("alias.json")
    assert store.list() == ["alias.json", "campaigns/c/spec.json"]
    assert store.list("campaigns/c/sp") == ["campaigns/c/spec.json"]
    store.put_bytes("campaigns/c/attempts/1/exit.json", b"0")
    assert store.list("campaigns/c/attempts/") == ["campaigns/c/attempts/1/exit.json"]
    assert check_key("a/b/") == "a/b" and check_prefix("a/b/") == "a/b/"
    # a store rooted at a path that is itself a link works (its resolved root is the jail)
    os.symlink(root, root.parent / "store-link")
    linked = LocalStore(root.parent / "store-link")
    assert linked.get_bytes("campaigns/c/spec.json") == b"{}"


def test_nul_cr_lf_in_keys_are_refused(layout):
    store, _root, _outside = layout
    for key in ("a\x00b", "a\nb", "a\rb"):
        with pytest.raises(StoreError, match="NUL, CR or LF"):
            store.put_bytes(key, b"x")
