"""Resource sampling for workers: CPU and memory through psutil, GPUs through NVML.

NVML (``nvidia-ml-py``) is imported lazily and every NVML failure means "no GPU", so the same
code runs on a laptop, a CPU VM and a GPU VM. A sample is one record with a list of per-GPU
readings (empty on a CPU-only machine), the shape of one ``ResourceSample`` row.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from backend.settings import get_settings

_nvml_state: dict[str, Any] = {"tried": False, "ok": False}


def _nvml():
    """The initialised ``pynvml`` module, or None where there is no driver/GPU."""
    if not _nvml_state["tried"]:
        _nvml_state["tried"] = True
        try:
            import pynvml

            pynvml.nvmlInit()
            _nvml_state["ok"] = True
            _nvml_state["mod"] = pynvml
        except Exception as exc:  # no library, no driver, no device: all mean "no GPU"
            _nvml_state["ok"] = False
            _nvml_state["error"] = f"{type(exc).__name__}: {exc}"
    return _nvml_state.get("mod") if _nvml_state["ok"] else None


def gpu_count() -> int:
    """Physical GPUs visible to NVML on this machine (0 without a driver)."""
    nv = _nvml()
    if nv is None:
        return 0
    try:
        return int(nv.nvmlDeviceGetCount())
    except Exception:
        return 0


def nvml_gpus() -> tuple[list[dict[str, Any]], str | None]:
    """Every GPU NVML sees (index, name, memory_total_bytes, memory_used_bytes, driver), and
    why there are none (the NVML error) where it sees none."""
    nv = _nvml()
    if nv is None:
        return [], _nvml_state.get("error", "NVML unavailable")
    out = []
    try:
        driver = nv.nvmlSystemGetDriverVersion()
        for i in range(int(nv.nvmlDeviceGetCount())):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            mem = nv.nvmlDeviceGetMemoryInfo(h)
            name = nv.nvmlDeviceGetName(h)
            out.append(
                {
                    "index": i,
                    "name": name.decode() if isinstance(name, bytes) else str(name),
                    "memory_total_bytes": int(mem.total),
                    "memory_used_bytes": int(mem.used),
                    "driver": driver.decode() if isinstance(driver, bytes) else str(driver),
                }
            )
    except Exception as exc:
        return out, f"{type(exc).__name__}: {exc}"
    return out, None if out else "NVML found no GPU"


def visible_gpu_indices() -> list[int]:
    """NVML indices this process may use, honouring ``CUDA_VISIBLE_DEVICES`` (numeric form)."""
    n = gpu_count()
    visible = get_settings().worker.visible_gpus
    return list(range(n)) if visible is None else [i for i in visible if i < n]


@dataclass
class ResourceSampler:
    """Samples one process tree (default: this process and its children) and the given GPUs."""

    pid: int | None = None
    gpu_indices: list[int] | None = None
    _proc: psutil.Process = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._proc = psutil.Process(self.pid or os.getpid())
        self._proc.cpu_percent(None)  # prime: the first call always returns 0.0
        if self.gpu_indices is None:
            self.gpu_indices = visible_gpu_indices()

    def _tree_rss(self) -> int:
        rss = 0
        for p in [self._proc, *self._proc.children(recursive=True)]:
            try:
                rss += p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return rss

    def sample(self) -> dict:
        """One record: time, CPU/memory of the process tree, and a list of per-GPU readings.

        The shape matches ``ResourceSample`` (``gpus``: index, util_percent, memory_bytes,
        memory_total_bytes, power_w).
        """
        return {
            "time": time.time(),
            "cpu_percent": float(self._proc.cpu_percent(None)),
            "rss_bytes": int(self._tree_rss()),
            "system_memory_percent": float(psutil.virtual_memory().percent),
            "gpus": self._gpu_records(),
        }

    def _gpu_records(self) -> list[dict]:
        nv = _nvml()
        if nv is None or not self.gpu_indices:
            return []
        out = []
        for idx in self.gpu_indices:
            try:
                h = nv.nvmlDeviceGetHandleByIndex(idx)
                util = nv.nvmlDeviceGetUtilizationRates(h)
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                rec = {
                    "index": idx,
                    "util_percent": float(util.gpu),
                    "memory_bytes": int(mem.used),
                    "memory_total_bytes": int(mem.total),
                }
                try:
                    rec["power_w"] = nv.nvmlDeviceGetPowerUsage(h) / 1000.0
                except Exception:
                    pass
                out.append(rec)
            except Exception:
                continue
        return out
