"""What a miscalibrated ratio does to the result: refit with the ratio recalibrated.

Why: the calibration check is a *significance* test. On large evaluation samples it flags
deviations far too small to matter (low_stats' `bkg_slope_down_B` at 3.07 global sigma while
the learned mu-hat sits 0.1 sigma from the exact one), and on weak ratios it cannot see ones
that do. What a physicist needs is the *effect* on the result. For every ratio task the fit
uses, the fit's whole ensemble is evaluated on the evaluation events of its two samples (events
the networks never saw) and recalibrated there: log r-hat -> a cubic polynomial in log r-hat,
by weighted logistic regression of the class (`sbi_engine.ratio.diagnostics.polynomial_calibration`;
slope, curvature and saturation are how networks err), renormalised on the denominator's
evaluation events; the fit is redone with it in place (one compiled fit, `sbi_engine.fit.variations`). The largest
shift of a POI in units of its error is the check's value. The recalibration is itself an
estimate from finite samples: refits with Poisson(1) bootstrap replicas of the evaluation
weights give its noise (the record's ``error``). Four parameters, not a histogram map, because
a recalibration's own noise biases the fit it enters: a 30-bin map moved mu by +0.1 sigma on
average with the *exact* ratio of a weak shape systematic (docs/validation.md, session 16).

The record fails only when the shift is beyond ``CALIBRATION_EFFECT_LIMIT`` by more than
``CLEAR_MARGIN`` times its noise (the miscalibration clearly matters). `sbi_engine.result_checks.result_status` reads one
whose shift is within the limit *with* its noise as "significant but irrelevant" and no longer
fails that task's ensemble calibration check; in between (too few evaluation events to tell),
or when the recalibrated curve is still beyond the calibration limit (a deviation that is not a
slope, curvature or saturation, which the refit did not correct; the record then has no
``error``), nothing changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .result_checks import CALIBRATION_MAX_SIGMA

CALIBRATION_EFFECT_LIMIT = 0.1  # |shift| + noise of any POI, in its sigma: half the 0.2 sigma
# within which a learned result must match the exact one (docs/validation.md)
CALIBRATION_REPLICAS = 10  # bootstrap replicas of the recalibration (its noise)
# the check fails when the shift exceeds the limit by this many noise errors: the noise is
# estimated from 10 replicas, so shift / noise follows a t distribution with 9 degrees of
# freedom under the truth (measured over 87 exact-ratio tasks: median |shift| / noise 0.64,
# 95 % quantile 2.15, largest 3.88), and 4 keeps false alarms near 0.3 % per task
CLEAR_MARGIN = 4.0
MAX_TASKS = 32  # ratio tasks refitted per fit job (11 refits each), the most deviating first


@dataclass(frozen=True)
class TaskCalibration:
    """A task's whole-ensemble reliability curve on evaluation events, and its recalibration map."""

    task: str
    deviation: float  # global sigma of the worst bin (`CalibrationCurve.global_deviation`)
    log_r_num: np.ndarray  # nominal log r-hat on the numerator's evaluation events
    log_r_den: np.ndarray  # ... and on the denominator's
    w_num: np.ndarray
    w_den: np.ndarray
    # the two samples are the same events with two weightings, row for row (a hypothesis
    # simulated by reweighting): a replica resamples events, each with both its weights
    paired: bool = False

    def recalibration(self, replica: int | None = None) -> Any:
        """The `PolynomialCalibration` from these events (replica k: from Poisson(1)-resampled
        evaluation weights), or None when log r-hat is constant."""
        from .ratio.diagnostics import polynomial_calibration

        wn, wd = self.w_num, self.w_den
        if replica is not None:
            rng = np.random.default_rng(1000 + replica)
            k = rng.poisson(1.0, wn.size)
            wn, wd = wn * k, wd * (k if self.paired else rng.poisson(1.0, wd.size))
        return polynomial_calibration(self.log_r_num, self.log_r_den, wn, wd)

    def recalibrated(self, log_r: np.ndarray, replica: int | None = None) -> np.ndarray:
        """``log_r`` through the recalibration, renormalised so that E_den[r] = 1 on the
        denominator's events (unchanged when there is nothing to recalibrate)."""
        return self.recalibrated_all((log_r,), replica)[0]

    def recalibrated_all(
        self, arrays: Sequence[np.ndarray], replica: int | None = None
    ) -> list[np.ndarray]:
        """`recalibrated` for several arrays with one fit of the recalibration."""
        cal = self.recalibration(replica)
        if cal is None:
            return [np.asarray(a, np.float64) for a in arrays]
        on_den = cal.apply(self.log_r_den)
        shift = np.log(np.sum(self.w_den * np.exp(on_den)) / np.sum(self.w_den))
        return [cal.apply(a) - shift for a in arrays]

    def residual_deviation(
        self, on_num: np.ndarray | None = None, on_den: np.ndarray | None = None
    ) -> float:
        """The reliability curve's deviation (global sigma) after the recalibration, on the same
        events (``on_num``/``on_den``: the recalibrated log ratios there, if already known):
        beyond the calibration limit, the recalibration did not capture what is off (a bump,
        not a slope, curvature or saturation), so its effect says nothing about the
        deviation."""
        from .ratio.diagnostics import calibration_curve

        if on_num is None or on_den is None:
            on_num, on_den = self.recalibrated_all((self.log_r_num, self.log_r_den))
        curve = calibration_curve(on_num, on_den, self.w_num, self.w_den)
        return float(curve.global_deviation)


