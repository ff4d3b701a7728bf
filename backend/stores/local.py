"""Artifact store on the local filesystem (``file:///abs/path``).

Writes go to a temporary file in the destination folder and are then renamed into place
(``os.replace``), so readers see either the old object or the whole new one. Exclusive
creation (``put_new``) uses ``os.link``, which fails atomically when the name is taken. A
write that fails (a full disk: ENOSPC) raises `StoreError` naming the path and the cause,
leaves no temporary file behind and the old object, if any, as it was.

Every key stays inside the root: keys are checked as text (`check_key`: no absolute key, no
'.' or '..' part), and the path each one names is resolved (`os.path.realpath`) and must lie
under the resolved root, so a symbolic link inside the store cannot lead a read, write,
listing or delete elsewhere. A listing skips links that point outside the root and does not
descend into linked folders.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from backend.stores.base import ObjectNotFound, StoreError, check_key, check_prefix

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

    def __init__(
        self,
        root: Path | str,
        *,
        create: bool = False,
        must_exist: bool = True,
        within: str | None = None,
    ) -> None:
        self.root = Path(root) if not isinstance(root, str) else path_from_uri(root)
        # every path this store touches must resolve under here: the resolved root, or the
        # resolved root of the store this one is a child of
        self._jail = within or os.path.realpath(self.root)
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
        """Local path of ``key`` (local store only; lets numpy/JAX read files in place).
        Raises StoreError for a key that is not relative or whose path resolves outside the
        root (through a symbolic link)."""
        path = self.root / check_key(key)
        self._contain(path, f"store key {key!r}")
        return path

    def _inside(self, real: str) -> bool:
        return real == self._jail or real.startswith(self._jail.rstrip(os.sep) + os.sep)

    def _contain(self, path: Path, what: str) -> None:
        real = os.path.realpath(path)
        if not self._inside(real):
            raise StoreError(
                f"{path.as_uri()}: {what} leads outside the store root {self._jail} "
                f"(it resolves to {real} through a symbolic link); refused"
            )

    def child(self, prefix: str) -> LocalStore:
        path = self.root / check_key(prefix)
        self._contain(path, f"store prefix {prefix!r}")
        return LocalStore(path, must_exist=False, within=self._jail)

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
        except OSError as exc:  # e.g. ENOSPC: the store's disk is full; the old object stands
            os.unlink(tmp)
            raise StoreError(f"cannot write {path}: {exc}") from exc
        except BaseException:
            os.unlink(tmp)
            raise
        return tmp

    def put_bytes(self, key: str, data: bytes) -> str:
        path = self.path_for(key)
        tmp = self._write_temp(path, data)
        try:
            os.replace(tmp, path)
        except OSError as exc:
            os.unlink(tmp)
            raise StoreError(f"cannot write {path}: {exc}") from exc
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
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc}") from exc
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
        prefix = check_prefix(prefix)
        # list the deepest folder named by the prefix, then filter by the full prefix
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.root / folder if folder else self.root
        self._contain(base, f"store prefix {prefix!r}")
        if not base.is_dir():
            return []
        keys = []
        stack = [(str(base), folder)]
        while stack:
            where, rel = stack.pop()
            try:
                entries = list(os.scandir(where))
            except (FileNotFoundError, NotADirectoryError):
                continue  # removed while listing
            for entry in entries:
                key = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir(follow_symlinks=False):
                    if (key + "/").startswith(prefix) or prefix.startswith(key + "/"):
                        stack.append((entry.path, key))
                    continue
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    continue  # an in-flight atomic write
                if not key.startswith(prefix):
                    continue
                if entry.is_symlink():
                    real = os.path.realpath(entry.path)
                    if not (self._inside(real) and os.path.isfile(real)):
                        continue  # a link out of the store (or to a folder): not an object here
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
