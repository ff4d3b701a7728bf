"""How an ensemble is laid out on the device: one vmapped program, or packs of k members.

Stacking members under ``jax.vmap`` turns M small matmuls into one batched matmul, which is
what makes small networks fast (per-step overhead is paid once) but multiplies memory by M.
The choice is a cheap heuristic: the largest pack whose parameters, optimiser state and
activations fit a fraction of the device's memory; all members at once when they fit.

Measured with ``nsbi bench train`` on the 2-core development CPU (load 4-8, per-member
GFLOP/s, vmap vs packs of one): 7x1500 M=8 66 vs 65, M=32 54 vs 49; 3x64 M=8 18 vs 26,
M=32 24 vs 26. So on a CPU stacking is as fast or faster for big networks and up to ~1.4x
slower for tiny ones, where the wall time is small anyway; the memory rule is kept everywhere
and ``strategy="packs", pack_size=1`` is the override for tiny networks on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax

from .config import TrainConfig
from .model import n_parameters


@dataclass(frozen=True)
class Layout:
    """The resolved strategy: ``pack_size`` members train together, packs run one after another."""

    strategy: str  # "vmap" or "packs"
    pack_size: int
    reason: str

    def packs(self, members: int) -> list[range]:
        k = self.pack_size
        return [range(s, min(s + k, members)) for s in range(0, members, k)]


def device_memory_bytes(device: jax.Device | None = None) -> int:
    """Usable memory of the default device: the accelerator's limit, or the host's free RAM."""
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # CPU devices may not implement it
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        return 8 << 30


def bytes_per_member(config: TrainConfig, n_features: int, n_train: int) -> int:
    """Rough training footprint of one member: params, grads, Adam moments, best copy,
    activations (forward and backward) and its bootstrap weight column."""
    n_par = n_parameters(n_features, config.hidden_layers, config.width)
    act_bytes = 2 if config.dtype == "bfloat16" else 4
    activations = 3 * config.batch_size * config.width * config.hidden_layers * act_bytes
    return 4 * 5 * n_par + activations + 4 * n_train


def choose_layout(
    config: TrainConfig, n_features: int, n_train: int, memory_fraction: float = 0.4
) -> Layout:
    """Resolve ``config.strategy`` / ``pack_size`` into a ``Layout``; the user's choice wins."""
    m = config.members
    if config.strategy == "vmap":
        return Layout("vmap", m, "requested")
    if config.strategy == "packs":
        k = min(config.pack_size or 1, m)
        return Layout("packs", k, "requested")
    if config.pack_size is not None:
        k = min(config.pack_size, m)
        return Layout("vmap" if k >= m else "packs", k, "pack_size given")
    budget = int(device_memory_bytes() * memory_fraction)
    per = bytes_per_member(config, n_features, n_train)
    k = max(1, min(m, budget // max(per, 1)))
    if k >= m:
        return Layout(
            "vmap", m, f"all {m} members fit in {budget >> 20} MiB ({per >> 20} MiB each)"
        )
    return Layout(
        "packs", k, f"{k} of {m} members fit in {budget >> 20} MiB ({per >> 20} MiB each)"
    )
