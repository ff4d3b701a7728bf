"""JAX's 64-bit switch, turned on by the engine's entry points rather than by importing it.

Why: the likelihood sums over millions of events, so the fit, the ensemble's aggregated log
ratios and everything built on them need float64; JAX gives float32 unless ``jax_enable_x64``
is set. The switch is process-wide, so importing the engine no longer flips it (a program that
only reads samples, or uses JAX for something else, is left alone); each entry point that
computes with JAX calls `enable_float64` first, before it creates any JAX array.

Training calls it too, although its arrays are float32 by explicit dtype: optax computes
learning-rate schedules and Adam's bias corrections from the integer step in JAX's default
float type, so a run would otherwise give different float32 parameters depending on whether
something earlier in the same process had switched to 64 bit (and a resumed run would not
reproduce an uninterrupted one).
"""

from __future__ import annotations

__all__ = ["enable_float64"]


def enable_float64() -> None:
    """Turn on JAX's 64-bit types for this process (idempotent; never turned off again).

    Arrays created before the switch keep their dtype, so call this before building any
    JAX array that must be float64.
    """
    import jax

    if not jax.config.read("jax_enable_x64"):
        jax.config.update("jax_enable_x64", True)
