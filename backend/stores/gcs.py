"""Artifact store on Google Cloud Storage (``gs://bucket/prefix``).

GCS objects are immutable and every upload is atomic (readers see the old object or the whole
new one), which is exactly the store contract; "append" is a new numbered segment. Large
payloads (checkpoints, ensembles) go up as resumable uploads in chunks, so a dropped connection
resumes instead of restarting. Every call retries transient errors (429, 5xx, connection
resets) with exponential backoff. ``put_new`` asks GCS for an exclusive create
(``if_generation_match=0``) and also checks for the object first, so it stays correct on
emulators that ignore preconditions as long as each segment prefix has one writer (which the
layout guarantees: one worker per attempt folder).

The SDK is imported here only, so the core imports without google-cloud-storage installed.
With ``STORAGE_EMULATOR_HOST`` set, the client talks to that emulator anonymously.

Keys and listing prefixes follow the same rules as the local store (`check_key`,
`check_prefix`: relative, no '.', '..' or '//' part), although GCS itself would take
``a/../b`` as a literal object name: a key means the same object in every store.
"""

from __future__ import annotations

import io
import threading
from typing import Any
from urllib.parse import urlparse

from backend.settings import get_settings
from backend.stores.base import ObjectNotFound, StoreError, check_key, check_prefix

SCHEME = "gs"
RESUMABLE_THRESHOLD = 8 * 1024 * 1024  # above this, upload in resumable chunks
CHUNK_SIZE = 8 * 1024 * 1024  # multiple of 256 KiB, as GCS requires

_client_lock = threading.Lock()
_clients: dict[str, Any] = {}


