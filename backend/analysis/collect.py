"""Gather an analysis campaign's results and provenance into one plain dict (result.json).

Why separate from the report: this is the part that reads the database and the store; the
report module only formats and plots what it is given, so it is testable on plain data.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Engine

from backend import ingest
from backend.analysis.cache import engine_version
from backend.analysis.campaign import campaign_analysis
from backend.analysis.report import impact_ranking, merge_scans
from backend.listings import campaign_job_records, get_campaign
from backend.results_view import campaign_diagnostics, fit_results
from backend.stores import StoreError, open_store


def _read_result(job: Mapping[str, Any]) -> dict[str, Any] | None:
    if not job.get("uri") or not job.get("attempt"):
        return None
    try:
        return ingest.read_result(open_store(job["uri"]), int(job["attempt"]))
    except StoreError:
        return None


def _latest(jobs: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    done = [j for j in jobs if j["kind"] == kind and j["status"] == "SUCCEEDED"]
    return done[-1] if done else None


def collect_result(
    campaign_id: int,
    *,
    analysis: Mapping[str, Any] | None = None,
    fit_settings: Mapping[str, Any] | None = None,
    wall_s: float | None = None,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """Everything result.json holds for a finished (or failed) analysis campaign."""
    detail = get_campaign(campaign_id, engine=engine)
    prov = campaign_analysis(campaign_id, engine=engine)
    jobs = campaign_job_records(campaign_id, engine=engine)
    payloads = {f["job_id"]: f["payload"] for f in fit_results(campaign_id, engine=engine)}
    fit_job = _latest(jobs, "fit")
    fit = payloads.get(fit_job["id"], {}) if fit_job else {}
    cfg = detail.config
    refit: list[dict] = []
    scans: list[dict] = []
    toys: list[dict] = []
    for j in jobs:
        p = payloads.get(j["id"]) or {}
        if j["kind"] == "impacts":
            refit += list(p.get("impacts_refit") or [])
        elif j["kind"] == "scan" and p.get("scan"):
            scans.append(p["scan"])
        elif j["kind"] == "toys" and p.get("toys"):
            toys.append(p["toys"])
    scan = merge_scans(scans)
    ensembles: dict[str, list[str]] = {}
    fit_out = _read_result(fit_job) if fit_job else None
    if fit_out and fit_out.get("ensembles"):
        ensembles = {k: list(v) for k, v in fit_out["ensembles"].items()}
    else:  # no fit: the trained ensembles themselves
        for j in jobs:
            if j["kind"] == "train" and j["status"] == "SUCCEEDED":
                out = _read_result(j) or {}
                uri = (out.get("artifacts") or {}).get("ensemble")
                if uri:
                    ensembles.setdefault(j["task"] or j["name"], []).append(uri)
    train_summaries = {
        j["name"]: dict((_read_result(j) or {}).get("summary") or {})
        for j in jobs
        if j["kind"] == "train" and j["status"] == "SUCCEEDED"
    }
    diag = campaign_diagnostics(campaign_id, engine=engine)
    calibration = {task: list(d.get("calibration") or []) for task, d in diag.items()}
    ensemble_checks = {
        task: {k: d.get(k) for k in ("auc", "normalization", "normalization_error", "held_out")}
        for task, d in diag.items()
    }
    per_kind: dict[str, float] = defaultdict(float)
    for j in jobs:
        per_kind[j["kind"]] += float(j["run_seconds"] or 0.0)
    finished = [j["finished_at"] for j in jobs if j["finished_at"] is not None]
    intervals = dict((scan or {}).get("intervals") or {})
    if fit.get("mu_hat") is not None and fit.get("sigma") is not None:
        intervals["hesse"] = [fit["mu_hat"] - fit["sigma"], fit["mu_hat"] + fit["sigma"]]
    if fit.get("mu_hat") is not None and fit.get("sigma_total") is not None:
        # Hesse with the learned model's NN and simulation-statistics components (those included)
        intervals["total"] = [
            fit["mu_hat"] - fit["sigma_total"],
            fit["mu_hat"] + fit["sigma_total"],
        ]
    s = detail.summary
    return {
        "analysis": dict(prov.get("analysis") or analysis or {}),
        "campaign": {
            "id": s.id,
            "name": s.name,
            "status": s.status,
            "launcher": s.launcher,
            "config_hash": detail.config_hash,
            "n_jobs": s.n_jobs,
        },
        "code_version": detail.code_version,
        "engine_version": prov.get("engine_version") or engine_version(),
        "fit_settings": dict(fit_settings or {}),
        "fit": {
            "mu_hat": fit.get("mu_hat"),
            "sigma": fit.get("sigma"),
            "mu_err_lo": fit.get("mu_err_lo"),  # asymmetric errors (profile, root finding)
            "mu_err_hi": fit.get("mu_err_hi"),
            "profile": dict(fit.get("profile") or {}),
            "converged": fit.get("converged"),
            "mu_true": fit.get("mu_true", cfg.get("fit", {}).get("mu_true")),
            "data": cfg.get("fit", {}).get("data", "asimov"),
            "job": fit_job["name"] if fit_job else None,
            "parameters": (fit.get("fit") or {}),
            # several POIs: each one's errors, their correlations, the 2-D contours
            "poi": fit.get("poi", "mu"),
            "pois": dict(fit.get("pois") or {}),
            "correlations": dict(fit.get("correlations") or {}),
            "contours": dict(fit.get("contours") or {}),
        },
        # CLs upper limit + discovery significance on the data, and the expected (Asimov) result
        "limits": dict(fit.get("limits") or {}),
        "expected": dict(fit.get("expected") or {}),
        "uncertainty": dict(fit.get("uncertainty") or {}),
        "fit_checks": list(fit.get("checks") or []),
        "shape_decisions": list(fit.get("shape_decisions") or []),
        "noise_shrinkage": list(fit.get("noise_shrinkage") or []),
        "data_provenance": dict(fit.get("provenance") or {}),
        "splits": {name: summary.get("split") for name, summary in train_summaries.items()},
        "paired_tasks": sorted(
            {str(sm.get("task")) for sm in train_summaries.values() if sm.get("paired")}
        ),
        "intervals": intervals,
        "pulls": dict(fit.get("pulls") or {}),
        "impacts": impact_ranking(refit, fit.get("impacts_covariance") or []),
        "breakdown": dict(fit.get("breakdown") or {}),
        "scan": scan,
        "toys": toys,
        "calibration": calibration,
        "ensemble_checks": ensemble_checks,
        "ensembles": ensembles,
        "seeds": {
            "train": {
                j["name"]: ((j["spec"].get("params") or {}).get("train") or {}).get("seed")
                for j in jobs
                if j["kind"] == "train"
            },
            "toys": sorted(
                s_
                for j in jobs
                if j["kind"] == "toys"
                for s_ in (j["spec"].get("params") or {}).get("toy_seeds") or []
            ),
        },
        "hashes": {
            "analysis_file": (prov.get("analysis") or analysis or {}).get("file_hash"),
            "config": detail.config_hash,
            "jobs": {j["name"]: j["cache_key"] for j in jobs},
        },
        "jobs": {
            "ran": [j["name"] for j in jobs if j["attempts"] > 0],
            "reused": {j["name"]: j["cached_from"] for j in jobs if j["cached_from"] is not None},
            "states": {j["name"]: j["status"] for j in jobs},
        },
        "timings": {
            "wall_s": wall_s,
            "created_at": s.created_at.isoformat(),
            "finished_at": max(finished).isoformat() if finished else None,
            "job_seconds_by_kind": dict(per_kind),
        },
    }
