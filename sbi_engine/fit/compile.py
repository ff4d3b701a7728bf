"""Ahead-of-time compilation with the compile time booked apart from the run time.

Every heavy fit function is jitted once per model shape. `Compiled` lowers and compiles on the
first call for a given argument signature (shapes, dtypes, tree structure) and keeps the
executable, so refits, scans and toys reuse it and benchmarks can report compile time apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

__all__ = ["CompileClock", "Compiled"]


@dataclass
class CompileClock:
    """Accumulated JIT compile seconds and compilation count (shared by a model's functions)."""

    seconds: float = 0.0
    count: int = 0
    log: list[tuple[str, float]] = field(default_factory=list)


def _signature(args: tuple[Any, ...]) -> tuple[Any, ...]:
    leaves, tree = jax.tree_util.tree_flatten(args)
    return (
        tree,
        tuple((tuple(np.shape(x)), str(getattr(x, "dtype", type(x).__name__))) for x in leaves),
    )


class Compiled:
    """``jax.jit(fn)`` compiled ahead of time per argument signature, with timed compilation."""

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        clock: CompileClock,
        static_argnums: tuple[int, ...] = (),
    ):
        self._jit = jax.jit(fn, static_argnums=static_argnums)
        self._static = static_argnums
        self._name = name
        self._clock = clock
        self._cache: dict[Any, Any] = {}

    def __call__(self, *args: Any) -> Any:
        dyn = tuple(a for i, a in enumerate(args) if i not in self._static)
        key = (tuple(args[i] for i in self._static), _signature(dyn))
        exe = self._cache.get(key)
        if exe is None:
            t0 = time.perf_counter()
            exe = self._jit.lower(*args).compile()
            dt = time.perf_counter() - t0
            self._clock.seconds += dt
            self._clock.count += 1
            self._clock.log.append((self._name, dt))
            self._cache[key] = exe
        return exe(*dyn)
