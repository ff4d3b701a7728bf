"""Launchers: one interface (:mod:`backend.launchers.base`), one module per backend.

``get_launcher(name, settings)`` builds a launcher from the explicit :data:`REGISTRY`
(name -> factory); a future ``gce.py`` adds one entry and keeps its SDK import inside itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from backend.launchers.base import (
    CapacityError,
    InstanceState,
    InstanceStatus,
    Launcher,
    LauncherError,
    LaunchHandle,
    LaunchRequest,
    instance_name,
)
from backend.settings import get_settings


def _local(settings: Any, **overrides: Any) -> Launcher:
    from backend.launchers.local import LocalLauncher

    local = get_settings().local  # NSBI_LOCAL_*, from this process's environment
    kwargs: dict[str, Any] = {"max_concurrent": local.max_concurrent, "grace_s": local.grace_s}
    kwargs.update(overrides)
    return LocalLauncher(settings.home / "launchers" / "local", **kwargs)


# name -> factory(settings, **overrides)
REGISTRY: dict[str, Callable[..., Launcher] | str] = {
    "local": _local,
    "gce": "backend.launchers.gce:from_settings",
    "slurm": "backend.launchers.slurm:from_settings",
}


def get_launcher(name: str, settings: Any, **overrides: Any) -> Launcher:
    """The launcher called ``name``, configured from ``settings`` (and keyword overrides)."""
    factory = REGISTRY.get(name)
    if factory is None:
        raise LauncherError(f"unknown launcher {name!r} (known: {sorted(REGISTRY)})")
    if isinstance(factory, str):
        module_name, attr = factory.split(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except ModuleNotFoundError as exc:
            raise LauncherError(
                f"launcher {name!r} is not available in this build ({exc})"
            ) from exc
    return factory(settings, **overrides)


__all__ = [
    "REGISTRY",
    "CapacityError",
    "InstanceState",
    "InstanceStatus",
    "LaunchHandle",
    "LaunchRequest",
    "Launcher",
    "LauncherError",
    "get_launcher",
    "instance_name",
]
