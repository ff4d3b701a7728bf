"""The artifact-store interface shared by every backend (local filesystem, GCS, ...).

A store is rooted at a URI (``file:///abs/path`` or later ``gs://bucket/prefix``); keys are
'/'-separated paths relative to that root. Objects are written whole and atomically, so a
reader never sees a half-written object; "appending" means writing a new numbered segment
(immutable objects is what object stores such as GCS offer, so the local store behaves the
same way).
"""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable


class StoreError(Exception):
    """Any failure of an artifact store, naming the URI or key that caused it."""


class ObjectNotFound(StoreError, KeyError):
    """The requested key does not exist in the store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "object not found"


@runtime_checkable
class ArtifactStore(Protocol):
    """What the controller and the workers need from a store; nothing more."""

    @property
    def uri(self) -> str:
        """The root URI of this store (no trailing slash)."""
        ...

    def uri_for(self, key: str) -> str:
        """The absolute URI of ``key`` (which need not exist)."""
        ...

    def child(self, prefix: str) -> ArtifactStore:
        """A store of the same kind rooted at ``<root>/<prefix>``."""
        ...

    def put_bytes(self, key: str, data: bytes) -> str:
        """Write ``data`` at ``key`` atomically (replacing any old object); return its URI."""
        ...

    def put_new(self, key: str, data: bytes) -> bool:
        """Write ``data`` at ``key`` only if no object is there; return whether it was written."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """Read the object at ``key``; raise :class:`ObjectNotFound` if absent."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]:
        """All object keys under ``prefix`` (a folder-like prefix), sorted."""
        ...

    def delete(self, key: str) -> None:
        """Remove one object; absent objects are ignored."""
        ...


# ---------------------------------------------------------------- helpers over any store


def _key_problem(key: str) -> str | None:
    """Why ``key`` (already stripped of trailing slashes) is not a relative key, else None."""
    if not isinstance(key, str):
        return f"expected a string, got {type(key).__name__}"
    if key.startswith("/"):
        return "absolute; keys are relative to the store root"
    if any(c in key for c in "\x00\r\n"):
        return "contains a NUL, CR or LF character"
    if not key or any(p in ("", ".", "..") for p in key.split("/")):
        return "use a relative path without '.', '..' or '//'"
    return None


def check_key(key: str) -> str:
    """A normalised store key (trailing slashes dropped). Refuses absolute keys, empty, '.',
    '..' and '//' parts and NUL / CR / LF, so that no key names anything outside the store's
    root; a store that maps keys onto a filesystem also checks where the path resolves to."""
    problem = _key_problem(key.rstrip("/") if isinstance(key, str) else key)
    if problem is not None:
        raise StoreError(f"invalid store key {key!r}: {problem}")
    return key.rstrip("/")


def check_prefix(prefix: str) -> str:
    """A listing prefix: '' (everything), a folder ('a/b/') or a partial name ('a/b/seg-');
    the same rules as keys (no absolute prefix, no '.', '..' or '//' part)."""
    if prefix == "":
        return prefix
    problem = _key_problem(prefix[:-1] if prefix.endswith("/") else prefix)
    if problem is not None:
        raise StoreError(f"invalid store prefix {prefix!r}: {problem}")
    return prefix


SEGMENT_DIGITS = 8


def segment_key(prefix: str, seq: int, suffix: str) -> str:
    """Key of segment number ``seq`` under ``prefix`` (zero-padded so keys sort by number)."""
    return f"{prefix.rstrip('/')}/{seq:0{SEGMENT_DIGITS}d}{suffix}"


def segment_seq(key: str) -> int | None:
    """The sequence number encoded in a segment key, or None for a non-segment name."""
    name = key.rsplit("/", 1)[-1]
    stem = name.split(".", 1)[0]
    return int(stem) if stem.isdigit() else None


def list_segments(store: ArtifactStore, prefix: str) -> list[tuple[int, str]]:
    """(seq, key) of every numbered segment directly under ``prefix``, in order."""
    prefix = prefix.rstrip("/") + "/"
    out = []
    for key in store.list(prefix):
        rest = key[len(prefix) :]
        if "/" in rest:
            continue
        seq = segment_seq(rest)
        if seq is not None:
            out.append((seq, key))
    out.sort()
    return out


def append_segment(
    store: ArtifactStore,
    prefix: str,
    data: bytes,
    *,
    suffix: str = ".jsonl",
    start: int | None = None,
) -> tuple[int, str]:
    """Write ``data`` as the next numbered segment under ``prefix``; return (seq, key).

    ``start`` is the caller's guess of the next free number (a writer that owns the prefix
    keeps a counter and avoids a listing); the exclusive create makes concurrent writers safe.
    """
    seq = (
        start
        if start is not None
        else (max((s for s, _ in list_segments(store, prefix)), default=0) + 1)
    )
    while True:
        key = segment_key(prefix, seq, suffix)
        if store.put_new(key, data):
            return seq, key
        seq += 1


def put_json(store: ArtifactStore, key: str, obj: Any) -> str:
    return store.put_bytes(key, json.dumps(obj, sort_keys=True, indent=1).encode())


def get_json(store: ArtifactStore, key: str) -> Any:
    raw = store.get_bytes(key)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise StoreError(f"{store.uri_for(key)}: not valid JSON ({exc})") from exc


def encode_jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()


def decode_jsonl(data: bytes, *, where: str = "") -> list[dict]:
    out = []
    for i, line in enumerate(data.decode().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise StoreError(f"{where}: line {i} is not valid JSON ({exc})") from exc
    return out
