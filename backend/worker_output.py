"""An attempt's stdout and stderr, copied into the store as it runs.

Why: the local and Slurm launchers leave each attempt's output in a log file the dashboard can
read, but a GCE VM keeps it on the instance, which is gone after a spot preemption. The worker
therefore tees what Python writes to ``sys.stdout`` and ``sys.stderr`` (prints, logging,
warnings, tracebacks) and the ticker writes it as numbered text segments under
``attempts/<N>/output/``; :func:`read_output_tail` gives the dashboard the end of it, whatever
the launcher. Output written below Python (a C library writing to file descriptor 1 directly)
still reaches the launcher's own log, not the store.

The buffer is bounded: output produced faster than the store takes it keeps its newest
``max_pending`` characters and says how much was dropped.
"""

from __future__ import annotations

import io
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from backend.stores import ArtifactStore, layout
from backend.stores.base import list_segments

MAX_PENDING_CHARS = 1 << 20  # output not yet written to the store, at most (newest kept)


class OutputBuffer:
    """Text written by the attempt and not yet in the store (thread-safe, bounded)."""

    def __init__(self, max_pending: int = MAX_PENDING_CHARS) -> None:
        self.max_pending = max_pending
        self._parts: deque[str] = deque()
        self._size = 0
        self._dropped = 0
        self._lock = threading.RLock()  # a signal handler that prints runs on the same thread

    def add(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            self._parts.append(text)
            self._size += len(text)
            while self._size > self.max_pending:  # drop the oldest text, part by part
                excess = self._size - self.max_pending
                first = self._parts[0]
                if len(first) <= excess:
                    self._parts.popleft()
                    cut = len(first)
                else:
                    self._parts[0] = first[excess:]
                    cut = excess
                self._size -= cut
                self._dropped += cut

    def drain(self) -> str:
        """Everything pending (with a note of what was dropped), emptying the buffer."""
        with self._lock:
            text, dropped = "".join(self._parts), self._dropped
            self._parts, self._size, self._dropped = deque(), 0, 0
        if dropped:
            text = (
                f"[nsbi worker: {dropped} characters of output dropped: written too fast]\n{text}"
            )
        return text

    def put_back(self, text: str) -> None:
        """Return drained text that the store refused, ahead of what came since."""
        with self._lock:
            self._parts.appendleft(text)
            self._size += len(text)


class _Tee(io.TextIOBase):
    """A text stream that writes through to ``stream`` and copies into ``buffer``."""

    def __init__(self, stream: TextIO, buffer: OutputBuffer) -> None:
        self._stream, self._buffer = stream, buffer

    def write(self, s: str) -> int:
        n = self._stream.write(s)
        self._buffer.add(s)
        return n

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")


@contextmanager
def captured_output(buffer: OutputBuffer) -> Iterator[OutputBuffer]:
    """Tee ``sys.stdout`` and ``sys.stderr`` into ``buffer`` while the block runs."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(saved[0], buffer), _Tee(saved[1], buffer)
    try:
        yield buffer
    finally:
        sys.stdout, sys.stderr = saved


def write_output_segment(
    attempt: int, buffer: OutputBuffer, write: Callable[[str, bytes, str], None]
) -> int:
    """Write what ``buffer`` holds as the next output segment with ``write(prefix, data,
    suffix)``; text the store refuses goes back into the buffer. Returns characters written."""
    text = buffer.drain()
    if not text:
        return 0
    try:
        write(layout.output_prefix(attempt), text.encode("utf-8", errors="replace"), ".txt")
    except BaseException:
        buffer.put_back(text)
        raise
    return len(text)


def read_output_tail(store: ArtifactStore, attempt: int, max_bytes: int) -> tuple[str, bool] | None:
    """(the last ``max_bytes`` of an attempt's stored output, whether older output was left
    out), or None when the worker stored none. Reads segments from the newest back."""
    segments = list_segments(store, layout.output_prefix(attempt))
    if not segments:
        return None
    parts: list[bytes] = []
    have = 0
    for _, key in reversed(segments):
        if have >= max_bytes:
            break
        data = store.get_bytes(key)
        parts.append(data)
        have += len(data)
    data = b"".join(reversed(parts))
    truncated = len(parts) < len(segments) or len(data) > max_bytes
    return data[-max_bytes:].decode("utf-8", errors="replace"), truncated
