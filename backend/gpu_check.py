"""``nsbi worker --check-gpu``: does this machine (or image) give the worker a GPU?

Two independent views: the NVIDIA driver's (``nvidia-ml-py``: each GPU's name and memory) and
JAX's (its default backend and devices; a CPU-only jaxlib sees no GPU even where the driver
does). The check passes (exit 0) only when JAX runs on a GPU; otherwise it says which of the
two is missing and what to do. JAX is imported here only, so the worker's normal start stays
as fast as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["GpuCheck", "check_gpu", "format_check"]

GPU_BUILD_HINT = (
    "GPU workers need CUDA JAX: build the image with `docker build --build-arg EXTRAS=gpu` "
    "(pip install '.[gpu]', jax[cuda12]) and run it with `docker run --gpus all` (docs/gcp.md)"
)


@dataclass(frozen=True)
class GpuCheck:
    jax_version: str | None
    jax_backend: str | None
    jax_devices: list[dict[str, Any]] = field(default_factory=list)
    jax_error: str | None = None
    nvml_gpus: list[dict[str, Any]] = field(default_factory=list)
    nvml_error: str | None = None

    @property
    def ok(self) -> bool:
        """JAX computes on a GPU."""
        return self.jax_backend in ("gpu", "cuda", "rocm")

    @property
    def verdict(self) -> str:
        if self.ok:
            return f"GPU ready: JAX runs on {len(self.jax_devices)} GPU device(s)"
        if self.nvml_gpus:
            return (
                f"no GPU for JAX: the driver sees {len(self.nvml_gpus)} GPU(s) but JAX's backend "
                f"is {self.jax_backend!r} (a CPU-only jaxlib). " + GPU_BUILD_HINT
            )
        return (
            "no GPU: no NVIDIA driver or GPU on this machine; JAX runs on the CPU. "
            + GPU_BUILD_HINT
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "verdict": self.verdict,
            "jax": {
                "version": self.jax_version,
                "backend": self.jax_backend,
                "devices": self.jax_devices,
                "error": self.jax_error,
            },
            "nvml": {"gpus": self.nvml_gpus, "error": self.nvml_error},
        }


def _jax_view() -> tuple[str | None, str | None, list[dict[str, Any]], str | None]:
    try:
        import jax
    except Exception as exc:  # no JAX in this environment at all
        return None, None, [], f"{type(exc).__name__}: {exc}"
    try:
        devices = [
            {
                "id": int(d.id),
                "platform": str(d.platform),
                "kind": str(d.device_kind),
                **_memory_limit(d),
            }
            for d in jax.devices()
        ]
        return jax.__version__, jax.default_backend(), devices, None
    except Exception as exc:  # a broken CUDA install raises when the backend starts
        return jax.__version__, None, [], f"{type(exc).__name__}: {exc}"


def _memory_limit(device: Any) -> dict[str, int]:
    try:
        stats = device.memory_stats() or {}
    except Exception:
        return {}
    return {"memory_limit_bytes": int(stats["bytes_limit"])} if "bytes_limit" in stats else {}


def check_gpu() -> GpuCheck:
    from backend.resources import nvml_gpus

    gpus, nvml_error = nvml_gpus()
    version, backend, devices, jax_error = _jax_view()
    return GpuCheck(version, backend, devices, jax_error, gpus, nvml_error)


def format_check(check: GpuCheck) -> str:
    lines = []
    if check.jax_version is None:
        lines.append(f"JAX: not importable ({check.jax_error})")
    elif check.jax_error:
        lines.append(f"JAX {check.jax_version}: the backend failed to start ({check.jax_error})")
    else:
        kinds = ", ".join(sorted({d["kind"] for d in check.jax_devices}))
        lines.append(
            f"JAX {check.jax_version}: backend {check.jax_backend}, "
            f"{len(check.jax_devices)} device(s) ({kinds})"
        )
    if check.nvml_gpus:
        for g in check.nvml_gpus:
            lines.append(
                f"NVML GPU {g['index']}: {g['name']}, {g['memory_total_bytes'] / 2**30:.1f} GiB "
                f"({g['memory_used_bytes'] / 2**30:.1f} GiB in use), driver {g['driver']}"
            )
    else:
        lines.append(f"NVML: no GPU ({check.nvml_error})")
    lines.append(check.verdict)
    return "\n".join(lines)
