"""Turn `backend.service` results into pandas DataFrames and small frozen views.

Two kinds of functions live here, neither calls Streamlit:

* pure reshaping (`records_frame`, `ensemble_band`, `diagnostic_checks`, `fit_view`, ...),
  tested with plain dicts;
* `load_*` wrappers that call one `backend.service` function and reshape its answer. Pages
  cache these with `st.cache_data`; the service picks its engine from the settings
  (DATABASE_URL / NSBI_HOME), so the dashboard never builds an SQL engine of its own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

# Most points any single chart receives; the service downsamples first, this is the backstop.
MAX_CHART_POINTS = 4000


# --------------------------------------------------------------------------- generic


def as_dict(obj: Any) -> dict:
    """A plain dict from a dataclass, a pydantic/SQLModel model, a mapping or a named tuple."""
    if obj is None:
        return {}
    if isinstance(obj, Mapping):
        return dict(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    if hasattr(obj, "_asdict"):
        return obj._asdict()
    if hasattr(obj, "__dict__"):
        return {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    raise TypeError(f"cannot turn {type(obj).__name__} into a dict for a table")


def records_frame(rows: Iterable[Any], columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A DataFrame from service rows (dicts, dataclasses or models); `columns` fixes the
    column set so an empty answer still has the expected columns."""
    records = [as_dict(r) for r in rows]
    df = pd.DataFrame.from_records(records)
    if columns is not None:
        for col in columns:
            if col not in df:
                df[col] = pd.Series(dtype=object)
    return df


def _enum_value(v: Any) -> Any:
    return getattr(v, "value", v)


