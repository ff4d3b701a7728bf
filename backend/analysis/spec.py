"""An NSBI analysis defined in one YAML file: loading, validation, and its campaign config.

`validate_analysis(path)` returns every problem of the file at once, each with its line and
dotted key path; `load_analysis(path)` returns an `Analysis` or raises `AnalysisError`
listing them. `Analysis.campaign_config()` is the campaign config (`backend.campaigns`)
that trains the ratio ensembles and runs the fit stages the file asks for. Validation reads
the file and (unless check_data=False) the first rows of each sample; it creates nothing.
The format is documented key by key in docs/analysis.md.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend import campaigns
from backend.analysis import spec_check
from backend.analysis.spec_checker import Resolved
from backend.analysis.spec_yaml import (
    AnalysisError,
    ParsedFile,
    PathKey,
    Problem,
    dotted,
    read_yaml,
)
from sbi_engine.config_model import non_finite

# where a campaign-level error (from backend.campaigns' own checks) sits in the analysis file
_CAMPAIGN_TO_FILE: tuple[tuple[str, PathKey], ...] = (
    ("backend", ("backend",)),
    ("training.resources", ("training", "resources")),
    ("fit.resources", ("compute", "fit", "resources")),
    ("impacts.resources", ("compute", "impacts", "resources")),
    ("scan.resources", ("compute", "scan", "resources")),
    ("toys.resources", ("compute", "toys", "resources")),
    ("training", ("training",)),
    ("fit", ("compute", "fit")),
    ("processes", ("processes",)),
    ("systematics", ("systematics",)),
    ("reference", ("reference",)),
)

_FIT_STAGES = ("fit", "impacts", "scan", "toys")


@dataclass(frozen=True)
class Analysis:
    """A validated analysis file.

    path: the file (absolute); raw: its parsed YAML; file_hash: sha256 of its bytes;
    samples: the named samples and processes: each process's sample, as resolved sample specs
    (file paths absolute, `sample_defaults` merged in); model: everything else, resolved.
    """

    path: Path
    raw: dict[str, Any] = field(repr=False)
    name: str
    file_hash: str
    samples: dict[str, dict[str, Any]] = field(repr=False)
    processes: dict[str, dict[str, Any]] = field(repr=False)
    model: Resolved = field(repr=False)
    report_dir: Path = Path("reports")

    @property
    def reference(self) -> str:
        return self.model.reference

    @property
    def sample_files(self) -> list[Path]:
        """Every file a job of this analysis reads (each once, in order of first use)."""
        paths = [Path(spec["path"]) for _, spec in self.model.used_samples if "path" in spec]
        return list(dict.fromkeys(paths))

    def campaign_config(self) -> dict[str, Any]:
        """The campaign config (plain JSON data) that `backend.campaigns.validate_config` accepts."""
        return _campaign_config(self.model)

    @property
    def train_settings(self) -> dict[str, Any]:
        """The part of the campaign config that defines the trained ensembles."""
        cfg = self.campaign_config()
        return {k: cfg[k] for k in ("processes", "reference", "systematics", "training")}

    @property
    def fit_settings(self) -> dict[str, Any]:
        """The part of the campaign config that only affects the fit stage (fit, impacts, scan,
        toys): data, coefficients, yields, normalisation systematics, POI, fit options and the
        fit-stage blocks. Equal train_settings and different fit_settings: only the fit changed."""
        cfg = self.campaign_config()
        return {k: cfg[k] for k in _FIT_STAGES if k in cfg}


def _campaign_config(m: Resolved) -> dict[str, Any]:
    tr = m.training
    defaults = dict(tr.get("defaults") or {})
    training: dict[str, Any] = {
        "ensemble_size": defaults.pop(
            "ensemble_size", campaigns.DEFAULTS["training"]["ensemble_size"]
        ),
        "members_per_job": defaults.pop(
            "members_per_job", campaigns.DEFAULTS["training"]["members_per_job"]
        ),
        "seed": tr.get("seed", 0),
        "params": defaults,
        "grid": dict(tr.get("grid") or {}),
    }
    if tr.get("tasks"):
        training["tasks"] = copy.deepcopy(tr["tasks"])
    if tr.get("resources"):
        training["resources"] = dict(tr["resources"])
    compute = m.compute
    fit_block = compute.get("fit", {})
    fit: dict[str, Any] = {
        "enabled": fit_block.get("enabled", True),
        "data": copy.deepcopy(m.data),
        "mu_true": m.mu_true,
        "nuisances": [],
        "options": dict(fit_block.get("options") or {}),
        "coefficients": dict(m.coefficients),
        "norm_systematics": copy.deepcopy(m.norm_systematics),
        "yields": dict(m.yields),
        "poi": {"init": m.poi["init"], "bounds": list(m.poi["bounds"])},
    }
    if m.pois:  # several POIs replace the single mu
        del fit["poi"]
        fit["pois"] = {
            n: {"init": p["init"], "bounds": list(p["bounds"])} for n, p in m.pois.items()
        }
    if m.norm_factors:
        fit["norm_factors"] = {
            n: {"init": p["init"], "bounds": list(p["bounds"])} for n, p in m.norm_factors.items()
        }
    if fit_block.get("resources"):
        fit["resources"] = dict(fit_block["resources"])
    cfg: dict[str, Any] = {
        "name": m.name,
        "description": m.description,
        "processes": copy.deepcopy(m.processes),
        "reference": m.reference,
        "systematics": copy.deepcopy(m.shape_systematics),
        "training": training,
        "fit": fit,
    }
    for stage in ("impacts", "scan", "toys"):
        cfg[stage] = {"enabled": False, **copy.deepcopy(compute.get(stage, {}))}
    if m.backend:
        cfg["backend"] = dict(m.backend)
    if m.estimate:
        cfg["estimate"] = dict(m.estimate)
    return cfg


def _campaign_problems(cfg: dict[str, Any], parsed: ParsedFile) -> list[Problem]:
    """What `backend.campaigns` still refuses (e.g. a machine type without a price), placed at
    the analysis key it comes from."""
    try:
        campaigns.validate_config(cfg, source=str(parsed.path))
    except campaigns.CampaignConfigError as exc:
        out = []
        for err in exc.errors:
            where, _, message = err.partition(": ")
            key: PathKey = ()
            for prefix, file_key in _CAMPAIGN_TO_FILE:
                if (
                    where == prefix
                    or where.startswith(prefix + ".")
                    or where.startswith(prefix + "[")
                ):
                    key = file_key
                    break
            if "machine type" in message and key[-1:] in (("backend",), ("resources",)):
                key = (*key, "machine_type")
            note = (
                ""
                if where == dotted(key) or where == dotted(key[:-1])
                else f" (campaign key {where})"
            )
            out.append(
                Problem(parsed.lines.line(key), dotted(key), message + note, str(parsed.path))
            )
        return out
    return []


def _problems(parsed: ParsedFile, check_data: bool) -> tuple[Resolved | None, list[Problem]]:
    file = str(parsed.path)
    problems = list(parsed.problems)
    if parsed.data is None and not problems:
        problems.append(Problem(1, "(file)", "the file is empty", file))
    if problems:
        return None, sorted(problems)
    model, found = spec_check.check(parsed.data, parsed.path.parent)

    def place(items: list[tuple[PathKey, str]]) -> list[Problem]:
        return [Problem(parsed.lines.line(p), dotted(p), msg, file) for p, msg in items]

    reported = {p for p, _ in found}
    found += [  # NaN / infinity anywhere, also in blocks that pass through (fit options)
        (p, f"expected a finite number, got {v!r}")
        for p, v in non_finite(parsed.data)
        if not any(p[: len(r)] == r for r in reported)
    ]
    problems = place(found)
    if check_data:
        from backend.analysis.spec_data import check_contents

        problems += place(check_contents(model.used_samples))
    if not problems:
        problems = _campaign_problems(_campaign_config(model), parsed)
    return model, sorted(problems)


def validate_analysis(path: str | Path, *, check_data: bool = True) -> list[Problem]:
    """Every problem of the analysis file at `path` (empty when it is valid).

    check_data=True also reads the first rows of every sample with the engine's loader
    (imports JAX); False keeps to the file itself (no JAX, no sample reads beyond existence).
    """
    p = Path(path).expanduser().absolute()
    return _problems(read_yaml(p), check_data)[1]


def load_analysis(
    path: str | Path, *, check_data: bool = True, report_dir: str | Path | None = None
) -> Analysis:
    """The validated analysis at `path`; raises `AnalysisError` listing every problem.

    report_dir overrides the file's report.dir; both default to reports/<name>, and a relative
    directory is taken relative to the current working directory.
    """
    p = Path(path).expanduser().absolute()
    parsed = read_yaml(p)
    model, problems = _problems(parsed, check_data)
    if problems or model is None:
        raise AnalysisError(problems)
    chosen = (
        Path(report_dir)
        if report_dir is not None
        else Path(model.report.get("dir", f"reports/{model.name}"))
    )
    chosen = chosen.expanduser()
    return Analysis(
        path=p,
        raw=parsed.data,
        name=model.name,
        file_hash=hashlib.sha256(parsed.raw_bytes).hexdigest(),
        samples=copy.deepcopy(model.samples),
        processes=copy.deepcopy(model.processes),
        model=model,
        report_dir=chosen if chosen.is_absolute() else Path.cwd() / chosen,
    )


__all__ = ["Analysis", "AnalysisError", "Problem", "load_analysis", "validate_analysis"]
