"""The rules of the training block that link keys: task names, the settings a task gets
(its own over the defaults, together accepted by `TrainConfig`), periodic features.

The block's shape, and every setting's type and allowed values, are the model's
(`backend.campaign_model.TrainBlock` / `TrainGrid`, derived from `sbi_engine.ratio.TrainConfig`
and validated through it); values read here have passed it (see `Checker.ok`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backend.analysis.spec_checker import Checker, Resolved
from backend.analysis.spec_yaml import PathKey
from backend.campaign_model import SETTABLE_TRAIN_KEYS, train_config_problem


def check_training(
    ck: Checker,
    res: Resolved,
    raw: Any,
    task_names: list[str] | None,
    features: tuple[str, ...] | None,
) -> None:
    out: dict[str, Any] = {"defaults": {}, "seed": 0, "grid": {}, "tasks": {}, "resources": {}}
    res.training = out
    if not isinstance(raw, Mapping):
        return
    for key in ("defaults", "seed", "grid", "resources"):
        if key in raw and ck.ok(("training", key)):
            out[key] = raw[key]
    for name, block in (raw.get("tasks") or {}).items() if ck.ok(("training", "tasks")) else ():
        where: PathKey = ("training", "tasks", name)
        if task_names is not None and name not in task_names:
            ck.add(where, f"unknown ratio task {name!r}; the tasks are: {', '.join(task_names)}")
            continue
        if not ck.ok(where):
            continue
        own = {k: v for k, v in block.items() if k in SETTABLE_TRAIN_KEYS}
        problem = train_config_problem(
            {**{k: v for k, v in out["defaults"].items() if k in SETTABLE_TRAIN_KEYS}, **own}
        )
        if own and problem is not None:
            ck.add(where, f"{problem} (with training.defaults)")
            continue
        out["tasks"][name] = block
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
