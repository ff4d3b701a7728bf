"""Checks that gate a result: every result carries them, and one failing check means "needs review".

A campaign can run every job to SUCCEEDED and its fit can converge while the ratio ensembles
it rests on are plainly wrong (a closure chi2/ndf of 21, a normalisation 8 % off). Such a
result must not look like a good one. This module turns what the jobs report into
`CheckRecord`s and those into one `ResultStatus`: "checks passed", or "needs review" with the
failing checks and by how much (value against threshold). Pure Python: no JAX, no database;
`backend.result_status` stores the status on the campaign row and every view reads it there.

Two sources of records:

* ratio ensembles: a train job's summary carries ``"diagnostics"``
  (`sbi_engine.ratio.diagnostics.Diagnostics.to_dict`); `ensemble_checks(task, diagnostics)`
  derives the same seven numbers the dashboard's Diagnostics page shows and compares each with
  the single set of limits below (`DIAGNOSTIC_THRESHOLDS`, which the dashboard's traffic
  lights use too). A check fails where the dashboard's light is RED; AMBER is a warning only.
* fit-stage jobs: their summary may carry ``"checks"``, a list of records
  ``{"name", "task", "value", "threshold", "passed", "message"}`` (e.g. asimov_closure,
  noise_to_signal, converged, norm_sample_size, asymptotic_limit); `CheckRecord.from_dict` reads
  them as they are.

Why each limit (the RED boundary; the GREEN one, where it differs, marks a warning):

* ``CLOSURE_CHI2_NDF_MAX = 3.0`` -- the reference reweighted by r-hat must reproduce the
  numerator in every observable. With ~20 bins (ndf ~19) a correct ratio gives chi2/ndf near 1;
  3 has a p-value of about 1e-5, so beyond it the ratio is biased somewhere in feature space
  and the fit inherits that bias. Warning above 1.5.
* ``NORMALISATION_MAX = 0.05`` -- |E_ref[r-hat] - 1|: a ratio that does not integrate to one
  changes the process yield. 5 % is twice a typical luminosity uncertainty (2.5 %); a larger
  error is absorbed into mu. Warning above 0.02.
* ``CALIBRATION_MAX_SIGMA = 3.0`` -- the largest deviation of the ensemble's reliability curve
  from the diagonal, as a global significance over the bins it tested (Sidak: the largest of
  20 bins exceeds 3 local sigma in 5 % of perfectly calibrated curves, 3 global sigma in
  0.27 %); beyond it the scores (hence the ratios) are miscalibrated. Warning above 2.
  Diagnostics stored before the correction (no ``global_deviation``) are read as the local
  maximum, the stricter reading.
* ``OVERTRAINING_MAX = 0.05`` -- worst member's (holdout - train) / train loss: more than 5 %
  means the network learned the training sample's fluctuations. Warning above 0.02.
* ``ENSEMBLE_SPREAD_MAX = 0.05`` -- std / mean of the members' normalisations: members that
  disagree by more than 5 % have not converged to the same function. Warning above 0.02.
* ``SATURATION_MAX = 0.01`` -- the largest share of a class's events that r-hat calls
  impossible for that class (|log r-hat| > 13.8 on the wrong side; at most 1e-6 for the true
  ratio, however steep: `sbi_engine.ratio.diagnostics.overconfident_fraction`). Above 1 % the
  network is overconfident where it matters. Warning above 0.001. Older diagnostics without
  ``overconfident_fraction`` are read with the share of all events beyond the limit, which a
  steep true ratio can fail (3 % of `negative_weights`'s S/B events).
* ``AUC_MIN = 0.5`` -- an AUC below 0.5 on held-out events means the classifier ranks the
  classes the wrong way round: broken, not merely weak. It fails more than 3 standard
  deviations of an indistinguishable pair's AUC below 0.5 (``auc_null_error``, Mann-Whitney
  with Kish sizes): a systematic whose true effect is below the noise has an AUC of 0.5 +- that
  error, and lands just under 0.5 half the time (a warning).

Every limit is checked against the truth: ``python -m benchmarks.check_null`` runs these checks
with the exact ratios of every benchmark problem on fresh evaluation-size samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

CHECKS_PASSED = "checks passed"
NEEDS_REVIEW = "needs review"
STATES = (CHECKS_PASSED, NEEDS_REVIEW)

# RED boundaries: a value beyond one fails its check (see the module docstring for why)
CLOSURE_CHI2_NDF_MAX = 3.0
NORMALISATION_MAX = 0.05
CALIBRATION_MAX_SIGMA = 3.0
OVERTRAINING_MAX = 0.05
ENSEMBLE_SPREAD_MAX = 0.05
SATURATION_MAX = 0.01
AUC_MIN = 0.5
AUC_NULL_SIGMAS = 3.0  # an AUC fails this many null standard deviations below AUC_MIN

# GREEN boundaries: between GREEN and RED a check passes with a warning (AMBER)
CLOSURE_CHI2_NDF_WARN = 1.5
NORMALISATION_WARN = 0.02
CALIBRATION_WARN_SIGMA = 2.0
OVERTRAINING_WARN = 0.02
ENSEMBLE_SPREAD_WARN = 0.02
SATURATION_WARN = 0.001

# name -> (direction, green limit, red limit, what is measured): the one definition of the
# diagnostics' limits. "below": green when value <= green, amber when <= red limit, red beyond.
# "above": green when value > green, amber when >= red limit, red below it.
DIAGNOSTIC_THRESHOLDS: dict[str, tuple[str, float, float, str]] = {
    "closure_chi2_ndf": (
        "below",
        CLOSURE_CHI2_NDF_WARN,
        CLOSURE_CHI2_NDF_MAX,
        "worst χ²/ndf over observables (reference × r̂ vs numerator)",
    ),
    "normalisation": (
        "below",
        NORMALISATION_WARN,
        NORMALISATION_MAX,
        "|E_ref[r̂] − 1|: the reweighted reference keeps its yield",
    ),
    "calibration": (
        "below",
        CALIBRATION_WARN_SIGMA,
        CALIBRATION_MAX_SIGMA,
        "largest deviation of the ensemble reliability curve, global σ over its bins",
    ),
    "overtraining": (
        "below",
        OVERTRAINING_WARN,
        OVERTRAINING_MAX,
        "worst member (holdout − train loss) / train loss",
    ),
    "ensemble_spread": (
        "below",
        ENSEMBLE_SPREAD_WARN,
        ENSEMBLE_SPREAD_MAX,
        "spread (std / mean) of the members' normalisations",
    ),
    "saturation": (
        "below",
        SATURATION_WARN,
        SATURATION_MAX,
        "largest share of a class that r̂ calls impossible for it (|log r̂| > 13.8, wrong side)",
    ),
    "auc": (
        "above",
        AUC_MIN,
        AUC_MIN,
        "AUC on holdout events (0.5: indistinguishable; red 3 null σ below it)",
    ),
}

# What to try when an ensemble check fails (RED): appended to the failed record's message, so
# the report, the CLI and the dashboard say it where the failure is shown. Keys are the
# training options of `sbi_engine.ratio.config.TrainConfig` (analysis file: `training:`).
REMEDIES: dict[str, str] = {
    "closure_chi2_ndf": (
        "the ratio misses the numerator somewhere; try more simulated events for this ratio "
        "(what the members share is their training sample's noise), or longer or wider "
        "training where it stopped early (max_steps, min_epochs, hidden_layers, width)"
    ),
    "normalisation": (
        "r-hat does not integrate to one; try longer training or more members, and check that "
        "both samples cover the same feature range"
    ),
    "calibration": (
        "the scores are off the diagonal; try more simulated events for this ratio, or longer "
        "or wider training where it stopped early (max_steps, min_epochs, hidden_layers, width)"
    ),
    "overtraining": (
        "the networks learned the training events' fluctuations; try more simulated events, a "
        "smaller network (hidden_layers, width) or weight_decay"
    ),
    "ensemble_spread": (
        "the members disagree; try longer training (max_steps, min_epochs) or more events"
    ),
    "saturation": (
        "r-hat calls events of their own class impossible; look for feature regions only one "
        "sample populates (a selection or binning difference), then train longer"
    ),
    "auc": "r-hat ranks the classes the wrong way round; are numerator and denominator swapped?",
}

LABELS = {
    "closure_chi2_ndf": "closure χ²/ndf",
    "normalisation": "normalisation",
    "calibration": "calibration",
    "overtraining": "overtraining",
    "ensemble_spread": "ensemble spread",
    "saturation": "saturation",
    "auc": "AUC",
    "diagnostics": "diagnostics",
    "calibration_effect": "calibration effect (σ of the POI)",
}


def _float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _finite(x: Any) -> bool:
    return math.isfinite(_float(x))


def _num(x: float) -> float | None:
    """JSON-safe: NaN and infinities become None."""
    return x if math.isfinite(x) else None


def _fmt(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else "n/a"


@dataclass(frozen=True)
class CheckRecord:
    """One check of a result: `value` against `threshold`.

    direction "below": passes when value <= threshold; "above": when value >= threshold.
    Records from fit jobs may leave direction out (then "below" is assumed for `excess`; their
    own `passed` is what counts).
    """

    name: str
    task: str | None
    value: float
    threshold: float
    passed: bool
    message: str = ""
    direction: str = "below"
    error: float = math.nan  # the value's own uncertainty, where the check estimates one

    @property
    def label(self) -> str:
        name = LABELS.get(self.name, self.name)
        return f"{self.task} {name}" if self.task else name

    @property
    def excess(self) -> float:
        """How far past its threshold a value is, as a ratio (>1 beyond; 1 at the threshold;
        inf for a failed check without numbers): what orders the failed checks."""
        v, t = _float(self.value), _float(self.threshold)
        if not (math.isfinite(v) and math.isfinite(t)):
            return math.inf if not self.passed else 0.0
        if self.direction == "above":
            return t / v if v > 0 else math.inf
        if t > 0:
            return v / t
        return math.inf if v > t else 1.0

    @property
    def excused(self) -> bool:
        """Passed although its value is beyond its threshold: a failure the result was shown not
        to depend on (a calibration whose effect on the fit is within its limit)."""
        return self.passed and math.isfinite(self.excess) and self.excess > 1.0

    def short(self) -> str:
        """'S_vs_B closure χ²/ndf 21.3 > 3' (or the check's own message when it has no numbers)."""
        v, t = _float(self.value), _float(self.threshold)
        if not (math.isfinite(v) or math.isfinite(t)):
            return f"{self.label}: {self.message}" if self.message else self.label
        op = (
            ("<" if self.direction == "above" else ">")
            if not self.passed
            else (">=" if self.direction == "above" else "<=")
        )
        err = f" ± {_fmt(self.error)}" if math.isfinite(_float(self.error)) else ""
        return f"{self.label} {_fmt(v)}{err} {op} {_fmt(t)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "value": _num(_float(self.value)),
            "threshold": _num(_float(self.threshold)),
            "passed": bool(self.passed),
            "message": self.message,
            "direction": self.direction,
            **({"error": _num(_float(self.error))} if math.isfinite(_float(self.error)) else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CheckRecord:
        task = d.get("task")
        return cls(
            name=str(d.get("name") or "check"),
            task=None if task is None else str(task),
            value=_float(d.get("value")),
            threshold=_float(d.get("threshold")),
            passed=bool(d.get("passed", False)),
            message=str(d.get("message") or ""),
            direction="above" if d.get("direction") == "above" else "below",
            error=_float(d.get("error")),
        )


def traffic_light(
    value: float | None, check: str, limits: tuple[float, float] | None = None
) -> str:
    """'green', 'amber', 'red' or 'unknown' for a value under DIAGNOSTIC_THRESHOLDS[check]
    (or under ``limits`` = (green, red), an ensemble's own limits from `diagnostic_limits`)."""
    if value is None or not _finite(value):
        return "unknown"
    direction, green, red, _ = DIAGNOSTIC_THRESHOLDS[check]
    if limits is not None:
        green, red = limits
    v = float(value)
    if direction == "below":
        return "green" if v <= green else "amber" if v <= red else "red"
    return "green" if v > green else "amber" if v >= red else "red"


def diagnostic_limits(diag: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """(green, red) limits of each check for one diagnostics dict: DIAGNOSTIC_THRESHOLDS, with
    the AUC's red limit 3 null standard deviations below 0.5 where the error is recorded."""
    limits = {name: (green, red) for name, (_, green, red, _) in DIAGNOSTIC_THRESHOLDS.items()}
    err = _float(diag.get("auc_null_error"))
    if math.isfinite(err) and err > 0:
        limits["auc"] = (AUC_MIN, AUC_MIN - AUC_NULL_SIGMAS * err)
    return limits


def diagnostic_values(diag: Mapping[str, Any]) -> dict[str, float | None]:
    """The seven numbers of the dashboard's Diagnostics page from one diagnostics dict
    (`Diagnostics.to_dict()`); None where the input is missing."""
    values: dict[str, float | None] = {}
    ratios = []
    for c in diag.get("closure") or []:
        chi2, ndf = c.get("chi2"), c.get("ndf")
        if chi2 is not None and ndf:
            ratios.append(_float(chi2) / max(_float(ndf), 1.0))
    values["closure_chi2_ndf"] = max(ratios) if ratios else None
    norm = diag.get("normalization", diag.get("normalisation"))
    values["normalisation"] = abs(_float(norm) - 1.0) if norm is not None else None
    curve = next((c for c in diag.get("calibration") or [] if c.get("member") is None), None)
    values["calibration"] = None
    if curve:
        glob = curve.get("global_deviation")
        worst = glob if glob is not None and _finite(glob) else curve.get("max_deviation")
        values["calibration"] = _float(worst) if worst is not None else None
    gaps = []
    for r in diag.get("losses") or []:
        train, hold = r.get("train_loss"), r.get("holdout_loss")
        if (
            train is not None
            and hold is not None
            and _finite(train)
            and _float(train) > 0
            and _finite(hold)
        ):
            gaps.append((_float(hold) - _float(train)) / _float(train))
    values["overtraining"] = max(gaps) if gaps else None
    norms = [
        _float(v) for v in diag.get("member_normalization") or [] if v is not None and _finite(v)
    ]
    spread = None
    if len(norms) > 1:
        mean = sum(norms) / len(norms)
        if mean != 0:
            spread = math.sqrt(sum((v - mean) ** 2 for v in norms) / len(norms)) / abs(mean)
    values["ensemble_spread"] = spread
    sat = diag.get("overconfident_fraction")
    if sat is None or not _finite(sat):
        sat = diag.get("saturated_fraction")
    values["saturation"] = _float(sat) if sat is not None else None
    auc = diag.get("auc")
    values["auc"] = _float(auc) if auc is not None else None
    return values


def ensemble_checks(task: str | None, diagnostics: Mapping[str, Any] | None) -> list[CheckRecord]:
    """The checks of one ratio ensemble from its diagnostics dict.

    One record per check whose value is known (a missing value is skipped, as the dashboard
    shows it 'unknown'); a diagnostics dict that reports an error, or has no value at all,
    gives one failed "diagnostics" record: an ensemble that could not be checked is not a
    checked one.
    """
    if not diagnostics:
        return [
            CheckRecord(
                "diagnostics", task, math.nan, math.nan, False, "no diagnostics were recorded"
            )
        ]
    if diagnostics.get("error"):
        return [
            CheckRecord(
                "diagnostics",
                task,
                math.nan,
                math.nan,
                False,
                f"diagnostics failed: {diagnostics['error']}",
            )
        ]
    out = []
    limits = diagnostic_limits(diagnostics)
    for name, value in diagnostic_values(diagnostics).items():
        if value is None or not math.isfinite(value):
            continue
        direction, _, _, what = DIAGNOSTIC_THRESHOLDS[name]
        limit = limits[name][1]
        light = traffic_light(value, name, limits[name])
        note = "" if diagnostics.get("held_out", True) else " (on training events)"
        if light == "red":
            note += f"; {REMEDIES[name]}"
        out.append(
            CheckRecord(
                name,
                task,
                float(value),
                float(limit),
                light != "red",
                f"{what}: {light}{note}",
                direction,
            )
        )
    if not out:
        return [
            CheckRecord(
                "diagnostics", task, math.nan, math.nan, False, "diagnostics hold no check values"
            )
        ]
    return out


def fit_checks(summary: Mapping[str, Any] | None, task: str | None = None) -> list[CheckRecord]:
    """The "checks" a fit-stage job's summary carries (none if it has no such key)."""
    raw = (summary or {}).get("checks")
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
        return []
    out = []
    for d in raw:
        if isinstance(d, Mapping):
            rec = CheckRecord.from_dict(d)
            if rec.task is None and task is not None:
                rec = CheckRecord(
                    rec.name, task, rec.value, rec.threshold, rec.passed, rec.message, rec.direction
                )
            out.append(rec)
    return out


@dataclass(frozen=True)
class ResultStatus:
    """A result's verdict: "checks passed", or "needs review" with the failed checks (worst first)."""

    state: str
    failed: tuple[CheckRecord, ...] = ()
    checks: tuple[CheckRecord, ...] = field(default=(), repr=False)

    @property
    def passed(self) -> bool:
        return self.state == CHECKS_PASSED

    @property
    def worst_task(self) -> str | None:
        """The task of the worst failed check with a task (None if none)."""
        return next((r.task for r in self.failed if r.task), None)

    def summary(self, limit: int = 3) -> str:
        """'checks passed (12 checks)' or 'needs review: S_vs_B closure χ²/ndf 21 > 3, ... (+2 more)'."""
        if self.passed:
            n = len(self.checks)
            return (
                f"{CHECKS_PASSED} ({n} check{'s' if n != 1 else ''})"
                if n
                else f"{CHECKS_PASSED} (no checks recorded)"
            )
        shown = ", ".join(r.short() for r in self.failed[:limit])
        more = f" (+{len(self.failed) - limit} more)" if len(self.failed) > limit else ""
        return f"{NEEDS_REVIEW}: {shown}{more}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "summary": self.summary(),
            "n_checks": len(self.checks),
            "n_failed": len(self.failed),
            "worst_task": self.worst_task,
            "failed": [r.to_dict() for r in self.failed],
            "checks": [r.to_dict() for r in self.checks],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> ResultStatus | None:
        """The status stored by `to_dict` (None for None or an unreadable value)."""
        if not isinstance(d, Mapping) or d.get("state") not in STATES:
            return None
        checks = tuple(
            CheckRecord.from_dict(r) for r in d.get("checks") or [] if isinstance(r, Mapping)
        )
        failed = tuple(
            CheckRecord.from_dict(r) for r in d.get("failed") or [] if isinstance(r, Mapping)
        )
        return cls(str(d["state"]), failed, checks)


def _worse(a: CheckRecord, b: CheckRecord) -> bool:
    """True if a is worse than b (failed before passed, then the larger excess)."""
    return (not a.passed, a.excess) > (not b.passed, b.excess)


def _shown_harmless(effect: CheckRecord | None) -> bool:
    """A ``calibration_effect`` that bounds the effect below its limit: the shift plus its own
    noise (``error``) within the threshold. A passed record whose noise is too large to tell
    (it fails only when clearly beyond the limit), or without a noise (the recalibration did
    not capture the deviation), does not."""
    if effect is None or not effect.passed:
        return False
    v, e, t = _float(effect.value), _float(effect.error), _float(effect.threshold)
    return math.isfinite(v) and math.isfinite(e) and v + e <= t


def _weighed_by_effect(
    kept: dict[tuple[str | None, str], CheckRecord],
) -> dict[tuple[str | None, str], CheckRecord]:
    """A failed ensemble calibration whose task's ``calibration_effect`` is shown harmless (the
    fit redone with that ratio recalibrated moved no POI by more than the limit, noise
    included; every fit job that judged it agreed, since the worst record is kept) passes:
    significant, but irrelevant to the result. Why: with large evaluation samples the
    significance test flags deviations too small to matter; the effect is what a result must
    be judged on (`sbi_engine.calibration_effect`)."""
    out = dict(kept)
    for key, r in kept.items():
        effect = kept.get((r.task, "calibration_effect"))
        if (
            r.name == "calibration"
            and not r.passed
            and effect is not None
            and _shown_harmless(effect)
        ):
            what = r.message.split("; ")[0]
            out[key] = replace(
                r,
                passed=True,
                message=f"{what}, but irrelevant to the result: calibration effect "
                f"{_fmt(effect.value)} ± {_fmt(effect.error)} sigma <= {_fmt(effect.threshold)} "
                "(refit with the ratio recalibrated)",
            )
    return out


def result_status(records: Iterable[CheckRecord]) -> ResultStatus:
    """One status from all records: "needs review" as soon as one check failed.

    Records of the same check and task (e.g. one per training job of a task) are merged into
    the worst of them; the failed ones are listed worst first (largest value / threshold). A
    failed calibration whose effect on the fit passed is passed (`_weighed_by_effect`).
    """
    kept: dict[tuple[str | None, str], CheckRecord] = {}
    for r in records:
        key = (r.task, r.name)
        if key not in kept or _worse(r, kept[key]):
            kept[key] = r
    checks = tuple(_weighed_by_effect(kept).values())
    failed = tuple(sorted((r for r in checks if not r.passed), key=lambda r: -r.excess))
    return ResultStatus(NEEDS_REVIEW if failed else CHECKS_PASSED, failed, checks)