def cap_points(df: pd.DataFrame, max_points: int = MAX_CHART_POINTS, *, by: Sequence[str] = ()) -> pd.DataFrame:
    """Keep at most `max_points` rows, thinning each group evenly (first and last kept).

    The service already downsamples; this guarantees no chart ships more than a few
    thousand points even if it did not.
    """
    if len(df) <= max_points:
        return df
    if not by:
        idx = np.unique(np.linspace(0, len(df) - 1, max_points).round().astype(int))
        return df.iloc[idx]
    groups = df.groupby(list(by), sort=False)
    per_group = max(2, max_points // max(1, groups.ngroups))
    parts = []
    for _, g in groups:
        if len(g) > per_group:
            idx = np.unique(np.linspace(0, len(g) - 1, per_group).round().astype(int))
            g = g.iloc[idx]
        parts.append(g)
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------- campaigns & jobs

CAMPAIGN_COLUMNS = ("id", "name", "status", "created", "n_jobs", "progress", "cost", "budget")
# service field -> dashboard column
CAMPAIGN_RENAMES = {"created_at": "created", "cost_usd": "cost", "budget_usd": "budget",
                    "estimate_cost_usd": "estimate_cost", "estimate_gpu_hours": "estimate_gpu_hours"}


def campaigns_frame(summaries: Iterable[Any]) -> pd.DataFrame:
    """One row per campaign; the per-state counts become columns `n_<state>`."""
    rows = []
    for s in summaries:
        d = as_dict(s)
        counts = d.pop("counts", None) or d.pop("counts_by_state", None) or {}
        estimate = d.pop("estimate", None)
        row = {k: _enum_value(v) for k, v in d.items() if not isinstance(v, (dict, list))}
        for state, n in as_dict(counts).items():
            row[f"n_{str(_enum_value(state)).lower()}"] = int(n)
        if estimate is not None:
            e = as_dict(estimate)
            for key in ("cost", "gpu_hours", "cost_usd"):
                if key in e:
                    row[f"estimate_{key}"] = e[key]
        rows.append(row)
    df = records_frame(rows).rename(columns={k: v for k, v in CAMPAIGN_RENAMES.items()})
    df = records_frame(df.to_dict("records"), CAMPAIGN_COLUMNS)
    if "progress" in df and len(df):
        df["progress"] = pd.to_numeric(df["progress"], errors="coerce").fillna(0.0).clip(0, 1)
    return df


JOB_COLUMNS = ("id", "campaign_id", "name", "kind", "task", "state", "attempts", "retries", "recoveries",
               "machine_type", "gpu_type", "spot", "started_at", "finished_at", "cost_usd")


def jobs_frame(rows: Iterable[Any]) -> pd.DataFrame:
    """One row per job, with enum states flattened to strings."""
    df = records_frame(rows)
    if "status" in df and "state" not in df:
        df = df.rename(columns={"status": "state"})
    df = records_frame(df.to_dict("records"), JOB_COLUMNS)
    for col in df.columns:
        if df[col].dtype == object and len(df):
            df[col] = df[col].map(_enum_value)
    return df


# --------------------------------------------------------------------------- metrics

METRIC_COLUMNS = ("job_id", "member", "step", "name", "value")


def metrics_frame(points: Iterable[Any]) -> pd.DataFrame:
    """Long metric points (member, step, name, value) as a typed DataFrame."""
    df = records_frame(points, METRIC_COLUMNS)
    if df.empty:
        return df[list(METRIC_COLUMNS)]
    df["step"] = pd.to_numeric(df["step"], errors="coerce")
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    df["member"] = df["member"].fillna(-1).astype(int)
    df = df.dropna(subset=["step", "value"])
    return cap_points(df, by=("name", "member", "job_id") if "job_id" in df else ("name", "member"))


def ensemble_band(metrics: pd.DataFrame, *, max_steps: int = 500) -> pd.DataFrame:
    """Mean, std (population), min and max over ensemble members per (name, step).

    When members were logged (or downsampled) at different steps, steps are put on a common
    grid of at most `max_steps` buckets first, so the band is computed over members that
    share a bucket rather than over whichever member happened to log a given step.
    """
    cols = ["name", "step", "mean", "std", "min", "max", "n"]
    if metrics.empty:
        return pd.DataFrame(columns=cols)
    parts = []
    for name, g in metrics.groupby("name", sort=True):
        g = g[["member", "step", "value"]].copy()
        if g["step"].nunique() > max_steps:
            edges = np.linspace(g["step"].min(), g["step"].max(), max_steps + 1)
            bucket = np.clip(np.searchsorted(edges, g["step"], side="right") - 1, 0, max_steps - 1)
            g["step"] = 0.5 * (edges[bucket] + edges[bucket + 1])
            g = g.groupby(["member", "step"], as_index=False)["value"].mean()
        agg = g.groupby("step")["value"].agg(["mean", "min", "max", "count"])
        agg["std"] = g.groupby("step")["value"].std(ddof=0).fillna(0.0)
        agg = agg.rename(columns={"count": "n"}).reset_index()
        agg["name"] = name
        parts.append(agg[cols])
    return pd.concat(parts, ignore_index=True)


def ensembles(train_jobs: pd.DataFrame) -> dict[str, list[int]]:
    """Train jobs grouped into ensembles: {"<task> g<grid point>": [job ids]}.

    Jobs are named `train-<task>-g<grid>-m<first>-<last>` by the campaign expansion; a job
    whose name does not follow that pattern forms its own group under its task.
    """
    groups: dict[str, list[int]] = {}
    for r in train_jobs.itertuples():
        name = str(getattr(r, "name", "") or "")
        task = getattr(r, "task", None) or "task"
        grid = re.search(r"-g(\d+)-m\d+", name)
        key = f"{task} g{grid.group(1)}" if grid else f"{task} ({name or r.id})"
        groups.setdefault(key, []).append(int(r.id))
    return groups


def label_members(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-job metric frames; with several jobs, members become 'j<job>/m<member>'
    so members of different jobs (each counting from 0) stay distinct series."""
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=list(METRIC_COLUMNS))
    df = pd.concat(frames, ignore_index=True)
    if df["job_id"].nunique() > 1:
        df["member"] = "j" + df["job_id"].astype(str) + "/m" + df["member"].astype(str)
    return df


# service column -> (label shown, factor to the unit in the label); other columns are ignored.
RESOURCE_LABELS: dict[str, tuple[str, float]] = {
    "gpu_util_mean": ("GPU utilisation (%)", 1.0),
    "gpu_util_percent": ("GPU utilisation (%)", 1.0),
    "gpu_memory_bytes": ("GPU memory (GB)", 1e-9),
    "gpu_memory_used_bytes": ("GPU memory (GB)", 1e-9),
    "gpu_power_w": ("GPU power (W)", 1.0),
    "gpu_power_watts": ("GPU power (W)", 1.0),
    "cpu_percent": ("CPU (%)", 1.0),
    "rss_bytes": ("RSS (GB)", 1e-9),
}


def resources_frame(samples: Iterable[Any]) -> pd.DataFrame:
    """Resource samples in long form (time, job_id, name, value).

    Accepts long rows ({time, job_id, name, value}) or the service's wide rows with one column
    per resource (cpu_percent, rss_bytes, gpu_util_mean, ...); time may be a timestamp or epoch
    seconds. Known resources are renamed to labels with units and bytes become GB.
    """
    df = records_frame(samples)
    if df.empty:
        return pd.DataFrame(columns=["time", "job_id", "name", "value"])
    time_col = next((c for c in ("time", "t", "timestamp", "ts") if c in df), None)
    if time_col is None:
        raise ValueError(f"resource samples have no time column (columns: {sorted(df.columns)})")
    df = df.rename(columns={time_col: "time"})
    if "job_id" not in df:
        df["job_id"] = -1
    if "name" not in df or "value" not in df:
        value_cols = [c for c in df.columns if c in RESOURCE_LABELS]
        df = df.melt(id_vars=["time", "job_id"], value_vars=value_cols, var_name="name", value_name="value")
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    known = df["name"].isin(list(RESOURCE_LABELS))
    df.loc[known, "value"] = df.loc[known, "value"] * df.loc[known, "name"].map(lambda n: RESOURCE_LABELS[n][1])
    df.loc[known, "name"] = df.loc[known, "name"].map(lambda n: RESOURCE_LABELS[n][0])
    if pd.api.types.is_numeric_dtype(df["time"]):
        df["time"] = pd.to_datetime(df["time"], unit="s", utc=True)
    else:
        df["time"] = pd.to_datetime(df["time"], utc=True, errors="coerce")
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    df = df.dropna(subset=["time", "value"])[["time", "job_id", "name", "value"]]
    return cap_points(df, by=("name", "job_id"))


def sum_resources(resources: pd.DataFrame, *, freq: str = "1min") -> pd.DataFrame:
    """Resources summed over jobs per time bucket: each job's mean in the bucket, then added."""
    if resources.empty:
        return resources
    r = resources.copy()
    r["time"] = r["time"].dt.floor(freq)
    per_job = r.groupby(["time", "name", "job_id"], as_index=False)["value"].mean()
    total = per_job.groupby(["time", "name"], as_index=False)["value"].sum()
    total["job_id"] = "all"
    return total[["time", "job_id", "name", "value"]]


# --------------------------------------------------------------------------- diagnostics

# name -> (direction, green limit, amber limit, what is measured). A check is green when the
# value is within the green limit, amber within the amber limit, red beyond it. The page
# shows these thresholds next to each light.
DIAGNOSTIC_THRESHOLDS: dict[str, tuple[str, float, float, str]] = {
    "closure_chi2_ndf": ("below", 1.5, 3.0, "worst χ²/ndf over observables (reference × r̂ vs numerator)"),
    "normalisation": ("below", 0.02, 0.05, "|E_ref[r̂] − 1|: the reweighted reference keeps its yield"),
    "calibration": ("below", 2.0, 3.0, "largest deviation of the ensemble reliability curve, in σ"),
    "overtraining": ("below", 0.02, 0.05, "worst member (holdout − train loss) / train loss"),
    "ensemble_spread": ("below", 0.02, 0.05, "spread (std / mean) of the members' normalisations"),
    "saturation": ("below", 0.001, 0.01, "fraction of events with |log r̂| beyond the saturation limit"),
    "auc": ("above", 0.5, 0.5, "AUC on holdout events (0.5: the classes are indistinguishable)"),
}


def traffic_light(value: float | None, check: str) -> str:
    """'green', 'amber', 'red' or 'unknown' for a value under DIAGNOSTIC_THRESHOLDS[check]."""
    if value is None or not math.isfinite(float(value)):
        return "unknown"
    direction, green, amber, _ = DIAGNOSTIC_THRESHOLDS[check]
    v = float(value)
    if direction == "below":
        return "green" if v <= green else "amber" if v <= amber else "red"
    return "green" if v > green else "amber" if v >= amber else "red"


def threshold_text(check: str) -> str:
    direction, green, amber, _ = DIAGNOSTIC_THRESHOLDS[check]
    if direction == "below":
        return f"green ≤ {green:g}, amber ≤ {amber:g}"
    return f"green > {green:g}"


def format_value(v: Any) -> str:
    """A number with 4 significant digits, or 'n/a' when missing or not finite."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "n/a" if v is None else str(v)
    return f"{f:.4g}" if math.isfinite(f) else "n/a"


def _get(d: Mapping, *keys: str, default=None):
    for k in keys:
        if k in d and d[k] is not None:
            return d[k]
    return default


def _floats(values: Any) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in (values or [])], dtype=float)


@dataclass(frozen=True)
class DiagnosticsView:
    """The diagnostics of one ratio task in plotting shape."""

    task: str
    checks: pd.DataFrame                  # check, value, threshold, status, description
    calibration: pd.DataFrame             # label, predicted, observed[, error]
    closure: tuple[dict, ...]             # {observable, edges, numerator, reweighted, denominator, chi2, ndf}
    spread: pd.DataFrame                  # member, normalisation, auc (per-member values)
    roc: pd.DataFrame                     # label, fpr, tpr, auc
    losses: pd.DataFrame                  # member, train_loss, holdout_loss, best_val_loss
    auc: float | None = None


def _calibration_frame(curves: Any) -> pd.DataFrame:
    """Reliability curves: the engine's [{member|None, mean_score, observed_fraction, observed_error}]."""
    frames = []
    for c in curves or []:
        member = c.get("member")
        label = "ensemble" if member is None else f"member {member}"
        f = pd.DataFrame({"label": label, "predicted": _floats(_get(c, "mean_score", "predicted")),
                          "observed": _floats(_get(c, "observed_fraction", "observed"))})
        err = _get(c, "observed_error", "error")
        if err is not None:
            f["error"] = _floats(err)
        frames.append(f.dropna(subset=["predicted", "observed"]))
    if not frames:
        return pd.DataFrame(columns=["label", "predicted", "observed", "error"])
    return pd.concat(frames, ignore_index=True)


def _closure_hist(c: Mapping) -> dict:
    """The engine's Closure dict in the keys `figures.closure` draws."""
    return {"observable": c.get("observable", "x"), "edges": _get(c, "bin_edges", "edges", default=[]),
            "numerator": _floats(_get(c, "target", "numerator")),
            "numerator_err": _get(c, "target_error", "numerator_err"),
            "reweighted": _floats(c.get("reweighted")), "reweighted_err": _get(c, "reweighted_error", "reweighted_err"),
            "denominator": _get(c, "reference", "denominator"), "chi2": c.get("chi2"), "ndf": c.get("ndf")}


def diagnostics_view(task: str, diag: Mapping) -> DiagnosticsView:
    """Parse one ratio task's diagnostics (`sbi_engine.ratio.diagnostics.Diagnostics.to_dict()`).

    Every check whose input is missing shows as 'unknown' rather than failing the page.
    """
    cal = _calibration_frame(diag.get("calibration"))
    closure = tuple(_closure_hist(c) for c in diag.get("closure") or [])
    m_norm = _floats(diag.get("member_normalization"))
    m_auc = _floats(diag.get("member_auc"))
    n = max(len(m_norm), len(m_auc))
    spread = pd.DataFrame({"member": np.arange(n),
                           "normalisation": np.pad(m_norm, (0, n - len(m_norm)), constant_values=np.nan),
                           "auc": np.pad(m_auc, (0, n - len(m_auc)), constant_values=np.nan)})
    losses = pd.DataFrame(diag.get("losses") or [], columns=None)
    if losses.empty:
        losses = pd.DataFrame(columns=["member", "train_loss", "holdout_loss", "best_val_loss"])
    auc = diag.get("auc")
    roc = pd.DataFrame(columns=["label", "fpr", "tpr", "auc"])
    if diag.get("roc_fpr") and diag.get("roc_tpr"):
        roc = pd.DataFrame({"label": "ensemble (holdout)", "fpr": _floats(diag["roc_fpr"]),
                            "tpr": _floats(diag["roc_tpr"]), "auc": np.nan if auc is None else float(auc)})

    ens_curve = next((c for c in diag.get("calibration") or [] if c.get("member") is None), None)
    norm = diag.get("normalization", diag.get("normalisation"))
    gaps = []
    for r in losses.to_dict("records"):
        train, hold = r.get("train_loss"), r.get("holdout_loss")
        if train is not None and hold is not None and np.isfinite(train) and train > 0:
            gaps.append((hold - train) / train)
    finite_norm = m_norm[np.isfinite(m_norm)]
    values: dict[str, float | None] = {
        "closure_chi2_ndf": max((float(c["chi2"]) / max(float(c["ndf"]), 1.0) for c in closure
                                 if c.get("chi2") is not None and c.get("ndf")), default=None),
        "normalisation": abs(float(norm) - 1.0) if norm is not None else None,
        "calibration": (float(ens_curve["max_deviation"]) if ens_curve and ens_curve.get("max_deviation") is not None
                        else None),
        "overtraining": max(gaps) if gaps else None,
        "ensemble_spread": (float(finite_norm.std() / abs(finite_norm.mean()))
                            if finite_norm.size > 1 and finite_norm.mean() != 0 else None),
        "saturation": diag.get("saturated_fraction"),
        "auc": float(auc) if auc is not None else None,
    }
    checks = pd.DataFrame([
        {"check": name, "value": v, "threshold": threshold_text(name), "status": traffic_light(v, name),
         "description": DIAGNOSTIC_THRESHOLDS[name][3]}
        for name, v in values.items()
    ])
    return DiagnosticsView(task=task, checks=checks, calibration=cal, closure=closure, spread=spread,
                           roc=roc, losses=losses, auc=values["auc"])


# --------------------------------------------------------------------------- fit


@dataclass(frozen=True)
class FitView:
    """A fit result in plotting shape: best fit of the POI, pulls, impacts, correlation, scan, toys."""

    poi: str
    mu_hat: float | None
    sigma: float | None
    sigma_up: float | None
    sigma_down: float | None
    data: str
    pulls: pd.DataFrame          # name, pull, constraint
    impacts: pd.DataFrame        # name, prefit_up, prefit_down, postfit_up, postfit_down[, pull, constraint]
    corr_names: tuple[str, ...]
    corr_matrix: np.ndarray
    scan: pd.DataFrame           # value, q
    toys: np.ndarray             # pulls of the POI over toys

    @property
    def empty(self) -> bool:
        return (self.mu_hat is None and self.pulls.empty and self.impacts.empty and self.scan.empty
                and self.toys.size == 0)


def _name_rows(obj: Any, value_key: str | None = None) -> list[dict]:
    """[{name, ...}] from either a list of dicts with 'name' or a {name: {...}} mapping."""
    if not obj:
        return []
    if isinstance(obj, Mapping):
        out = []
        for k, v in obj.items():
            out.append(dict(v, name=k) if isinstance(v, Mapping) else {"name": k, value_key or "value": v})
        return out
    return [dict(r) for r in obj]


def _pulls_frame(result: Mapping, poi: str) -> pd.DataFrame:
    rows = _name_rows(_get(result, "pulls"), "pull")
    if not rows:
        values = _get(result, "bestfit", "values", "best_fit", default={})
        errors = _get(result, "errors", "uncertainties", default={})
        prior = _get(result, "prior_widths", default={})
        rows = [{"name": k, "pull": float(v) / float(prior.get(k, 1.0)),
                 "constraint": float(errors.get(k, np.nan)) / float(prior.get(k, 1.0))}
                for k, v in values.items() if k != poi and k not in _get(result, "free_parameters", default=())]
    df = pd.DataFrame(rows, columns=None if rows else ["name", "pull", "constraint"])
    if df.empty:
        return pd.DataFrame(columns=["name", "pull", "constraint"])
    df = df.rename(columns={"value": "pull", "error": "constraint", "postfit_constraint": "constraint"})
    if "constraint" not in df:
        df["constraint"] = np.nan
    return df[df["name"] != poi][["name", "pull", "constraint"]].reset_index(drop=True)


def _impacts_frame(result: Mapping, pulls: pd.DataFrame) -> pd.DataFrame:
    cols = ["name", "prefit_up", "prefit_down", "postfit_up", "postfit_down"]
    rows = _name_rows(_get(result, "impacts"))
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows)
    aliases = {"pre_up": "prefit_up", "pre_down": "prefit_down", "post_up": "postfit_up", "post_down": "postfit_down"}
    df = df.rename(columns=aliases)
    missing = [c for c in cols if c not in df]
    if missing:
        raise ValueError(f"fit result 'impacts' lacks columns {missing} (has {sorted(df.columns)})")
    df = df[cols]
    if not pulls.empty:
        df = df.merge(pulls, on="name", how="left")
    return df


def fit_view(result: Mapping) -> FitView:
    """Parse a fit result JSON (values, errors, pulls, impacts, correlation, scan, toys).

    Accepted keys: poi, data, bestfit|values, errors, pulls, impacts, correlation ({names,
    matrix}), scan ({values, q} or {values, delta_nll} or a list of {value, q}), toys ({pulls}
    or a list of pulls). Missing pieces produce empty frames so the page can say so.
    """
    poi = str(_get(result, "poi", default="mu"))
    values = _get(result, "bestfit", "values", "best_fit", default={})
    errors = _get(result, "errors", "uncertainties", default={})
    mu_hat = _get(result, "mu_hat", default=values.get(poi))
    sigma = _get(result, "sigma", "mu_err", default=errors.get(poi))
    minos = _get(result, "minos", default={}).get(poi, {}) if isinstance(_get(result, "minos", default={}), Mapping) else {}
    pulls = _pulls_frame(result, poi)
    impacts = _impacts_frame(result, pulls)

    corr = _get(result, "correlation", "corr", default={})
    names = tuple(_get(corr, "names", "parameters", default=())) if isinstance(corr, Mapping) else ()
    matrix = np.asarray(_get(corr, "matrix", "values", default=[]) if isinstance(corr, Mapping) else corr, float)

    scan_raw = _get(result, "scan", default={})
    if isinstance(scan_raw, Mapping) and scan_raw:
        xs = _get(scan_raw, "values", poi, "mu", default=[])
        q = _get(scan_raw, "q", "two_delta_nll")
        if q is None and "delta_nll" in scan_raw:
            q = 2.0 * np.asarray(scan_raw["delta_nll"], float)
        scan = pd.DataFrame({"value": np.asarray(xs, float), "q": np.asarray(q, float)})
        if "expected" in scan_raw:
            scan["expected"] = np.asarray(scan_raw["expected"], float)
    elif scan_raw:
        scan = pd.DataFrame(list(scan_raw))
    else:
        scan = pd.DataFrame(columns=["value", "q"])

    toys_raw = _get(result, "toys", default=[])
    if isinstance(toys_raw, Mapping):
        toys_raw = _get(toys_raw, "pulls", default=[])
    return FitView(
        poi=poi,
        mu_hat=float(mu_hat) if mu_hat is not None else None,
        sigma=float(sigma) if sigma is not None else None,
        sigma_up=float(minos["up"]) if "up" in minos else None,
        sigma_down=float(minos["down"]) if "down" in minos else None,
        data=str(_get(result, "data", "dataset", default="asimov")),
        pulls=pulls, impacts=impacts, corr_names=names, corr_matrix=matrix, scan=scan,
        toys=np.asarray(toys_raw, dtype=float).ravel(),
    )


def merge_fit_results(results: Iterable[Any]) -> dict:
    """Merge the results of a campaign's fit, impacts, scan and toys jobs into one dict.

    Each item is a service row with a `result` dict (or the dict itself); later jobs override
    earlier ones key by key, so the newest fit wins.
    """
    merged: dict = {}
    for r in results:
        d = as_dict(r)
        payload = d.get("payload", d.get("result", d))
        if isinstance(payload, Mapping):
            merged.update({k: v for k, v in payload.items() if v not in (None, {}, [])})
    return merged


# --------------------------------------------------------------------------- cost


def cost_frame(rows: Iterable[Any]) -> pd.DataFrame:
    """Cost summary rows (group keys + gpu_hours + cost) as a DataFrame."""
    df = records_frame(rows)
    for col in ("gpu_hours", "cost"):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce").fillna(0.0)
    if "spot" in df:
        df["spot"] = df["spot"].map(lambda s: "spot" if s in (True, "spot", 1, "true") else "on-demand")
    if "day" in df:
        df["day"] = pd.to_datetime(df["day"], errors="coerce")
    for col in ("gpu", "machine", "campaign_name"):
        if col in df:
            df[col] = df[col].fillna("none").astype(str)
    return df


def spend_over_time(usage: pd.DataFrame, *, time_col: str = "day") -> pd.DataFrame:
    """Spend per time bucket (columns time, cost) from a usage table grouped by day."""
    if usage.empty or time_col not in usage:
        return pd.DataFrame(columns=["time", "cost"])
    out = usage.groupby(time_col, as_index=False)["cost"].sum().rename(columns={time_col: "time"})
    return out.sort_values("time").reset_index(drop=True)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# --------------------------------------------------------------------------- service loaders
# Each calls one backend.service function (imported lazily: the service pulls in the database
# layer, which the pure helpers above do not need) and returns plotting-ready frames.


def _service():
    from backend import service

    return service


def load_campaigns() -> pd.DataFrame:
    return campaigns_frame(_service().list_campaigns())


def load_campaign(campaign_id: int) -> dict:
    return as_dict(_service().get_campaign(campaign_id))


def load_jobs(campaign_id: int | None = None, states: Sequence[str] | None = None, kind: str | None = None,
              offset: int = 0, limit: int = 50) -> tuple[pd.DataFrame, int]:
    rows, total = _service().list_jobs(campaign_id=campaign_id, states=list(states) if states else None,
                                       kind=kind, offset=offset, limit=limit)
    return jobs_frame(rows), int(total)


def load_metrics(job_id: int | None = None, campaign_id: int | None = None,
                 names: Sequence[str] | None = None, max_points: int = 2000) -> pd.DataFrame:
    return metrics_frame(_service().metric_series(job_id=job_id, campaign_id=campaign_id,
                                                  names=list(names) if names else None, max_points=max_points))


def load_resources(job_id: int | None = None, campaign_id: int | None = None, max_points: int = 2000) -> pd.DataFrame:
    return resources_frame(_service().resource_series(job_id=job_id, campaign_id=campaign_id, max_points=max_points))


def load_costs(group_by: Sequence[str]) -> pd.DataFrame:
    return cost_frame(_service().cost_summary(group_by=tuple(group_by)))


def load_fit(campaign_id: int) -> tuple[FitView, pd.DataFrame]:
    """The merged fit view of a campaign and the table of its fit-type results."""
    rows = [as_dict(r) for r in _service().fit_results(campaign_id)]
    table = records_frame([{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for r in rows])
    return fit_view(merge_fit_results(rows)), table


def load_events(job_id: int) -> pd.DataFrame:
    return records_frame(_service().job_events(job_id))


def load_diagnostics(campaign_id: int) -> dict[str, dict]:
    """{ratio task: diagnostics dict} of a campaign's trained ensembles ({} if none yet)."""
    service = _service()
    fn = getattr(service, "diagnostics", None) or getattr(service, "campaign_diagnostics", None)
    if fn is None:
        return {}
    raw = fn(campaign_id)
    if isinstance(raw, Mapping):
        return {str(k): dict(v) for k, v in raw.items()}
    out: dict[str, dict] = {}
    for row in raw or []:
        d = as_dict(row)
        task = str(d.get("task") or d.get("name") or f"job {d.get('job_id')}")
        out[task] = dict(d.get("diagnostics") or d.get("payload") or d)
    return out