def parse_gs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ("bucket", "a/b"); the prefix has no leading/trailing slash."""
    parsed = urlparse(uri)
    if parsed.scheme != SCHEME or not parsed.netloc:
        raise StoreError(f"{uri!r}: not a gs://bucket[/prefix] URI")
    prefix = parsed.path.strip("/")
    if any(p in (".", "..") for p in prefix.split("/")) or "//" in parsed.path.rstrip("/"):
        raise StoreError(f"{uri!r}: the prefix must not contain '.', '..' or '//'")
    return parsed.netloc, prefix


def default_client() -> Any:
    """One storage client per process and emulator host (clients are thread-safe and pool
    connections, so sharing one is cheaper than one per store)."""
    gcs = get_settings().gcs
    host = gcs.emulator_host or ""
    with _client_lock:
        client = _clients.get(host)
        if client is None:
            import google.cloud.storage as storage

            if host:
                from google.auth.credentials import AnonymousCredentials

                client = storage.Client(
                    project=gcs.project or "nsbi-emulator", credentials=AnonymousCredentials()
                )
            else:
                client = storage.Client(project=gcs.project)
            _clients[host] = client
        return client


def _errors() -> tuple[type[Exception], ...]:
    """Exceptions that mean "the store call failed" (API errors, exhausted retries, I/O)."""
    import requests
    from google.api_core import exceptions as gexc
    from google.cloud.storage.exceptions import InvalidResponse

    return (gexc.GoogleAPIError, InvalidResponse, requests.RequestException, ConnectionError)


def transient_retry(deadline_s: float | None = None) -> Any:
    """Exponential backoff (0.5 s doubling to 16 s) on 408/429/5xx and connection errors."""
    from google.api_core import retry as api_retry

    try:  # storage's own predicate also covers connection resets and 408
        from google.cloud.storage.retry import _should_retry as predicate
    except ImportError:  # pragma: no cover - a future SDK without the private helper
        predicate = api_retry.if_transient_error
    return api_retry.Retry(
        predicate=predicate,
        initial=0.5,
        maximum=16.0,
        multiplier=2.0,
        timeout=get_settings().gcs.retry_deadline_s if deadline_s is None else deadline_s,
    )


class GCSStore:
    """An :class:`~backend.stores.base.ArtifactStore` over ``gs://bucket/prefix``."""

    def __init__(
        self,
        uri: str,
        create: bool = False,
        *,
        client: Any = None,
        retry_deadline_s: float | None = None,
    ) -> None:
        self.bucket_name, self.prefix = parse_gs_uri(uri)
        self._client = client
        self._retry_deadline_s = retry_deadline_s
        self._retry = None
        if create:
            self._ensure_bucket()

    # -- plumbing
    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = default_client()
        return self._client

    @property
    def retry(self) -> Any:
        if self._retry is None:
            self._retry = transient_retry(self._retry_deadline_s)
        return self._retry

    def _bucket(self) -> Any:
        return self.client.bucket(self.bucket_name)

    def _name(self, key: str) -> str:
        key = check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, what: str, key: str, exc: Exception) -> StoreError:
        return StoreError(
            f"{self.uri_for(key) if key else self.uri}: {what} failed: {type(exc).__name__}: {exc}"
        )

    def _ensure_bucket(self) -> None:
        from google.api_core import exceptions as gexc

        try:
            if self.client.lookup_bucket(self.bucket_name, retry=self.retry) is None:
                self.client.create_bucket(self.bucket_name, retry=self.retry)
        except gexc.Conflict:
            pass  # created concurrently
        except _errors() as exc:
            raise StoreError(
                f"gs://{self.bucket_name}: cannot look up or create the bucket: {exc}"
            ) from exc

    # -- naming
    @property
    def uri(self) -> str:
        return (
            f"gs://{self.bucket_name}/{self.prefix}" if self.prefix else f"gs://{self.bucket_name}"
        )

    def uri_for(self, key: str) -> str:
        return f"gs://{self.bucket_name}/{self._name(key)}"

    def child(self, prefix: str) -> GCSStore:
        return GCSStore(
            f"gs://{self.bucket_name}/{self._name(prefix)}",
            client=self._client,
            retry_deadline_s=self._retry_deadline_s,
        )

    # -- writes
    def _upload(self, key: str, data: bytes, **precondition: Any) -> None:
        blob = self._bucket().blob(self._name(key))
        if len(data) > RESUMABLE_THRESHOLD:
            # a resumable session sent CHUNK_SIZE at a time: a failed chunk is re-sent alone
            blob.chunk_size = CHUNK_SIZE
            blob.upload_from_file(
                io.BytesIO(bytes(data)),
                content_type="application/octet-stream",
                retry=self.retry,
                **precondition,
            )
        else:
            blob.upload_from_string(
                bytes(data),
                content_type="application/octet-stream",
                retry=self.retry,
                **precondition,
            )

    def put_bytes(self, key: str, data: bytes) -> str:

        try:
            self._upload(key, data)
        except _errors() as exc:
            raise self._error("upload", key, exc) from exc
        return self.uri_for(key)

    def put_new(self, key: str, data: bytes) -> bool:
        from google.api_core import exceptions as gexc

        if self.exists(key):
            return False
        try:
            self._upload(key, data, if_generation_match=0)
        except gexc.PreconditionFailed:
            return False
        except _errors() as exc:
            raise self._error("exclusive upload", key, exc) from exc
        return True

    # -- reads
    def get_bytes(self, key: str) -> bytes:
        from google.api_core import exceptions as gexc

        try:
            return self._bucket().blob(self._name(key)).download_as_bytes(retry=self.retry)
        except gexc.NotFound:
            raise ObjectNotFound(f"{self.uri_for(key)}: no such object in the store") from None
        except _errors() as exc:
            raise self._error("download", key, exc) from exc

    def exists(self, key: str) -> bool:

        try:
            return bool(self._bucket().blob(self._name(key)).exists(retry=self.retry))
        except _errors() as exc:
            raise self._error("existence check", key, exc) from exc

    def list(self, prefix: str = "") -> list[str]:
        from google.api_core import exceptions as gexc

        prefix = check_prefix(prefix)
        root = f"{self.prefix}/" if self.prefix else ""
        try:
            names = [
                b.name
                for b in self.client.list_blobs(
                    self.bucket_name, prefix=root + prefix, retry=self.retry
                )
            ]
        except gexc.NotFound as exc:
            raise StoreError(
                f"{self.uri}: bucket {self.bucket_name!r} does not exist ({exc})"
            ) from exc
        except _errors() as exc:
            raise StoreError(f"{self.uri}: listing {prefix!r} failed: {exc}") from exc
        return sorted(n[len(root) :] for n in names if n.startswith(root) and not n.endswith("/"))

    def delete(self, key: str) -> None:
        from google.api_core import exceptions as gexc

        try:
            self._bucket().blob(self._name(key)).delete(retry=self.retry)
        except gexc.NotFound:
            pass
        except _errors() as exc:
            raise self._error("delete", key, exc) from exc

    def __repr__(self) -> str:
        return f"GCSStore({self.uri!r})"
