"""The campaign form as plain data: form values -> campaign config dict, with errors per field.

No Streamlit here. The page renders one widget per `FIELDS` entry and shows the messages this
module returns next to the field they belong to; errors from the backend's own validation
(`CampaignConfigError`, dotted key paths) are mapped back onto form fields by `field_for_path`.
"""

from __future__ import annotations

import ast
import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from backend.campaigns import DEMO_CONFIG, LAUNCHERS, TRAIN_KEYS

DEMO_PROCESSES = ("S", "SBI", "B")
ACTIVATIONS = ("silu", "relu", "gelu", "tanh", "elu", "softplus")
GRID_KEYS = tuple(k for k in TRAIN_KEYS if k not in ("members", "seed"))

# Form field -> the config key paths whose backend errors belong to it (longest prefix wins).
FIELD_PATHS: dict[str, tuple[str, ...]] = {
    "name": ("name",),
    "samples": ("processes",),
    "reference": ("reference",),
    "systematics": ("systematics",),
    "architecture": ("training.params",),
    "ensemble_size": ("training.ensemble_size", "training.members_per_job"),
    "grid": ("training.grid",),
    "launcher": ("backend.launcher",),
    "machine": (
        "backend.machine_type",
        "backend.gpu_type",
        "backend.gpu_count",
        "backend",
        "training.resources",
    ),
    "spot": ("backend.spot",),
    "zones": ("backend.zones", "backend.region"),
    "budget": ("backend.budget_usd",),
    "max_concurrency": ("backend.max_concurrency",),
    "n_toys": ("toys.n_toys", "toys.toys_per_job"),
    "stages": ("fit", "impacts", "scan", "toys"),
    "nuisances": ("fit.nuisances",),
}


@dataclass(frozen=True)
class FormResult:
    """The config built from the form and the problems found, keyed by form field."""

    config: dict[str, Any]
    errors: dict[str, list[str]]

    @property
    def ok(self) -> bool:
        return not self.errors


def default_values() -> dict[str, Any]:
    """Form values that reproduce the built-in demo campaign."""
    demo = DEMO_CONFIG
    params = demo["training"]["params"]
    return {
        "name": "my-campaign",
        "samples": [
            {"process": p, "source": "demo", "n": spec["demo"]["n"], "seed": spec["demo"]["seed"]}
            for p, spec in demo["processes"].items()
        ],
        "reference": demo["reference"],
        "systematics": [
            {"name": s["name"], "process": s["process"], "up": "demo", "down": "demo"}
            for s in demo["systematics"]
        ],
        "hidden_layers": params["hidden_layers"],
        "width": params["width"],
        "activation": "silu",
        "max_steps": params["max_steps"],
        "batch_size": params["batch_size"],
        "ensemble_size": demo["training"]["ensemble_size"],
        "members_per_job": demo["training"]["members_per_job"],
        "grid": "",
        "launcher": "local",
        "machine_type": "local",
        "gpu_type": None,
        "gpu_count": 0,
        "spot": False,
        "zones": "",
        "budget": 0.0,
        "max_concurrency": 2,
        "nuisances": ", ".join(demo["fit"].get("nuisances", [])),
        "fit": True,
        "impacts": True,
        "scan": True,
        "toys": False,
        "n_toys": 20,
    }


