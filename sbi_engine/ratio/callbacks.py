"""Hooks a caller (the backend worker, a notebook) passes into training.

Subclass ``TrainCallbacks`` and override what you need; the base class is a no-op so callers
never have to implement the whole protocol.
"""

from __future__ import annotations


class TrainCallbacks:
    """No-op hooks. ``on_metrics`` receives records ``{"member", "step", "epoch", "name", "value"}``
    with names ``train_loss``, ``val_loss`` and ``best_val_loss``; ``should_stop`` is polled
    between evaluation intervals and, when true, training checkpoints and returns with
    ``stopped_early=True`` (the worker sets it on SIGTERM).
    """

    def on_metrics(self, step: int, records: list[dict]) -> None:
        return None

    def should_stop(self) -> bool:
        return False


class StopAfter(TrainCallbacks):
    """Asks training to stop once ``n_intervals`` evaluation intervals have run (tests, demos)."""

    def __init__(self, n_intervals: int) -> None:
        self.n_intervals = n_intervals
        self.calls = 0
        self.records: list[dict] = []

    def on_metrics(self, step: int, records: list[dict]) -> None:
        self.calls += 1
        self.records.extend(records)

    def should_stop(self) -> bool:
        return self.calls >= self.n_intervals
