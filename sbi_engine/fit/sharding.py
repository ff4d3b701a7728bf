"""The fit's event sums sharded over devices (``Model(ws, devices=N)``), of one or several processes.

Events are split along a 1-D mesh ``("events",)`` over the first N of ``jax.devices()``: every
per-event array of the data pytree (``w``, ``v``, ``r``, ``up``, ``down``, also inside a
separate ``norm`` sample) is padded to a multiple of N and stored with a ``NamedSharding`` that
splits its event axis, so each device holds 1/N of the events. Inside the traced likelihood a
``shard_map`` runs the model's unchanged chunked pass on each device's shard and ``psum``s the
float64 sums (value, gradient, Hessian) over the mesh; everything else (amplitudes, constraints,
control regions, the Newton step) sees the same replicated numbers as on one device.

Padding rows carry weight 0 (``w = v = 0``) and ratios / shape factors 1, so they add nothing to
ln L, to the normalisation sums or to any derivative. Samples handed to the traced functions
whose length is not a multiple of N (toys' gathered events, caller-built pytrees) are padded the
same way inside the trace.

Several processes (hosts) through ``jax.distributed``: call ``initialize_distributed`` in every
process before JAX touches a device (``nsbi fit --coordinator HOST:PORT --num-processes N
--process-id I``). ``jax.devices()`` then lists the devices of all processes, the mesh spans them,
and each process keeps only its own devices' shards of the (identical) workspace it loaded; the
``psum`` crosses processes (NCCL on GPUs, Gloo on CPUs), and every process gets the same
replicated NLL, gradient and Hessian, so the fit runs the same Newton steps everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "AXIS",
    "DistributedInfo",
    "bytes_per_device",
    "distributed_info",
    "event_mesh",
    "initialize_distributed",
    "padded_length",
    "shard_data",
    "sharded_sums",
]

AXIS = "events"
_ZERO_PAD = ("w", "v")  # weights: padding rows weigh nothing
_ONE_PAD = ("r", "up", "down")  # ratios and shape factors: 1 keeps every log finite
_PER_EVENT = _ZERO_PAD + _ONE_PAD


@dataclass(frozen=True)
class DistributedInfo:
    """Where this process stands in a multi-process run (one process: 0 of 1)."""

    process_index: int
    process_count: int
    local_devices: int
    global_devices: int

    @property
    def is_main(self) -> bool:
        """True for the process that writes results (process 0)."""
        return self.process_index == 0


def distributed_info() -> DistributedInfo:
    return DistributedInfo(
        jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count()
    )


def initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: int = 300,
) -> DistributedInfo:
    """Join a multi-process JAX run (``jax.distributed.initialize``); call it in every process
    before any JAX array or device query.

    ``coordinator`` is ``HOST:PORT`` of process 0 (it listens there); None falls back to JAX's
    own detection (``JAX_COORDINATOR_ADDRESS``, Slurm's ``srun``, Open MPI). On CPUs the
    cross-process collectives go through Gloo (``jax_cpu_collectives_implementation``), which
    JAX 0.10 ships with jaxlib; on GPUs through NCCL.
    """
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:  # an older JAX without the option: its CPU devices stay per process
        pass
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=timeout_s,
    )
    return distributed_info()


def event_mesh(n_devices: int) -> Mesh:
    """A 1-D mesh over the first ``n_devices`` devices (all processes' devices, in a
    ``jax.distributed`` run)."""
    devs = jax.devices()
    if not 1 <= n_devices <= len(devs):
        where = (
            f"{jax.process_count()} processes see"
            if jax.process_count() > 1
            else "this process sees"
        )
        raise ValueError(
            f"devices={n_devices}: {where} {len(devs)} device(s) "
            f"({devs[0].platform}); on CPU set XLA_FLAGS=--xla_force_host_platform_device_count=N "
            "before JAX is imported"
        )
    return Mesh(np.array(devs[:n_devices]), (AXIS,))


def padded_length(n: int, n_devices: int) -> int:
    return -(-n // n_devices) * n_devices


def _pad(x: Any, key: str, n_to: int, xp: Any) -> Any:
    n = int(np.shape(x)[0])
    if n == n_to:
        return x
    fill = 0.0 if key in _ZERO_PAD else 1.0
    return xp.concatenate([xp.asarray(x), xp.full((n_to - n,), fill, dtype=x.dtype)])


def _map_sample(sample: dict[str, Any], fn: Callable[[Any, str], Any]) -> dict[str, Any]:
    out = {}
    for k, v in sample.items():
        if k in _PER_EVENT:
            out[k] = jax.tree_util.tree_map(lambda a, k=k: fn(a, k), v)
        elif k == "norm":
            out[k] = _map_sample(v, fn)
        else:
            out[k] = v
    return out


def _sample_length(sample: dict[str, Any]) -> int:
    return int(np.shape(sample["r"][0])[0])


def shard_data(data: dict[str, Any], mesh: Mesh) -> dict[str, Any]:
    """``data`` with every per-event array padded to a multiple of the mesh size and split
    along its event axis over the mesh; other leaves (``vscale``) replicated."""
    n_dev = mesh.devices.size
    split, repl = NamedSharding(mesh, P(AXIS)), NamedSharding(mesh, P())

    def place(sample: dict[str, Any]) -> dict[str, Any]:
        n_to = padded_length(_sample_length(sample), n_dev)
        out = {}
        for k, v in sample.items():
            if k == "norm":
                out[k] = place(v)
            elif k in _PER_EVENT:
                out[k] = jax.tree_util.tree_map(
                    lambda a, k=k: jax.device_put(_pad(a, k, n_to, jnp), split), v
                )
            else:
                out[k] = jax.device_put(v, repl)
        return out

    return place(data)


def shard_weights(w: Any, mesh: Mesh, n_to: int) -> jax.Array:
    """Event weights padded with zeros to ``n_to`` rows and split over the mesh."""
    return jax.device_put(_pad(w, "w", n_to, jnp), NamedSharding(mesh, P(AXIS)))


def sharded_sums(
    local_sums: Callable[[Any, dict[str, Any]], tuple[Any, ...]],
    theta: Any,
    data: dict[str, Any],
    mesh: Mesh,
) -> tuple[Any, ...]:
    """``local_sums(theta, shard)`` on each device's shard of ``data``, summed over the mesh
    (traceable; the sums stay float64)."""
    n_dev = mesh.devices.size

    def pad_sample(sample: dict[str, Any]) -> dict[str, Any]:
        n_to = padded_length(_sample_length(sample), n_dev)
        out = {k: v for k, v in sample.items() if k != "norm"}
        out = _map_sample(out, lambda a, k: _pad(a, k, n_to, jnp))
        if "norm" in sample:
            out["norm"] = pad_sample(sample["norm"])
        return out

    data = pad_sample(dict(data))
    specs = _specs(data)

    def body(t: Any, d: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(jax.lax.psum(x, AXIS) for x in local_sums(t, d))

    f = jax.shard_map(body, mesh=mesh, in_specs=(P(), specs), out_specs=P(), check_vma=False)
    return tuple(f(theta, data))


def _specs(sample: dict[str, Any]) -> dict[str, Any]:
    """in_specs for a data pytree: per-event leaves split over the mesh, the rest replicated."""
    return {
        k: _specs(v)
        if k == "norm"
        else jax.tree_util.tree_map(lambda _, k=k: P(AXIS) if k in _PER_EVENT else P(), v)
        for k, v in sample.items()
    }


def bytes_per_device(data: dict[str, Any]) -> dict[str, int]:
    """Bytes of the data pytree held on each of this process's devices (by device id)."""
    out: dict[str, int] = {}
    for leaf in jax.tree_util.tree_leaves(data):
        for shard in getattr(leaf, "addressable_shards", ()):
            key = str(shard.device.id)
            out[key] = out.get(key, 0) + int(shard.data.nbytes)
    return out