def parse_grid(text: str) -> tuple[dict[str, list[Any]], list[str]]:
    """'key = v1, v2' per line -> {key: [v1, v2]}; values are Python literals (numbers, strings)."""
    grid: dict[str, list[Any]] = {}
    errors: list[str] = []
    for lineno, line in enumerate((text or "").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            errors.append(f"line {lineno}: expected 'key = value, value, ...', got {line!r}")
            continue
        key, values = (part.strip() for part in line.split("=", 1))
        if key not in GRID_KEYS:
            errors.append(f"line {lineno}: unknown key {key!r}; allowed: {', '.join(GRID_KEYS)}")
            continue
        parsed = []
        for raw in (v.strip() for v in values.split(",")):
            if not raw:
                continue
            try:
                parsed.append(ast.literal_eval(raw))
            except (ValueError, SyntaxError):
                parsed.append(raw)
        if not parsed:
            errors.append(f"line {lineno}: {key} has no values")
            continue
        grid[key] = parsed
    return grid, errors


def _sample_spec(row: Mapping[str, Any], n_default: int = 20000) -> tuple[dict | None, str | None]:
    process = str(row.get("process") or "").strip()
    source = str(row.get("source") or "").strip()
    if not process:
        return None, "a sample row has no process name"
    if source in ("", "demo"):
        if process not in DEMO_PROCESSES:
            return (
                None,
                f"{process}: the demo simulator knows only {', '.join(DEMO_PROCESSES)}; give a file path",
            )
        n = row.get("n")
        n = n_default if n is None or (isinstance(n, float) and math.isnan(n)) else n
        if int(n) <= 0:
            return None, f"{process}: number of events must be positive, got {n}"
        seed = row.get("seed")
        seed = 0 if seed is None or (isinstance(seed, float) and math.isnan(seed)) else int(seed)
        return {"demo": {"process": process, "n": int(n), "seed": seed}}, None
    return {"path": source}, None


def build_config(values: Mapping[str, Any]) -> FormResult:
    """Turn form values into a campaign config; every problem is filed under its form field."""
    errors: dict[str, list[str]] = {}

    def err(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    name = str(values.get("name") or "").strip()
    if not name:
        err("name", "give the campaign a name")
    processes: dict[str, dict] = {}
    for row in values.get("samples") or []:
        spec, problem = _sample_spec(row)
        if problem:
            err("samples", problem)
        elif spec is not None:
            if row["process"] in processes:
                err("samples", f"process {row['process']!r} appears twice")
            processes[str(row["process"]).strip()] = spec
    if len(processes) < 2:
        err("samples", "at least two processes are needed (one is the reference)")
    reference = values.get("reference")
    if reference not in processes:
        err(
            "reference",
            f"the reference must be one of the processes: {', '.join(processes) or 'none yet'}",
        )

    systematics = []
    for i, row in enumerate(values.get("systematics") or []):
        sname, proc = str(row.get("name") or "").strip(), str(row.get("process") or "").strip()
        if not sname and not proc:
            continue
        if not sname or proc not in processes:
            err(
                "systematics",
                f"row {i + 1}: needs a name and one of the processes {', '.join(processes)}",
            )
            continue
        specs: dict[str, dict[str, Any]] = {}
        for k, direction in (("up", 1.0), ("down", -1.0)):
            src = str(row.get(k) or "demo").strip()
            if src == "demo":
                base = processes[proc].get("demo")
                if base is None:
                    err(
                        "systematics",
                        f"row {i + 1}: 'demo' variations need a demo process, {proc} is a file",
                    )
                    continue
                seed = base["seed"] + 100 * (i + 1) + (1 if direction > 0 else 2)
                specs[k] = {
                    "demo": {
                        "process": proc,
                        "n": base["n"],
                        "seed": seed,
                        "alpha": {sname: direction},
                    }
                }
            else:
                specs[k] = {"path": src}
        if len(specs) == 2:
            systematics.append({"name": sname, "process": proc, **specs})

    params: dict[str, Any] = {}
    for key, low in (("hidden_layers", 1), ("width", 1), ("max_steps", 1), ("batch_size", 1)):
        v = values.get(key)
        if v is None or int(v) < low:
            err("architecture", f"{key.replace('_', ' ')} must be at least {low}")
        else:
            params[key] = int(v)
    if values.get("activation") not in ACTIVATIONS:
        err("architecture", f"activation must be one of {', '.join(ACTIVATIONS)}")
    else:
        params["activation"] = values["activation"]
    ens, per_job = int(values.get("ensemble_size") or 0), int(values.get("members_per_job") or 0)
    if ens < 1:
        err("ensemble_size", "ensemble size must be at least 1")
    if per_job < 1 or (ens >= 1 and per_job > ens):
        err("ensemble_size", f"members per job must be between 1 and the ensemble size ({ens})")
    grid, grid_errors = parse_grid(values.get("grid") or "")
    for e in grid_errors:
        err("grid", e)
    for key in grid:
        params.pop(key, None)  # a grid key overrides the fixed value

    launcher = values.get("launcher")
    if launcher not in LAUNCHERS:
        err("launcher", f"launcher must be one of {', '.join(LAUNCHERS)}")
    machine = str(values.get("machine_type") or "").strip()
    gpu_type = values.get("gpu_type") or None
    gpu_count = int(values.get("gpu_count") or 0)
    if gpu_count < 0:
        err("machine", f"the GPU count cannot be negative, got {gpu_count}")
    if gpu_count > 0 and not gpu_type:
        err("machine", f"{gpu_count} GPU(s) asked for but no GPU type chosen")
    if not machine:
        err("machine", "choose a machine type")
    if launcher == "local" and machine != "local":
        err("machine", "the local launcher runs on this machine: machine type must be 'local'")
    if launcher == "gce" and machine == "local":
        err("machine", "the gce launcher needs a cloud machine type, not 'local'")
    if gpu_type and gpu_count < 1:
        err("machine", f"{gpu_type} chosen but GPU count is {gpu_count}")
    zones = [
        z.strip() for z in str(values.get("zones") or "").replace(";", ",").split(",") if z.strip()
    ]
    if launcher == "gce" and not zones:
        err("zones", "give at least one zone for the gce launcher, e.g. us-central1-a")
    budget = values.get("budget")
    budget = float(budget) if budget not in (None, "") else 0.0
    if budget < 0:
        err("budget", "the budget cannot be negative")

    backend = {
        "launcher": launcher,
        "machine_type": machine,
        "gpu_type": gpu_type if gpu_count else None,
        "gpu_count": gpu_count if gpu_type else 0,
        "spot": bool(values.get("spot")),
        "zones": zones,
        "max_concurrency": int(values.get("max_concurrency") or 0),
        "budget_usd": budget if budget > 0 else None,
    }
    config: dict[str, Any] = {
        "name": name,
        "backend": backend,
        "processes": processes,
        "reference": reference,
        "systematics": systematics,
        "training": {
            "ensemble_size": ens,
            "members_per_job": per_job,
            "params": params,
            "grid": grid,
        },
        "fit": {
            "enabled": bool(values.get("fit")),
            "nuisances": [
                n.strip() for n in str(values.get("nuisances") or "").split(",") if n.strip()
            ],
        },
        "impacts": {"enabled": bool(values.get("fit") and values.get("impacts"))},
        "scan": {"enabled": bool(values.get("fit") and values.get("scan"))},
        "toys": {
            "enabled": bool(values.get("fit") and values.get("toys")),
            "n_toys": int(values.get("n_toys") or 0),
        },
    }
    if int(values.get("max_concurrency") or 0) < 1:
        err("max_concurrency", "at least 1 job must be allowed to run at a time")
    if values.get("toys") and int(values.get("n_toys") or 0) < 1:
        err("n_toys", "the number of toys must be at least 1")
    if (values.get("impacts") or values.get("scan") or values.get("toys")) and not values.get(
        "fit"
    ):
        err("stages", "impacts, scan and toys need the fit stage")
    return FormResult(config=config, errors=errors)


def field_for_path(message: str) -> str | None:
    """The form field a backend validation message ('key.path: problem') belongs to."""
    path = message.split(":", 1)[0].strip()
    best, best_len = None, -1
    for field, prefixes in FIELD_PATHS.items():
        for prefix in prefixes:
            if (
                path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "[")
            ) and len(prefix) > best_len:
                best, best_len = field, len(prefix)
    return best


def file_backend_errors(messages: Sequence[str]) -> dict[str, list[str]]:
    """Backend messages grouped by form field; unmatched ones under '_general'."""
    out: dict[str, list[str]] = {}
    for m in messages:
        out.setdefault(field_for_path(m) or "_general", []).append(m)
    return out


def merge_errors(
    form: Mapping[str, Sequence[str]], backend: Mapping[str, Sequence[str]]
) -> dict[str, list[str]]:
    """The form's own messages, plus the backend validation's for every field the form did
    not already flag (the backend's limits -- e.g. at most 16 GPUs, a budget up to 1e9 USD --
    are the ones that count; a field shows one explanation, not two of the same problem)."""
    out = {k: list(v) for k, v in form.items()}
    for field, messages in backend.items():
        if field not in out:
            out[field] = list(messages)
    return out


def as_plain(obj: Any) -> dict[str, Any]:
    """A dict from a dataclass or a mapping (estimate rows)."""
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, "__dataclass_fields__"):
        return {k: getattr(obj, k) for k in obj.__dataclass_fields__}
    return dict(vars(obj))


