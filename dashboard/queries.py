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
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from backend.result_status import checks as _result_checks
from dashboard import formatting

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


def cap_points(
    df: pd.DataFrame, max_points: int = MAX_CHART_POINTS, *, by: Sequence[str] = ()
) -> pd.DataFrame:
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
CAMPAIGN_RENAMES = {
    "created_at": "created",
    "cost_usd": "cost",
    "budget_usd": "budget",
    "estimate_cost_usd": "estimate_cost",
    "estimate_gpu_hours": "estimate_gpu_hours",
}


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


JOB_COLUMNS = (
    "id",
    "campaign_id",
    "name",
    "kind",
    "task",
    "state",
    "attempts",
    "retries",
    "recoveries",
    "machine_type",
    "gpu_type",
    "spot",
    "started_at",
    "finished_at",
    "cost_usd",
)


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
        df = df.melt(
            id_vars=["time", "job_id"], value_vars=value_cols, var_name="name", value_name="value"
        )
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    known = df["name"].isin(list(RESOURCE_LABELS))
    df.loc[known, "value"] = df.loc[known, "value"] * df.loc[known, "name"].map(
        lambda n: RESOURCE_LABELS[n][1]
    )
    df.loc[known, "name"] = df.loc[known, "name"].map(lambda n: RESOURCE_LABELS[n][0])
    if pd.api.types.is_numeric_dtype(df["time"]):
        df["time"] = pd.to_datetime(df["time"], unit="s", utc=True)
    else:
        df["time"] = pd.to_datetime(df["time"], utc=True, errors="coerce")
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    df = df.dropna(subset=["time", "value"])[["time", "job_id", "name", "value"]]
    return cap_points(df, by=("name", "job_id"))


def sample_interval(resources: pd.DataFrame, default_s: float = 5.0) -> pd.Timedelta:
    """The typical time between two samples of one job (the median over jobs), whole seconds."""
    gaps = []
    for _, g in resources.groupby("job_id", sort=False):
        t = g["time"].drop_duplicates().sort_values()
        if len(t) > 1:
            gaps.append(t.diff().dropna().dt.total_seconds().median())
    seconds = float(np.median(gaps)) if gaps else default_s
    return pd.Timedelta(seconds=max(1, round(seconds)))


def sum_resources(
    resources: pd.DataFrame, *, freq: str | None = None, max_buckets: int = 400
) -> pd.DataFrame:
    """Resources summed over jobs per time bucket: each job's mean in the bucket, then added.

    The bucket is the workers' sampling interval (`sample_interval`), widened only so that the
    chart keeps at most `max_buckets` points: a campaign sampled every 5 s shows a point every
    5 s, not one a minute. A job that missed one bucket (its samples are not in phase with the
    others) keeps its last value for up to two buckets, so the sum does not dip."""
    if resources.empty:
        return resources
    r = resources.copy()
    if freq is None:
        span = r["time"].max() - r["time"].min()
        bucket = max(sample_interval(r), span / max_buckets)
        bucket = pd.Timedelta(seconds=max(1, math.ceil(bucket.total_seconds())))
    else:
        bucket = pd.Timedelta(freq)
    r["time"] = r["time"].dt.floor(bucket)
    per_job = r.groupby(["time", "name", "job_id"], as_index=False)["value"].mean()
    wide = per_job.pivot_table(index="time", columns=["name", "job_id"], values="value")
    grid = pd.date_range(wide.index.min(), wide.index.max(), freq=bucket)
    wide = wide.reindex(grid).ffill(limit=2)
    total = wide.T.groupby(level="name").sum(min_count=1).T
    total.index.name = "time"
    out = total.reset_index().melt(id_vars="time", var_name="name", value_name="value")
    out = out.dropna(subset=["value"]).sort_values(["name", "time"], ignore_index=True)
    out["job_id"] = "all"
    return out[["time", "job_id", "name", "value"]]