def task_calibration(
    task: str, paths: Sequence[str], numerator: Any, denominator: Any
) -> TaskCalibration:
    """The fit's ensemble of ``task`` (all its files) on the two evaluation samples (the
    denominator put in the numerator's event order when both hold the same events, as the
    paired training does)."""
    from .learned_ratios import task_ratios
    from .ratio.diagnostics import calibration_curve
    from .ratio.prepare import aligned_to, same_events

    denominator = aligned_to(numerator, denominator)
    paired = same_events(numerator, denominator)
    x = np.concatenate([np.asarray(numerator.features), np.asarray(denominator.features)])
    r = task_ratios(task, paths, x, denominator.features, denominator.weights)
    n = len(numerator)
    ln, ld = r.nominal[:n], r.nominal[n:]
    wn = np.asarray(numerator.weights, dtype=np.float64)
    wd = np.asarray(denominator.weights, dtype=np.float64)
    curve = calibration_curve(ln, ld, wn, wd)
    return TaskCalibration(task, float(curve.global_deviation), ln, ld, wn, wd, paired)


def replaced_variant(lf: Any, task: str, log_r: np.ndarray, label: str) -> Any:
    """The fit's arrays with ``task``'s nominal log ratio replaced by ``log_r``."""
    from .fit.variations import Variant

    for proc, t in lf.process_task.items():
        if t == task:
            return Variant(ratios={proc: np.exp(log_r)}, label=label)
    for key, (up, down) in lf.shape_tasks.items():
        if task in (up, down):
            pair = (
                np.exp(log_r if task == up else lf.ratios[up].nominal),
                np.exp(log_r if task == down else lf.ratios[down].nominal),
            )
            return Variant(shapes={key: pair}, label=label)
    raise KeyError(f"ratio task {task!r} feeds no process ratio or kept shape effect of the fit")


def used_tasks(lf: Any) -> list[str]:
    """The ratio tasks whose arrays the fit uses (a dropped shape's tasks are not)."""
    shapes = [t for pair in lf.shape_tasks.values() for t in pair]
    return list(dict.fromkeys([*lf.process_task.values(), *shapes]))


def effect_check(lf: Any, cal: TaskCalibration, result: Any) -> dict:
    """Refit with ``cal.task`` recalibrated (and with its bootstrap replicas); one check record."""
    from .fit.variations import refit_variants
    from .learned_uncertainty import check

    # the network's own output: a ratio the noise shrinkage changed is compared unshrunk
    raw = getattr(lf, "unshrunk", {}).get(cal.task)
    nominal = (raw or lf.ratios[cal.task]).nominal
    # one fit of the recalibration for the fit's rows and the check of what it left
    rows, on_num, on_den = cal.recalibrated_all((nominal, cal.log_r_num, cal.log_r_den))
    variants = [replaced_variant(lf, cal.task, rows, "recalibrated")] + [
        replaced_variant(lf, cal.task, cal.recalibrated(nominal, k), f"replica {k}")
        for k in range(CALIBRATION_REPLICAS)
    ]
    if raw is not None:
        variants.append(replaced_variant(lf, cal.task, nominal, "unshrunk"))
    fits = refit_variants(lf.workspace, variants, init=result)
    pois = list(lf.workspace.poi_names)
    cols = [list(fits.names).index(p) for p in pois]
    theta = np.asarray(fits.theta)[:, cols]
    sigma = np.array([float(result.errors[p]) for p in pois])
    base = np.array([float(result.values[p]) for p in pois])
    if raw is not None:
        base, theta = theta[-1], theta[:-1]
    shifts = (theta - base) / np.where(sigma > 0, sigma, np.nan)
    ok_fits = bool(np.all(fits.converged)) and bool(np.all(np.isfinite(shifts)))
    shift = shifts[0]
    noise = np.std(shifts[1:], axis=0, ddof=1) if len(shifts) > 2 else np.zeros_like(shift)
    worst = int(np.argmax(np.abs(shift) + noise)) if ok_fits else 0
    value = float(abs(shift[worst])) if ok_fits else float("nan")
    error = float(noise[worst]) if ok_fits else float("nan")
    clearly_beyond = ok_fits and value - CLEAR_MARGIN * error > CALIBRATION_EFFECT_LIMIT
    harmless = ok_fits and value + error <= CALIBRATION_EFFECT_LIMIT
    moved = ", ".join(
        f"{p} {s:+.3f} ± {e:.3f} sigma" for p, s, e in zip(pois, shift, noise, strict=True)
    )
    msg = (
        f"reliability curve {cal.deviation:.2f} sigma global (limit {CALIBRATION_MAX_SIGMA:g}); "
        f"refit with the ratio recalibrated (a cubic in log r-hat, on its evaluation "
        f"events) moves {moved} (± the recalibration's own noise over {CALIBRATION_REPLICAS} "
        "bootstrap replicas)"
    )
    significant = cal.deviation > CALIBRATION_MAX_SIGMA
    residual = cal.residual_deviation(on_num, on_den)
    if not ok_fits:
        msg += "; a refit did not converge, so the effect is unknown"
    elif residual > CALIBRATION_MAX_SIGMA:
        # what is off is not a slope, curvature or saturation: the refit did not correct it
        harmless, clearly_beyond, error = False, False, float("nan")
        msg += (
            f"; but the recalibrated curve is still {residual:.2f} sigma off, so the "
            "recalibration does not capture the deviation and its effect is not measured"
        )
    elif harmless:
        msg += (
            f": within {CALIBRATION_EFFECT_LIMIT:g} sigma with its noise, so the calibration"
            + (" deviation is significant but" if significant else "")
            + " does not matter for the result"
        )
    elif clearly_beyond:
        msg += (
            f": the miscalibration matters (beyond {CALIBRATION_EFFECT_LIMIT:g} sigma by more "
            f"than {CLEAR_MARGIN:g} times its noise); "
            "try more simulated events for this ratio, or longer or wider training"
        )
    else:
        msg += (
            f": the evaluation events cannot tell whether it matters (limit "
            f"{CALIBRATION_EFFECT_LIMIT:g} sigma within the noise); more evaluation events would"
        )
    # fails only when the effect is clearly beyond the limit; the demotion of a
    # failed calibration (`result_checks`) asks more: the effect below the limit, noise included
    return check(
        "calibration_effect",
        value,
        CALIBRATION_EFFECT_LIMIT,
        bool(ok_fits and not clearly_beyond),
        msg,
        cal.task,
        error=error,
    )


