"""Crash-safe per-instance records in a launcher's own folder, shared by the local and Slurm
launchers.

Each launch writes ``<var_dir>/instances/<instance id>.json`` (atomically: temp file, then
rename) before it starts anything, so a controller that restarts finds every instance it may
have started; ``launcher.lock`` serialises launches of processes sharing the folder.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from backend.launchers.base import LauncherError

__all__ = ["InstanceRecords"]


class _HasInstanceId(Protocol):
    @property
    def instance_id(self) -> str: ...


R = TypeVar("R", bound=_HasInstanceId)


class InstanceRecords(Generic[R]):
    """Mixin: ``_read``/``_write``/``_records``/``_lock`` over ``instances_dir``; a launcher
    says how its record type maps to JSON with ``_record_from_json``/``_record_to_json``."""

    var_dir: Path
    instances_dir: Path

    def _record_from_json(self, data: dict[str, Any]) -> R:
        raise NotImplementedError

    def _record_to_json(self, rec: R) -> dict[str, Any]:
        raise NotImplementedError

    def _record_path(self, instance_id: str) -> Path:
        return self.instances_dir / f"{instance_id}.json"

    def _read(self, instance_id: str) -> R | None:
        try:
            return self._record_from_json(json.loads(self._record_path(instance_id).read_text()))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, TypeError) as exc:
            raise LauncherError(
                f"{self._record_path(instance_id)}: corrupt instance record ({exc})"
            ) from exc

    def _write(self, rec: R) -> None:
        path = self._record_path(rec.instance_id)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self._record_to_json(rec), sort_keys=True))
        os.replace(tmp, path)

    def _records(self) -> Iterator[R]:
        for path in sorted(self.instances_dir.glob("*.json")):
            rec = self._read(path.stem)
            if rec is not None:
                yield rec

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise launches of processes sharing this folder."""
        with open(self.var_dir / "launcher.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