def split_gpu(resources: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(host rows: CPU and memory, GPU rows) of a long resources frame."""
    is_gpu = resources["name"].astype(str).str.startswith("GPU")
    return resources[~is_gpu], resources[is_gpu]


def no_gpu_note(launcher: str | None, gpu_types: Sequence[str | None] = ()) -> str:
    """Why a campaign's resource samples have no GPU readings, in plain words."""
    asked = sorted({str(g) for g in gpu_types if g})
    where = f"the {launcher} launcher" if launcher else "its launcher"
    if asked:
        return (
            f"No GPU readings: the jobs asked for {', '.join(asked)} but their workers found no "
            f"GPU (no NVIDIA driver/NVML where {where} ran them). CPU and memory only."
        )
    return (
        f"No GPU on this machine: {where} ran these jobs on the CPU, so there is no GPU panel; "
        "CPU and memory only."
    )


# --------------------------------------------------------------------------- diagnostics

# name -> (direction, green limit, amber limit, what is measured): one definition, shared with
# the result status (`sbi_engine.result_checks`, loaded without JAX by `backend.result_status`),
# so a RED light here is exactly a failed check there. The page shows them next to each light.
DIAGNOSTIC_THRESHOLDS: dict[str, tuple[str, float, float, str]] = (
    _result_checks.DIAGNOSTIC_THRESHOLDS
)
traffic_light = _result_checks.traffic_light


# A signal task (a physics process against the reference: "<process>_vs_<reference>") whose
# classifier separates the classes barely better than chance has learned almost nothing; its
# light is AMBER below this AUC (a warning, not a failed check: the result checks fail below
# AUC_MIN only). Systematic-variation tasks ("<syst>_up_<process>") are meant to be close to
# 0.5, so they keep the plain rule.
AUC_SIGNAL_WARN = 0.55


def is_signal_task(task: str) -> bool:
    """A ratio task of a physics process against the reference (not a systematic variation)."""
    return "_vs_" in str(task)


def threshold_text(
    check: str, task: str | None = None, limits: tuple[float, float] | None = None
) -> str:
    """The limits in words; ``limits`` = (green, red) of one ensemble (`diagnostic_limits`)."""
    direction, green, amber, _ = DIAGNOSTIC_THRESHOLDS[check]
    if limits is not None:
        green, amber = limits
    if direction == "below":
        return f"green ≤ {green:g}, amber ≤ {amber:g}"
    if check == "auc" and task is not None and is_signal_task(task):
        return f"green > {AUC_SIGNAL_WARN:g} (signal task), red < {amber:.4g}"
    if amber < green:
        return f"green > {green:g}, red < {amber:.4g}"
    return f"green > {green:g}"


def light(
    check: str,
    value: float | None,
    task: str | None = None,
    limits: tuple[float, float] | None = None,
) -> str:
    """The traffic light the Diagnostics page shows: `traffic_light` (RED exactly where the
    result check fails), with AUCs near 0.5 AMBER for signal tasks (`AUC_SIGNAL_WARN`)."""
    status = traffic_light(value, check, limits)
    if (
        check == "auc"
        and status == "green"
        and task is not None
        and is_signal_task(task)
        and value is not None
        and float(value) <= AUC_SIGNAL_WARN
    ):
        return "amber"
    return status


def format_value(v: Any) -> str:
    """A number on its own (no error known): `formatting.number`, 'n/a' when missing."""
    return formatting.number(v)


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
    checks: pd.DataFrame  # check, value, threshold, status, limit, description, remedy (RED only)
    calibration: pd.DataFrame  # label, predicted, observed[, error]
    closure: tuple[dict, ...]  # {observable, edges, numerator, reweighted, denominator, chi2, ndf}
    spread: pd.DataFrame  # member, normalisation, auc (per-member values)
    roc: pd.DataFrame  # label, fpr, tpr, auc
    losses: pd.DataFrame  # member, train_loss, holdout_loss, best_val_loss
    auc: float | None = None
    calibration_note: str = ""  # the local worst bin against the check's global value


def calibration_note(diag: Mapping) -> str:
    """How the calibration check reads the curve: its worst bin, and that deviation corrected
    for the number of bins looked at (what the check compares with its limit); and the
    logistic calibration slope (reported, not a check), which sees a too-flat small ratio."""
    curve = next((c for c in diag.get("calibration") or [] if c.get("member") is None), None)
    parts = []
    if curve and curve.get("max_deviation") is not None:
        local = float(curve["max_deviation"])
        bins, glob = curve.get("tested_bins"), curve.get("global_deviation")
        if not bins or glob is None or not math.isfinite(float(glob)):
            parts.append(f"Worst bin {local:.2f} σ from the diagonal (the check's value).")
        else:
            parts.append(
                f"Worst bin {local:.2f} σ from the diagonal; over the {int(bins)} bins looked "
                f"at that is {float(glob):.2f} σ globally, the check's value (limit "
                f"{DIAGNOSTIC_THRESHOLDS['calibration'][2]:g})."
            )
    b, err = diag.get("logit_slope"), diag.get("logit_slope_error")
    if b is not None and err is not None and math.isfinite(float(b)) and math.isfinite(float(err)):
        parts.append(
            f"Calibration slope {float(b):.3f} ± {float(err):.3f} (1 when calibrated, above 1 "
            f"when r̂ is too flat; {(float(b) - 1) / float(err):+.1f} σ, reported, not a check)."
        )
    return " ".join(parts)


def _calibration_frame(curves: Any) -> pd.DataFrame:
    """Reliability curves: the engine's [{member|None, mean_score, observed_fraction, observed_error}]."""
    frames = []
    for c in curves or []:
        member = c.get("member")
        label = "ensemble" if member is None else f"member {member}"
        f = pd.DataFrame(
            {
                "label": label,
                "predicted": _floats(_get(c, "mean_score", "predicted")),
                "observed": _floats(_get(c, "observed_fraction", "observed")),
            }
        )
        err = _get(c, "observed_error", "error")
        if err is not None:
            f["error"] = _floats(err)
        frames.append(f.dropna(subset=["predicted", "observed"]))
    if not frames:
        return pd.DataFrame(columns=["label", "predicted", "observed", "error"])
    return pd.concat(frames, ignore_index=True)


def _closure_hist(c: Mapping) -> dict:
    """The engine's Closure dict in the keys `figures.closure` draws."""
    return {
        "observable": c.get("observable", "x"),
        "edges": _get(c, "bin_edges", "edges", default=[]),
        "numerator": _floats(_get(c, "target", "numerator")),
        "numerator_err": _get(c, "target_error", "numerator_err"),
        "reweighted": _floats(c.get("reweighted")),
        "reweighted_err": _get(c, "reweighted_error", "reweighted_err"),
        "denominator": _get(c, "reference", "denominator"),
        "chi2": c.get("chi2"),
        "ndf": c.get("ndf"),
    }


def diagnostics_view(task: str, diag: Mapping) -> DiagnosticsView:
    """Parse one ratio task's diagnostics (`sbi_engine.ratio.diagnostics.Diagnostics.to_dict()`).

    Every check whose input is missing shows as 'unknown' rather than failing the page.
    """
    cal = _calibration_frame(diag.get("calibration"))
    closure = tuple(_closure_hist(c) for c in diag.get("closure") or [])
    m_norm = _floats(diag.get("member_normalization"))
    m_auc = _floats(diag.get("member_auc"))
    n = max(len(m_norm), len(m_auc))
    spread = pd.DataFrame(
        {
            "member": np.arange(n),
            "normalisation": np.pad(m_norm, (0, n - len(m_norm)), constant_values=np.nan),
            "auc": np.pad(m_auc, (0, n - len(m_auc)), constant_values=np.nan),
        }
    )
    losses = pd.DataFrame(diag.get("losses") or [], columns=None)
    if losses.empty:
        losses = pd.DataFrame(columns=["member", "train_loss", "holdout_loss", "best_val_loss"])
    auc = diag.get("auc")
    roc = pd.DataFrame(columns=["label", "fpr", "tpr", "auc"])
    if diag.get("roc_fpr") and diag.get("roc_tpr"):
        roc = pd.DataFrame(
            {
                "label": "ensemble (holdout)",
                "fpr": _floats(diag["roc_fpr"]),
                "tpr": _floats(diag["roc_tpr"]),
                "auc": np.nan if auc is None else float(auc),
            }
        )

    # the same numbers and limits as the result status (`sbi_engine.result_checks`)
    values = _result_checks.diagnostic_values(diag)
    limits = _result_checks.diagnostic_limits(diag)
    rows = []
    for name, v in values.items():
        status = light(name, v, task, limits[name])
        rows.append(
            {
                "check": name,
                "value": v,
                "threshold": threshold_text(name, task, limits[name]),
                "status": status,
                "limit": limits[name][1],
                "description": DIAGNOSTIC_THRESHOLDS[name][3],
                "remedy": _result_checks.REMEDIES[name] if status == "red" else "",
            }
        )
    checks = pd.DataFrame(rows)
    return DiagnosticsView(
        task=task,
        checks=checks,
        calibration=cal,
        closure=closure,
        spread=spread,
        roc=roc,
        losses=losses,
        auc=values["auc"],
        calibration_note=calibration_note(diag),
    )


# --------------------------------------------------------------------------- fit


@dataclass(frozen=True)
class FitView:
    """One fit run in plotting shape: best fit of the POI, pulls, impacts, correlation, scan, toys."""

    poi: str
    mu_hat: float | None
    sigma: float | None
    converged: bool | None
    breakdown: dict  # {"stat": .., "syst": ..} of the POI, when reported
    pulls: pd.DataFrame  # name, pull, constraint
    impacts: (
        pd.DataFrame
    )  # name, prefit_up, prefit_down, postfit_up, postfit_down, method[, pull, constraint]
    corr_names: tuple[str, ...]
    corr_matrix: np.ndarray
    scan: pd.DataFrame  # value, q  (q = -2 Delta ln L)
    toys: np.ndarray  # per-toy pulls of the POI (empty if only a summary was reported)
    toy_summary: dict  # n_toys, n_converged, pull_mean, pull_width, coverage_* (combined over jobs)
    data: str = "asimov"
    uncertainty: dict = field(
        default_factory=dict
    )  # hesse, nn, sim, total, included: the learned model's error components
    # per process ratio task: task, lambda, noise, residual, noise_to_signal (noise shrinkage)
    noise_shrinkage: list = field(default_factory=list)
    # every parameter: parameter, role, value, error, err_lo, err_hi, pull, constraint, note
    parameters: pd.DataFrame = field(default_factory=pd.DataFrame)
    scan_flags: tuple[str, ...] = ()  # the scan's own flags (not_converged, non_monotonic_*)
    scan_missing: int = 0  # scan points without a finite q (left out of the curve)
    mu_err_lo: float | None = None  # asymmetric (profile-likelihood) errors of the POI
    mu_err_hi: float | None = None
    fit_message: str = ""
    # several POIs: {"68"/"95": contour points (x, y, best, pois, area, correlation)} and
    # {poi: value, error, err_lo, err_hi}, {a: {b: correlation}} (from the fit job)
    contours: dict = field(default_factory=dict)
    pois: dict = field(default_factory=dict)
    poi_correlations: dict = field(default_factory=dict)
    # the fit job's CLs upper limit (observed, expected "-2".."2", extra, discovery) and its
    # expected (Asimov) result, where the run asked for them (compute.limits / .expected)
    limits: dict = field(default_factory=dict)
    expected: dict = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return (
            self.mu_hat is None
            and self.pulls.empty
            and self.impacts.empty
            and self.scan.empty
            and self.toys.size == 0
            and not self.toy_summary
        )


FIT_KINDS = ("fit", "impacts", "scan", "toys")
_IMPACT_COLS = ["name", "prefit_up", "prefit_down", "postfit_up", "postfit_down", "method"]


def fit_run_of(job_name: str) -> int:
    """The fit run a fit-stage job belongs to: 'fit', 'scan-001' -> 1; 'fit-r2', 'toys-r2-000' -> 2."""
    m = re.match(r"^(?:fit|impacts|scan|toys)-r(\d+)(?:-|$)", job_name or "")
    return int(m.group(1)) if m else 1


def fit_runs(rows: Iterable[Any]) -> dict[int, list[dict]]:
    """Service fit_results rows grouped by fit run (in job order within a run)."""
    runs: dict[int, list[dict]] = {}
    for r in rows:
        d = as_dict(r)
        runs.setdefault(fit_run_of(str(d.get("job_name", ""))), []).append(d)
    return dict(sorted(runs.items()))


def _impact_rows(items: Any, poi: str) -> list[dict]:
    rows = []
    for i in _name_rows(items):
        i = dict(i)
        i.setdefault("name", i.get("nuisance"))
        if i.get("poi", poi) == poi and i.get("name") is not None:
            rows.append(i)
    return rows


def merge_fit_results(rows: Iterable[Any]) -> dict:
    """Combine the results of one fit run's jobs into one dict for `fit_view`.

    The fit job gives the best fit, errors, pulls, correlation and covariance-based impacts;
    impacts jobs each refit a subset of nuisance parameters (their lists are joined, and a
    refit replaces the covariance estimate of the same parameter); scan jobs each cover some
    POI values (joined and sorted); toys jobs each fit some toys (pulls joined, summaries
    combined weighted by converged toys). Each row is a service row with a `payload` (the
    job's result summary) or the payload itself.
    """
    rows = [as_dict(r) for r in rows]
    payloads = [
        (r.get("kind") or r.get("payload", r).get("kind") or "fit", r.get("payload", r))
        for r in rows
    ]
    base: dict = {}
    for kind, p in payloads:  # the fit job's summary; any job's if there is no fit job
        if kind == "fit" or not base:
            base = dict(p)
    poi = str(base.get("poi") or "mu")
    refit: dict[str, dict] = {}
    scan_x: list[float] = []
    scan_q: list[float] = []
    scan_conv: list[bool] = []
    scan_nm: list[bool] = []
    scan_flags: list[str] = []
    toy_pulls: list[float] = []
    toy_parts: list[dict] = []
    for kind, p in payloads:
        for row in _impact_rows(
            p.get("impacts_refit") or (p.get("impacts") if kind == "impacts" else None), poi
        ):
            refit[row["name"]] = row
        scan = p.get("scan") if isinstance(p.get("scan"), Mapping) else None
        if scan:
            xs = _get(scan, "values", poi, default=[])
            qs = _get(scan, "q", "dq", "two_delta_nll")
            if qs is None and "delta_nll" in scan:
                qs = [2.0 * v for v in scan["delta_nll"]]
            xs = [float(v) for v in xs]
            qs = [np.nan if v is None else float(v) for v in (qs or [])]
            qs += [np.nan] * (len(xs) - len(qs))
            conv = list(scan.get("converged") or [True] * len(xs))
            nm = list(scan.get("non_monotonic") or [False] * len(xs))
            scan_x += xs
            scan_q += qs[: len(xs)]
            scan_conv += [bool(c) for c in (conv + [True] * len(xs))[: len(xs)]]
            scan_nm += [bool(c) for c in (nm + [False] * len(xs))[: len(xs)]]
            scan_flags += [str(f) for f in scan.get("flags") or [] if str(f) not in scan_flags]
        toys = p.get("toys")
        if isinstance(toys, Mapping):
            toy_pulls += [float(v) for v in toys.get("pulls") or []]
            if "pull_mean" in toys or "n_converged" in toys:
                toy_parts.append(dict(toys))
        elif isinstance(toys, list):
            toy_pulls += [float(v) for v in toys]
    merged = dict(base)
    cov_impacts = {
        r["name"]: dict(r, method=r.get("method", "covariance"))
        for r in _impact_rows(base.get("impacts_covariance") or [], poi)
    }
    if not refit and not cov_impacts:
        cov_impacts = {r["name"]: r for r in _impact_rows(base.get("impacts") or [], poi)}
    merged["impacts"] = list({**cov_impacts, **refit}.values())
    merged["scan"] = (
        {
            "values": scan_x,
            "q": scan_q,
            "converged": scan_conv,
            "non_monotonic": scan_nm,
            "flags": scan_flags,
        }
        if scan_x
        else {}
    )
    merged["toys"] = {"pulls": toy_pulls, "summary": _combine_toys(toy_parts)}
    merged["poi"] = poi
    return merged


def _combine_toys(parts: Sequence[Mapping]) -> dict:
    """Toy summaries of several jobs as one: counts added, means and coverages weighted by
    converged toys, widths combined from the pooled second moment."""
    if not parts:
        return {}
    n = np.array([float(p.get("n_converged", p.get("n_toys", 0)) or 0) for p in parts])
    total = float(n.sum())
    out: dict[str, float] = {
        "n_toys": float(sum(float(p.get("n_toys", 0) or 0) for p in parts)),
        "n_converged": total,
    }
    if total <= 0:
        return out
    mean = np.array([float(p.get("pull_mean", np.nan)) for p in parts])
    width = np.array([float(p.get("pull_width", np.nan)) for p in parts])
    m = float(np.sum(n * mean) / total)
    # pooled variance: within-job (sample variances, ddof=1) plus between-job spread of means
    ss = np.sum((n - 1).clip(min=0) * width**2 + n * (mean - m) ** 2)
    out["pull_mean"] = m
    out["pull_width"] = float(np.sqrt(ss / max(total - 1, 1)))
    for key in ("coverage_hesse_68", "coverage_profile_68", "coverage_profile_95"):
        vals = [float(p[key]) for p in parts if key in p and p[key] is not None]
        if len(vals) == len(parts):
            out[key] = float(np.sum(n * np.array(vals)) / total)
    return out


def _name_rows(obj: Any, value_key: str | None = None) -> list[dict]:
    """[{name, ...}] from either a list of dicts with 'name' or a {name: {...}} mapping."""
    if not obj:
        return []
    if isinstance(obj, Mapping):
        out = []
        for k, v in obj.items():
            out.append(
                dict(v, name=k) if isinstance(v, Mapping) else {"name": k, value_key or "value": v}
            )
        return out
    return [dict(r) for r in obj]


def _pulls_frame(result: Mapping, fit: Mapping, poi: str) -> pd.DataFrame:
    cols = ["name", "pull", "constraint"]
    rows = _name_rows(result.get("pulls"), "pull")
    if not rows:  # no pulls reported: nuisance values and errors of a unit-Gaussian constraint
        values, errors = fit.get("values") or {}, fit.get("errors") or {}
        rows = [
            {"name": k, "pull": v, "constraint": errors.get(k, np.nan)}
            for k, v in values.items()
            if k != poi
        ]
    if not rows:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(rows)
    if "constraint" not in df:
        df["constraint"] = np.nan
    return df[df["name"] != poi][cols].reset_index(drop=True)


def fit_view(result: Mapping) -> FitView:
    """A merged fit run (`merge_fit_results`) in plotting shape.

    Reads the engine's fit summary: mu_hat, sigma, converged, fit (FitResult.to_dict(): names,
    values, errors, correlation), pulls {name: {pull, constraint}}, breakdown, plus the merged
    impacts, scan {values, q} and toys {pulls, summary}. Missing pieces give empty frames.
    """
    poi = str(result.get("poi") or "mu")
    fit_raw = result.get("fit")
    fit: Mapping = fit_raw if isinstance(fit_raw, Mapping) else result
    values, errors = fit.get("values") or result.get("bestfit") or {}, fit.get("errors") or {}
    mu_hat = _get(result, "mu_hat", default=values.get(poi))
    sigma = _get(result, "sigma", default=errors.get(poi))
    pulls = _pulls_frame(result, fit, poi)
    impacts = pd.DataFrame(result.get("impacts") or [], columns=None)
    if impacts.empty:
        impacts = pd.DataFrame(columns=_IMPACT_COLS)
    else:
        missing = [c for c in _IMPACT_COLS[:5] if c not in impacts]
        if missing:
            raise ValueError(
                f"fit result 'impacts' lacks {missing} (has {sorted(impacts.columns)})"
            )
        if "method" not in impacts:
            impacts["method"] = ""
        impacts = impacts[_IMPACT_COLS]
        if not pulls.empty:
            impacts = impacts.merge(pulls, on="name", how="left")

    corr = fit.get("correlation", result.get("correlation"))
    if isinstance(corr, Mapping):
        names, matrix = tuple(corr.get("names") or ()), corr.get("matrix") or []
    else:
        names, matrix = tuple(fit.get("names") or ()), corr if corr is not None else []
    matrix = np.asarray([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)

    scan_raw = result.get("scan") or {}
    xs = np.asarray(scan_raw.get("values", []), float)
    scan = pd.DataFrame(
        {
            "value": xs,
            "q": np.asarray(scan_raw.get("q", []), float),
            "converged": np.asarray(scan_raw.get("converged") or [True] * len(xs), bool),
            "non_monotonic": np.asarray(scan_raw.get("non_monotonic") or [False] * len(xs), bool),
        }
    )
    scan_missing = int((scan["q"].isna() | ~scan["converged"]).sum())
    scan = (
        scan.dropna(subset=["value", "q"])
        .drop_duplicates("value")
        .sort_values("value")
        .reset_index(drop=True)
    )
    if scan_missing and not scan.empty:  # points whose fit did not converge are not curve points
        scan = scan[scan["converged"]].reset_index(drop=True)
    scan_flags = list(scan_raw.get("flags") or [])
    if bool(scan["non_monotonic"].any()) and not any("monoton" in f for f in scan_flags):
        scan_flags.append("non_monotonic")
    if scan_missing and "not_converged" not in scan_flags:
        scan_flags.append("not_converged")
    toys_raw = result.get("toys") or {}
    toys = toys_raw.get("pulls", []) if isinstance(toys_raw, Mapping) else toys_raw
    breakdown = result.get("breakdown") or {}
    return FitView(
        poi=poi,
        mu_hat=float(mu_hat) if mu_hat is not None else None,
        sigma=float(sigma) if sigma is not None else None,
        converged=result.get("converged", fit.get("converged")),
        breakdown=dict(breakdown.get(poi, {})) if isinstance(breakdown, Mapping) else {},
        pulls=pulls,
        impacts=impacts,
        corr_names=names,
        corr_matrix=matrix,
        scan=scan,
        toys=np.asarray(toys, dtype=float).ravel(),
        toy_summary=dict(toys_raw.get("summary") or {}) if isinstance(toys_raw, Mapping) else {},
        data=str(result.get("data") or "asimov"),
        uncertainty=dict(result.get("uncertainty") or {}),
        noise_shrinkage=list(result.get("noise_shrinkage") or []),
        parameters=parameters_frame(result, fit, poi, pulls),
        scan_flags=tuple(scan_flags),
        scan_missing=scan_missing,
        mu_err_lo=_opt_float(result.get("mu_err_lo")),
        mu_err_hi=_opt_float(result.get("mu_err_hi")),
        fit_message=str(fit.get("message") or ""),
        contours=dict(result.get("contours") or {}),
        pois=dict(result.get("pois") or {}),
        poi_correlations=dict(result.get("correlations") or {}),
        limits=dict(result.get("limits") or {}),
        expected=dict(result.get("expected") or {}),
    )


_opt_float = formatting.finite_or_none


PARAMETER_COLUMNS = (
    "parameter",
    "role",
    "value",
    "error",
    "err_lo",
    "err_hi",
    "pull",
    "constraint",
    "note",
)


def parameters_frame(
    result: Mapping, fit: Mapping, poi: str, pulls: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per fitted parameter: its value, Hesse error, asymmetric (profile) errors where
    the fit job stored them (the POI's mu_err_lo / mu_err_hi), pull and post-fit constraint for
    constrained nuisance parameters, and a note (fixed, at a bound, below resolution)."""
    values = fit.get("values") or result.get("bestfit") or {}
    errors = fit.get("errors") or {}
    names = list(fit.get("names") or values)
    if not names and result.get("mu_hat") is not None:
        names, values, errors = [poi], {poi: result.get("mu_hat")}, {poi: result.get("sigma")}
    pull_rows = {}
    if pulls is not None and not pulls.empty:
        pull_rows = {r["name"]: r for r in pulls.to_dict("records")}
    fixed = set(fit.get("fixed") or [])
    at_bound = set(fit.get("at_bound") or [])
    below = set(fit.get("below_resolution") or [])
    rows = []
    for name in names:
        notes = [
            text
            for flag, text in (
                (name in fixed, "fixed"),
                (name in at_bound, "at a bound (no Hesse error)"),
                (name in below, "below resolution"),
            )
            if flag
        ]
        p = pull_rows.get(name, {})
        is_poi = name == poi
        rows.append(
            {
                "parameter": name,
                "role": "POI" if is_poi else ("constrained" if p else "free"),
                "value": _opt_float(values.get(name)),
                "error": _opt_float(errors.get(name)),
                "err_lo": _opt_float(result.get("mu_err_lo")) if is_poi else None,
                "err_hi": _opt_float(result.get("mu_err_hi")) if is_poi else None,
                "pull": _opt_float(p.get("pull")),
                "constraint": _opt_float(p.get("constraint")),
                "note": ", ".join(notes),
            }
        )
    return pd.DataFrame(rows, columns=list(PARAMETER_COLUMNS))


def toy_pull_mean(view: FitView) -> tuple[float | None, float | None]:
    """The toys' mean pull and its standard error (from the per-toy pulls when reported,
    else from the summary: width / sqrt(converged toys))."""
    pulls = view.toys[np.isfinite(view.toys)] if view.toys.size else view.toys
    if pulls.size >= 2:
        return formatting.mean_with_error(pulls.tolist())
    s = view.toy_summary
    mean, width, n = s.get("pull_mean"), s.get("pull_width"), s.get("n_converged")
    se = (
        float(width) / math.sqrt(float(n))
        if width is not None and n and float(n) > 0 and math.isfinite(float(width))
        else None
    )
    return _opt_float(mean), se


def scan_problems(view: FitView) -> list[str]:
    """Plain words for the scan's quality flags (empty when the scan is clean)."""
    words = {
        "not_converged": "some scan points did not converge",
        "non_monotonic": "the curve falls somewhere while moving away from the best fit",
        "non_monotonic_left": "the curve is not monotonic left of the best fit",
        "non_monotonic_right": "the curve is not monotonic right of the best fit",
        "new_minimum": "a scan point found a lower minimum than the fit (the fit may be a local minimum)",
    }
    out = [words.get(f, f.replace("_", " ")) for f in view.scan_flags]
    if view.scan_missing:
        out.append(
            f"{view.scan_missing} point(s) without a converged fit are left out of the curve"
        )
    return out


def scan_interval(scan: pd.DataFrame, level: float) -> tuple[float | None, float | None]:
    """Where the scan curve q(value) crosses `level` left and right of its minimum.

    Linear interpolation between scan points; None on a side where the scan never reaches
    the level (the interval is open there within the scanned range).
    """
    if scan.empty:
        return None, None
    s = scan.sort_values("value")
    x, q = s["value"].to_numpy(float), s["q"].to_numpy(float)
    i = int(np.nanargmin(q))

    def cross(idx: range) -> float | None:
        for a, b in zip(idx, list(idx)[1:]):
            if (q[a] - level) * (q[b] - level) <= 0 and q[a] != q[b]:
                return float(x[a] + (level - q[a]) * (x[b] - x[a]) / (q[b] - q[a]))
        return None

    return cross(range(i, -1, -1)), cross(range(i, len(x)))


# --------------------------------------------------------------------------- cost


def cost_frame(rows: Iterable[Any]) -> pd.DataFrame:
    """Cost summary rows (group keys + gpu_hours + cost) as a DataFrame."""
    df = records_frame(rows)
    for col in ("gpu_hours", "cost", "wall_hours", "cpu_hours", "hours"):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce").fillna(0.0)
    if "spot" in df:
        df["spot"] = df["spot"].map(
            lambda s: "spot" if s in (True, "spot", 1, "true") else "on-demand"
        )
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


# --------------------------------------------------------------------------- service loaders
# Each calls one backend.service function (imported lazily: the service pulls in the database
# layer, which the pure helpers above do not need) and returns plotting-ready frames.


def _service():
    from backend import service

    return service


def load_campaigns() -> pd.DataFrame:
    return campaigns_frame(_service().list_campaigns())


def load_jobs(
    campaign_id: int | None = None,
    states: Sequence[str] | None = None,
    kind: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[pd.DataFrame, int]:
    rows, total = _service().list_jobs(
        campaign_id=campaign_id,
        states=list(states) if states else None,
        kind=kind,
        offset=offset,
        limit=limit,
    )
    return jobs_frame(rows), int(total)


def load_metrics(
    job_id: int | None = None,
    campaign_id: int | None = None,
    names: Sequence[str] | None = None,
    max_points: int = 2000,
) -> pd.DataFrame:
    return metrics_frame(
        _service().metric_series(
            job_id=job_id,
            campaign_id=campaign_id,
            names=list(names) if names else None,
            max_points=max_points,
        )
    )


def load_resources(
    job_id: int | None = None, campaign_id: int | None = None, max_points: int = 2000
) -> pd.DataFrame:
    return resources_frame(
        _service().resource_series(job_id=job_id, campaign_id=campaign_id, max_points=max_points)
    )


def load_costs(group_by: Sequence[str]) -> pd.DataFrame:
    return cost_frame(_service().cost_summary(group_by=tuple(group_by)))


def load_fit(campaign_id: int) -> tuple[dict[int, FitView], pd.DataFrame]:
    """{fit run: merged FitView} of a campaign, and the table of its fit-stage job results."""
    rows = [as_dict(r) for r in _service().fit_results(campaign_id)]
    table = records_frame(
        [{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for r in rows]
    )
    views = {run: fit_view(merge_fit_results(run_rows)) for run, run_rows in fit_runs(rows).items()}
    return views, table


def load_fit_jobs(campaign_id: int) -> pd.DataFrame:
    """Every fit-stage job of a campaign (any state), with its fit run in column `run`."""
    frames = []
    for kind in FIT_KINDS:
        df, _ = load_jobs(campaign_id, None, kind, 0, 100_000)
        frames.append(df)
    jobs = pd.concat([f for f in frames if not f.empty] or [frames[0]], ignore_index=True)
    jobs["run"] = [fit_run_of(str(n)) for n in jobs["name"]] if len(jobs) else []
    return jobs.sort_values("id").reset_index(drop=True) if len(jobs) else jobs


FINAL_JOB_STATES = ("SUCCEEDED", "FAILED", "CANCELLED")


def run_progress(jobs: pd.DataFrame) -> dict[str, int]:
    """{total, finished, running, pending, failed} of a set of jobs (one fit run)."""
    states = jobs["state"].astype(str) if len(jobs) else pd.Series(dtype=str)
    return {
        "total": len(jobs),
        "finished": int(states.isin(FINAL_JOB_STATES).sum()),
        "succeeded": int((states == "SUCCEEDED").sum()),
        "running": int(states.isin(("RUNNING", "LAUNCHING")).sum()),
        "pending": int(states.isin(("PENDING", "PREEMPTED")).sum()),
        "failed": int((states == "FAILED").sum()),
    }


def load_attempts(job_id: int) -> list[dict]:
    return [as_dict(a) for a in _service().job_attempts(job_id)]


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


# --------------------------------------------------------------------------- compare

COMPARE_MODES = ("Ensembles", "Grid points", "Campaigns")
MAX_COMPARED = 24  # lines that stay distinguishable on one chart (`figures.COMPARE_COLOURS`)


def load_ensembles(campaign_ids: Sequence[int] | None = None) -> list[dict]:
    """Every ensemble (campaign, task, grid point) with its job ids and flat settings."""
    return list(_service().ensembles(list(campaign_ids) if campaign_ids is not None else None))


def load_ensemble_curves(
    job_ids: Sequence[int], names: Sequence[str] = ("train_loss", "val_loss"), max_points: int = 400
) -> pd.DataFrame:
    """Mean/min/max over an ensemble's members per (name, step), aggregated in the database."""
    cols = ["name", "step", "mean", "min", "max", "n"]
    rows = _service().ensemble_curves(list(job_ids), list(names), max_points)
    return pd.DataFrame(rows, columns=cols)


def load_ensemble_diagnostics(job_ids: Sequence[int]) -> dict | None:
    return _service().ensemble_diagnostics(list(job_ids))


def compare_items(
    catalog: Sequence[Mapping], mode: str, picks: Sequence[str], task: str | None = None
) -> dict[str, dict]:
    """{label: {job_ids, campaign_id, task, settings}} of what is compared.

    "Ensembles" and "Grid points": `picks` are ensemble keys, each compared on its own.
    "Campaigns": `picks` are campaign labels ("<id> · <name>"); each campaign's ensembles of
    `task` (all grid points) are pooled, and a setting that varies between them reads
    "a | b"."""
    by_key = {str(e["key"]): e for e in catalog}
    if mode != "Campaigns":
        return {
            k: {
                "job_ids": list(by_key[k]["job_ids"]),
                "campaign_id": int(by_key[k]["campaign_id"]),
                "task": str(by_key[k]["task"]),
                "settings": dict(by_key[k]["settings"]),
            }
            for k in picks
            if k in by_key
        }
    out: dict[str, dict] = {}
    for label in picks:
        ens = [
            e
            for e in catalog
            if f"{e['campaign_id']} · {e['campaign']}" == label
            and (task is None or e["task"] == task)
        ]
        if not ens:
            continue
        settings: dict[str, Any] = {}
        for key in dict.fromkeys(k for e in ens for k in e["settings"]):
            values = list(dict.fromkeys(str(e["settings"].get(key, "")) for e in ens))
            settings[key] = values[0] if len(values) == 1 else " | ".join(values)
        settings["members"] = sum(int(e["members"]) for e in ens)
        settings["jobs"] = sum(len(e["job_ids"]) for e in ens)
        settings["grid point"] = f"{len(ens)} grid point(s)"
        out[label] = {
            "job_ids": [j for e in ens for j in e["job_ids"]],
            "campaign_id": int(ens[0]["campaign_id"]),
            "task": str(task or ens[0]["task"]),
            "settings": settings,
        }
    return out


def smooth(values: Sequence[float] | np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average with the start-up bias removed
    (weight 0: the raw values; 0.99: very smooth)."""
    v = np.asarray(values, dtype=float)
    if weight <= 0 or v.size == 0:
        return v
    out = np.empty_like(v)
    acc, norm = 0.0, 0.0
    for i, x in enumerate(v):
        if np.isfinite(x):
            acc = weight * acc + (1 - weight) * x
            norm = weight * norm + (1 - weight)
        out[i] = acc / norm if norm > 0 else np.nan
    return out


def compare_curves_frame(curves: Mapping[str, pd.DataFrame], weight: float = 0.0) -> pd.DataFrame:
    """Long frame (item, name, step, raw, value) of each item's mean curve, `value` smoothed."""
    parts = []
    for item, df in curves.items():
        for name, g in df.groupby("name", sort=True):
            g = g.sort_values("step")
            parts.append(
                pd.DataFrame(
                    {
                        "item": item,
                        "name": name,
                        "step": g["step"].to_numpy(),
                        "raw": g["mean"].to_numpy(dtype=float),
                        "value": smooth(g["mean"].to_numpy(dtype=float), weight),
                    }
                )
            )
    if not parts:
        return pd.DataFrame(columns=["item", "name", "step", "raw", "value"])
    return pd.concat(parts, ignore_index=True)


def settings_table(items: Mapping[str, Mapping]) -> tuple[pd.DataFrame, list[bool]]:
    """(setting x item table of strings, per row: do the items differ?)."""
    keys = list(dict.fromkeys(k for it in items.values() for k in it["settings"]))
    table = pd.DataFrame(
        {
            label: [formatting.cell(it["settings"].get(k)) for k in keys]
            for label, it in items.items()
        },
        index=pd.Index(keys, name="setting"),
    )
    differs = [len(set(row)) > 1 for row in table.itertuples(index=False)]
    return table, differs


def diagnostics_summary(task: str, diag: Mapping | None) -> dict[str, Any]:
    """One row of the diagnostics comparison: each check's value and light, the worst light."""
    if not diag:
        return {"checks": "no diagnostics recorded"}
    checks = diagnostics_view(task, diag).checks
    row: dict[str, Any] = {}
    order = {"red": 3, "amber": 2, "unknown": 1, "green": 0}
    worst = max(checks["status"], key=lambda s: order.get(str(s), 1), default="unknown")
    failed = [str(r.check) for r in checks.itertuples() if r.status == "red"]
    # the lights of the Diagnostics page; the campaign's result status says which checks gate
    row["checks"] = "red: " + ", ".join(failed) if failed else f"worst light: {worst}"
    for r in checks.itertuples():
        row[str(r.check)] = (
            f"{formatting.number(r.value, 3)} ({r.status})"
            if r.value is not None and not pd.isna(r.value)
            else "–"
        )
    return row


def fit_summary(views: Mapping[int, FitView]) -> dict[str, Any]:
    """The newest fit run of a campaign in one row: run, POI, value ± error, converged."""
    if not views:
        return {"fit run": "no fit results"}
    run = max(views)
    v = views[run]
    return {
        "fit run": run,
        "poi": v.poi,
        "mu_hat": v.mu_hat,
        "sigma": v.sigma,
        "value": formatting.with_error(v.mu_hat, v.sigma) if v.mu_hat is not None else "–",
        "converged": "yes" if v.converged else "no" if v.converged is not None else "–",
    }
