"""Artifact store on the local filesystem (``file:///abs/path``).

Writes go to a temporary file in the destination folder and are then renamed into place
(``os.replace``), so readers see either the old object or the whole new one. Exclusive
creation (``put_new``) uses ``os.link``, which fails atomically when the name is taken.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from backend.stores.base import ObjectNotFound, StoreError, check_key

SCHEME = "file"


def path_from_uri(uri: str) -> Path:
    """``file:///abs/path`` -> Path('/abs/path'); a plain absolute path is accepted too."""
    if uri.startswith("file://"):
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise StoreError(f"{uri}: file URIs must have an empty host (file:///abs/path)")
        path = unquote(parsed.path)
    elif uri.startswith("/"):
        path = uri
    else:
        raise StoreError(f"{uri}: not a file:/// URI or absolute path")
    if not path.startswith("/"):
        raise StoreError(f"{uri}: the path must be absolute (file:///abs/path)")
    return Path(os.path.normpath(path))


class LocalStore:
    """An :class:`~backend.stores.base.ArtifactStore` over a folder."""

    def __init__(self, root: Path | str, *, create: bool = False, must_exist: bool = True) -> None:
        self.root = Path(root) if not isinstance(root, str) else path_from_uri(root)
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create store root {self.root}: {exc}") from exc
        elif must_exist and not self.root.is_dir():
            raise StoreError(f"store root {self.root} does not exist (URI {self.uri})")

    # -- naming
    @property
    def uri(self) -> str:
        return self.root.as_uri()

    def uri_for(self, key: str) -> str:
        return (self.root / check_key(key)).as_uri()

    def path_for(self, key: str) -> Path:
        """Local path of ``key`` (local store only; lets numpy/JAX read files in place)."""
        return self.root / check_key(key)

    def child(self, prefix: str) -> LocalStore:
        return LocalStore(self.root / check_key(prefix), must_exist=False)

    # -- writes
    def _write_temp(self, path: Path, data: bytes) -> str:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc}") from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            os.unlink(tmp)
            raise
        return tmp

    def put_bytes(self, key: str, data: bytes) -> str:
        path = self.path_for(key)
        tmp = self._write_temp(path, data)
        os.replace(tmp, path)
        return path.as_uri()

    def put_new(self, key: str, data: bytes) -> bool:
        path = self.path_for(key)
        if path.exists():
            return False
        tmp = self._write_temp(path, data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    # -- reads
    def get_bytes(self, key: str) -> bytes:
        path = self.path_for(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"{path.as_uri()}: no such object in the store") from None
        except IsADirectoryError:
            raise ObjectNotFound(f"{path.as_uri()}: is a folder, not an object") from None

    def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        prefix = prefix.lstrip("/")
        # list the deepest folder named by the prefix, then filter by the full prefix
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.root / folder if folder else self.root
        if not base.is_dir():
            return []
        keys = []
        for dirpath, _dirs, files in os.walk(base):
            rel_dir = os.path.relpath(dirpath, self.root)
            for name in files:
                if name.startswith(".") and name.endswith(".tmp"):
                    continue  # an in-flight atomic write
                key = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                if key.startswith(prefix):
                    keys.append(key)
        keys.sort()
        return keys

    def delete(self, key: str) -> None:
        try:
            self.path_for(key).unlink()
        except FileNotFoundError:
            pass

    def __repr__(self) -> str:
        return f"LocalStore({self.uri!r})"
