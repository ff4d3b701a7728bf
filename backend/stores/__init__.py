"""Artifact stores: one interface (:mod:`backend.stores.base`), one module per backend.

``open_store(uri)`` picks the backend by URI scheme from the explicit :data:`REGISTRY`; a
new backend (e.g. ``gs`` in ``gcs.py``) registers itself by adding one entry here, imported
lazily so the core never needs its SDK.
"""

from __future__ import annotations

import importlib
from urllib.parse import urlparse

from backend.stores.base import (
    ArtifactStore,
    ObjectNotFound,
    StoreError,
    append_segment,
    decode_jsonl,
    encode_jsonl,
    get_json,
    list_segments,
    put_json,
)

# scheme -> "module:factory"; the factory is called as factory(uri, create=bool)
REGISTRY: dict[str, str] = {
    "file": "backend.stores.local:LocalStore",
    "gs": "backend.stores.gcs:GCSStore",
}


def scheme_of(uri: str) -> str:
    if uri.startswith("/"):
        return "file"
    scheme = urlparse(uri).scheme
    if not scheme:
        raise StoreError(
            f"{uri!r}: a store URI needs a scheme (file:///abs/path, gs://bucket/prefix)"
        )
    return scheme


def open_store(uri: str, *, create: bool = False) -> ArtifactStore:
    """Open the store rooted at ``uri``.

    With ``create=False`` (the default) a local root that does not exist is an error, so a
    mistyped path fails loudly instead of silently starting an empty store.
    """
    scheme = scheme_of(uri)
    target = REGISTRY.get(scheme)
    if target is None:
        raise StoreError(
            f"{uri}: no artifact store for scheme {scheme!r} (known: {sorted(REGISTRY)})"
        )
    module_name, factory_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise StoreError(
            f"{uri}: the {scheme!r} store is not available in this build ({exc})"
        ) from exc
    return getattr(module, factory_name)(uri.rstrip("/") if uri != "/" else uri, create=create)


def join_uri(base: str, *parts: str) -> str:
    """Join URI path segments with single slashes."""
    out = base.rstrip("/")
    for p in parts:
        out += "/" + p.strip("/")
    return out


__all__ = [
    "REGISTRY",
    "ArtifactStore",
    "ObjectNotFound",
    "StoreError",
    "append_segment",
    "decode_jsonl",
    "encode_jsonl",
    "get_json",
    "join_uri",
    "list_segments",
    "open_store",
    "put_json",
    "scheme_of",
]
