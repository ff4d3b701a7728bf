"""Setting a `threading.Event` from a signal handler without a deadlock.

Python runs a signal handler in the main thread between two bytecodes, possibly while that very
thread holds the event's internal lock: `Event.wait` re-acquires it when its timeout ends or it
is woken. A handler that calls ``event.set()`` then waits for a lock its own thread holds, for
ever. A controller terminated while it slept between passes (`Controller.run_forever`'s
``stop.wait``) hung that way, and so can a worker whose job waits on its stop flag. The handlers
here hand the ``set()`` to a short-lived thread, which takes the lock as soon as the main thread
lets go of it; the waiting loop then wakes as usual.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import FrameType

__all__ = ["set_event_soon", "handler_setting"]


def set_event_soon(event: threading.Event) -> None:
    """Set ``event`` from a signal handler (``is_set`` takes no lock; ``set`` does, elsewhere)."""
    if not event.is_set():
        threading.Thread(target=event.set, name="set-on-signal", daemon=True).start()


def handler_setting(event: threading.Event) -> Callable[[int, FrameType | None], None]:
    """A signal handler that sets ``event`` (for ``signal.signal``)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        set_event_soon(event)

    return handler