def _task_of(job: Mapping[str, Any]) -> str:
    """The ratio task of a train job (as planned); fit-stage jobs are grouped by kind."""
    if job.get("kind") != "train":
        return "(fit stage)"
    return str(job.get("task") or "(train)")


def estimate_breakdown(per_job: Sequence[Mapping[str, Any]], machine: Mapping | None = None):
    """The estimate per job kind and ratio task: jobs, machine-hours, GPU-hours, price per
    machine-hour and cost, with the machine type, GPUs and spot / on-demand of the config."""
    import pandas as pd

    if not per_job:
        return pd.DataFrame()
    df = pd.DataFrame([dict(j) for j in per_job])
    df["task"] = [_task_of(j) for j in per_job]
    g = (
        df.groupby(["kind", "task"], sort=False)
        .agg(
            jobs=("name", "size"),
            hours=("hours", "sum"),
            gpu_hours=("gpu_hours", "sum"),
            price=("price_per_hour", "max"),
            cost=("cost", "sum"),
        )
        .reset_index()
    )
    out = pd.DataFrame(
        {
            "kind": g["kind"],
            "task": g["task"],
            "jobs": g["jobs"].astype(int),
            "machine-hours": [f"{v:,.2f}" for v in g["hours"]],
            "GPU-hours": [f"{v:,.2f}" for v in g["gpu_hours"]],
            "price (USD/h)": [f"{v:,.3f}" for v in g["price"]],
            "cost (USD)": [f"{v:,.2f}" for v in g["cost"]],
        }
    )
    for key, value in (machine or {}).items():
        out[key] = value
    return out


def ratio_task_names(config: Mapping[str, Any]) -> list[str]:
    """The ratio tasks the backend will train for this config (for the preview under the form)."""
    ref = config.get("reference")
    tasks = [f"{p}_vs_{ref}" for p in config.get("processes", {}) if p != ref]
    for s in config.get("systematics", []):
        tasks += [f"{s['name']}_{d}_{s['process']}" for d in ("up", "down")]
    return tasks


def demo_config() -> dict[str, Any]:
    return copy.deepcopy(DEMO_CONFIG)