def calibration_effect_checks(
    lf: Any,
    result: Any,
    ensembles: Mapping[str, Sequence[str]],
    load_eval: Any,
    max_tasks: int = MAX_TASKS,
) -> list[dict]:
    """One ``calibration_effect`` record per ratio task the fit uses (at most ``max_tasks``).

    Every task, not only those whose curve fails: the train jobs judge each job's members on
    raw outputs, the fit uses all of a task's members normalised (E_den[r] = 1), and the two
    curves differ (low_stats: one job's 3.07 sigma, the fit's ensemble 1.86). Beyond
    ``max_tasks`` (an analysis with a hundred shape systematics) the tasks whose curves deviate
    most are refitted and one record says how many were not. ``load_eval(task)`` gives the
    task's (numerator, denominator) evaluation samples. A task whose effect cannot be measured
    gets a record saying why (it excuses nothing, and fails nothing): the fit job goes on.
    """
    from .learned_uncertainty import check

    out: list[dict] = []
    cals: list[TaskCalibration] = []
    for task in used_tasks(lf):
        if task not in ensembles or task not in lf.task_samples:
            continue
        try:
            num, den = load_eval(task)
            cals.append(task_calibration(task, ensembles[task], num, den))
        except Exception as exc:  # noqa: BLE001 - reported in the record, never fatal
            out.append(_unmeasured(task, exc))
    cals.sort(key=lambda c: -c.deviation if np.isfinite(c.deviation) else 0.0)
    for cal in cals[:max_tasks]:
        try:
            out.append(effect_check(lf, cal, result))
        except Exception as exc:  # noqa: BLE001
            out.append(_unmeasured(cal.task, exc))
    if len(cals) > max_tasks:
        skipped = [c.task for c in cals[max_tasks:]]
        out.append(
            check(
                "calibration_effect",
                None,
                CALIBRATION_EFFECT_LIMIT,
                True,
                f"measured for the {max_tasks} tasks whose reliability curves deviate most; not "
                f"for {len(skipped)} more ({', '.join(skipped[:5])}"
                f"{', ...' if len(skipped) > 5 else ''}), whose failed calibrations are not excused "
                "(options.uncertainty.calibration_effect: N measures N tasks)",
            )
        )
    return out


def _unmeasured(task: str, exc: Exception) -> dict:
    from .learned_uncertainty import check

    return check(
        "calibration_effect",
        None,
        CALIBRATION_EFFECT_LIMIT,
        True,
        f"not measured: {type(exc).__name__}: {exc}",
        task,
    )


__all__ = [
    "CALIBRATION_EFFECT_LIMIT",
    "CLEAR_MARGIN",
    "TaskCalibration",
    "task_calibration",
    "effect_check",
    "replaced_variant",
    "calibration_effect_checks",
    "used_tasks",
]
