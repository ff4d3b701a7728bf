"""Where training state goes between steps: the ``Checkpointer`` protocol and a folder version.

The engine only hands over opaque bytes with a step number, so the backend can back this by
its artifact store (local disk, GCS) without the engine knowing. Writes are atomic (temp file
+ rename) so a run killed mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Protocol, runtime_checkable


@runtime_checkable
class Checkpointer(Protocol):
    """Stores opaque checkpoint payloads keyed by a monotonically increasing step."""

    def save(self, step: int, payload: bytes) -> None: ...

    def load_latest(self) -> tuple[int, bytes] | None: ...


class DirectoryCheckpointer:
    """Checkpoints as ``<dir>/<step>.ckpt`` files; keeps the newest ``keep`` (None = all)."""

    _NAME = re.compile(r"^(\d+)\.ckpt$")

    def __init__(self, directory: str | os.PathLike, keep: int | None = 3) -> None:
        self.directory = Path(directory)
        self.keep = keep

    def _steps(self) -> list[int]:
        if not self.directory.is_dir():
            return []
        steps = []
        for entry in self.directory.iterdir():
            match = self._NAME.match(entry.name)
            if match:
                steps.append(int(match.group(1)))
        return sorted(steps)

    def save(self, step: int, payload: bytes) -> None:
        if step < 0:
            raise ValueError(f"DirectoryCheckpointer.save: step must be >= 0, got {step}")
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".ckpt")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.directory / f"{step}.ckpt")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if self.keep is not None:
            for old in self._steps()[: -self.keep]:
                (self.directory / f"{old}.ckpt").unlink(missing_ok=True)

    def load_latest(self) -> tuple[int, bytes] | None:
        steps = self._steps()
        if not steps:
            return None
        step = steps[-1]
        return step, (self.directory / f"{step}.ckpt").read_bytes()


class MemoryCheckpointer:
    """Keeps every payload in a dict; handy in tests and notebooks."""

    def __init__(self) -> None:
        self.saved: dict[int, bytes] = {}

    def save(self, step: int, payload: bytes) -> None:
        self.saved[step] = bytes(payload)

    def load_latest(self) -> tuple[int, bytes] | None:
        if not self.saved:
            return None
        step = max(self.saved)
        return step, self.saved[step]
