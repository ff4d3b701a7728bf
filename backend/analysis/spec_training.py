"""Static checks of the training block: defaults, per-task settings, grid, seed, resources.

Every TrainConfig setting is checked for its type and then by `TrainConfig` itself (loaded
without JAX, see `spec_engine`), one key at a time so that all bad keys are reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backend import campaigns
from backend.analysis.spec_checker import Checker, Resolved, is_int, is_number, kind
from backend.analysis.spec_engine import train_config_module
from backend.analysis.spec_yaml import PathKey

TRAINING_KEYS = ("defaults", "seed", "grid", "tasks", "resources")
ENSEMBLE_KEYS = ("ensemble_size", "members_per_job")
TRAIN_PARAM_KEYS = campaigns.SETTABLE_TRAIN_KEYS  # TrainConfig fields a file may set


def _train_value(ck: Checker, path: PathKey, key: str, value: Any) -> bool:
    """One TrainConfig setting: right type, and accepted by TrainConfig itself."""
    mod = train_config_module()
    ann = {f.name: f.type for f in mod.dataclasses.fields(mod.TrainConfig)}[key]
    types_ok = {
        "int": is_int(value),
        "float": is_number(value),
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "int | None": value is None or is_int(value),
        "tuple[str, ...]": isinstance(value, list) and all(isinstance(v, str) for v in value),
    }.get(str(ann), True)
    if not types_ok:
        want = {
            "tuple[str, ...]": "a list of strings",
            "int | None": "an integer or null",
            "int": "an integer",
            "float": "a number",
            "str": "a string",
            "bool": "true or false",
        }.get(str(ann), str(ann))
        ck.add(path, f"expected {want}, got {kind(value)}")
        return False
    defaults = {"max_steps": 10**9} if key == "warmup_steps" else {}
    try:
        mod.TrainConfig(**{**defaults, key: value})
    except (ValueError, TypeError) as exc:
        ck.add(path, str(exc).removeprefix("TrainConfig: "))
        return False
    return True


def _train_block(ck: Checker, path: PathKey, raw: Any, what: str) -> dict[str, Any] | None:
    """ensemble_size / members_per_job plus TrainConfig settings (defaults block or one task)."""
    allowed = ENSEMBLE_KEYS + TRAIN_PARAM_KEYS
    block = ck.mapping(path, raw, None, what)
    if block is None:
        return None
    ok = True
    for key, value in block.items():
        if key in ENSEMBLE_KEYS:
            ok &= ck.integer((*path, key), value, 1) is not None
        elif key in TRAIN_PARAM_KEYS:
            ok &= _train_value(ck, (*path, key), key, value)
        else:
            hint = (
                " ('members' is ensemble_size, the seed is training.seed)"
                if key in ("members", "seed")
                else ""
            )
            ck.add(
                (*path, key),
                f"unknown training key {key!r}{hint}; allowed keys: {', '.join(allowed)}",
            )
            ok = False
    return block if ok else None


def _combined_train(ck: Checker, path: PathKey, params: Mapping[str, Any]) -> None:
    mod = train_config_module()
    try:
        mod.TrainConfig(**{k: v for k, v in params.items() if k in TRAIN_PARAM_KEYS})
    except (ValueError, TypeError) as exc:
        ck.add(path, str(exc).removeprefix("TrainConfig: "))


def check_training(
    ck: Checker,
    res: Resolved,
    raw: Any,
    task_names: list[str] | None,
    features: tuple[str, ...] | None,
) -> None:
    t = ck.mapping(("training",), raw, TRAINING_KEYS, "training settings")
    if t is None:
        return
    out: dict[str, Any] = {"defaults": {}, "seed": 0, "grid": {}, "tasks": {}, "resources": {}}
    if "defaults" in t:
        out["defaults"] = (
            _train_block(ck, ("training", "defaults"), t["defaults"], "default training settings")
            or {}
        )
        _combined_train(ck, ("training", "defaults"), out["defaults"])
    if "seed" in t and ck.integer(("training", "seed"), t["seed"], 0) is not None:
        out["seed"] = t["seed"]
    if "grid" in t:
        grid = (
            ck.mapping(
                ("training", "grid"), t["grid"], None, "a hyper-parameter grid {setting: [values]}"
            )
            or {}
        )
        for key, values in grid.items():
            where: PathKey = ("training", "grid", key)
            if key not in TRAIN_PARAM_KEYS:
                ck.add(
                    where,
                    f"unknown training key {key!r}; allowed keys: {', '.join(TRAIN_PARAM_KEYS)}",
                )
            elif not isinstance(values, list) or not values:
                ck.add(where, f"expected a non-empty list of values, got {kind(values)}")
            elif all(_train_value(ck, (*where, i), key, v) for i, v in enumerate(values)):
                out["grid"][key] = values
    if "tasks" in t:
        tasks = (
            ck.mapping(
                ("training", "tasks"),
                t["tasks"],
                None,
                "per-task settings {task: {setting: value}}",
            )
            or {}
        )
        for name, block in tasks.items():
            where = ("training", "tasks", name)
            if task_names is not None and name not in task_names:
                ck.add(
                    where, f"unknown ratio task {name!r}; the tasks are: {', '.join(task_names)}"
                )
                continue
            b = _train_block(ck, where, block, f"settings for task {name!r}")
            if b is not None:
                _combined_train(ck, where, {**out["defaults"], **b})
                out["tasks"][name] = b
    if "resources" in t and ck.schema(
        ("training", "resources"), t["resources"], campaigns.RESOURCES_SCHEMA
    ):
        out["resources"] = t["resources"]
    if features is not None:
        blocks: list[tuple[PathKey, dict[str, Any]]] = [(("training", "defaults"), out["defaults"])]
        blocks += [(("training", "tasks", n), b) for n, b in out["tasks"].items()]
        for where, block in blocks:
            for i, f in enumerate(block.get("periodic_features") or []):
                if f not in features:
                    ck.add(
                        (*where, "periodic_features", i),
                        f"{f!r} is not a feature; features: {', '.join(features)}",
                    )
    res.training = out
