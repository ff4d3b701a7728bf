"""Can an ensemble be trusted? Calibration, closure, normalisation, AUC, overtraining, saturation.

Everything is computed on held-out samples (events not used in training) and returned as
plain frozen dataclasses whose ``to_dict()`` is JSON-safe, so the dashboard can draw them
later without JAX. Conventions:

* scores s = sigmoid(log r-hat); with class-balanced weights a calibrated classifier has
  P(numerator | s) = s in every bin (the reliability curve lies on the diagonal);
* closure: the reference reweighted by r-hat must reproduce the numerator's distribution of
  every observable; compared as unit-area histograms (shape) with chi2 over the bins and
  ndf = bins - 1. The normalisation E_ref[r-hat] (should be 1) is reported separately;
* losses use the training definition: mean of weight x BCE with each class's weights scaled
  to half the events, so holdout and training losses are directly comparable;
* every gating number has a known distribution under the true ratio, so a check fails for the
  networks, not for the problem: the calibration deviation is also given as a global
  significance over the bins it looked at (`look_elsewhere_sigma`), saturation counts only the
  events r-hat calls impossible for their own class (`overconfident_fraction`, at most
  e^-limit for the true ratio however steep it is), and the AUC carries its error under
  indistinguishable classes (`auc_null_error`). ``benchmarks/check_null.py`` measures the
  false-alarm rate of every check with the exact ratios of the benchmark problems.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from ..precision import enable_float64
from .ensemble import Ensemble


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if np.isfinite(v) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


@dataclass(frozen=True)
class CalibrationCurve:
    """Reliability curve of one member (``member`` index) or of the ensemble (``member=None``)."""

    member: int | None
    bin_edges: tuple[float, ...]
    mean_score: tuple[float, ...]
    observed_fraction: tuple[float, ...]
    observed_error: tuple[float, ...]
    weight: tuple[float, ...]
    max_deviation: float  # largest |observed - mean score| / error over bins with n_eff >= 10
    tested_bins: int = 0  # bins with n_eff >= 10 (the trials of the look-elsewhere correction)
    global_deviation: float = float("nan")  # max_deviation as a global significance


@dataclass(frozen=True)
class Closure:
    """Reference reweighted by r-hat versus the target, for one observable (unit-area histograms)."""

    observable: str
    bin_edges: tuple[float, ...]
    target: tuple[float, ...]
    target_error: tuple[float, ...]
    reweighted: tuple[float, ...]
    reweighted_error: tuple[float, ...]
    reference: tuple[float, ...]
    chi2: float
    ndf: int

    @property
    def chi2_ndf(self) -> float:
        return self.chi2 / max(self.ndf, 1)


@dataclass(frozen=True)
class HistogramCalibration:
    """Piecewise-linear map log r-hat -> calibrated log r from histograms of the ensemble output.

    In each bin of log r-hat the calibrated value is log(fraction of numerator weight /
    fraction of reference weight); ``apply`` interpolates between bin centres and, beyond the
    outermost centres, keeps the outermost correction (calibrated - centre) rather than the
    value: a calibrated r-hat stays itself in the tails, where the events that weigh most are.
    """

    bin_edges: tuple[float, ...]
    centers: tuple[float, ...]
    calibrated_log_ratio: tuple[float, ...]

    def apply(self, log_r: np.ndarray) -> np.ndarray:
        z = np.asarray(log_r, np.float64)
        c = np.asarray(self.centers, np.float64)
        return z + np.interp(z, c, np.asarray(self.calibrated_log_ratio, np.float64) - c)


@dataclass(frozen=True)
class MemberLosses:
    """Overtraining check of one member: a holdout loss well above the training loss is a warning."""

    member: int
    train_loss: float | None
    holdout_loss: float
    best_val_loss: float | None


@dataclass(frozen=True)
class Diagnostics:
    """All diagnostics of one ensemble on one pair of holdout samples."""

    members: int
    aggregate: str
    n_numerator: int
    n_reference: int
    normalization: float
    normalization_error: float
    member_normalization: tuple[float, ...]
    auc: float
    member_auc: tuple[float, ...]
    roc_fpr: tuple[float, ...]
    roc_tpr: tuple[float, ...]
    calibration: tuple[CalibrationCurve, ...]  # ensemble first, then members
    closure: tuple[Closure, ...]
    losses: tuple[MemberLosses, ...]
    saturated_fraction: float
    member_saturated_fraction: tuple[float, ...]
    histogram_calibration: HistogramCalibration | None = None
    overconfident_fraction: float = float("nan")  # the saturation check's value
    auc_null_error: float = float("nan")  # sd of the AUC when the classes are indistinguishable
    logit_slope: float = float("nan")  # 1 when calibrated, > 1 when r-hat is too flat
    logit_slope_error: float = float("nan")

    @property
    def max_closure_chi2_ndf(self) -> float:
        return max((c.chi2_ndf for c in self.closure), default=float("nan"))

    def to_dict(self) -> dict[str, Any]:
        out = _jsonable(self)
        out["max_closure_chi2_ndf"] = _jsonable(self.max_closure_chi2_ndf)
        for c, d in zip(self.closure, out["closure"]):
            d["chi2_ndf"] = _jsonable(c.chi2_ndf)
        return out


# ---- pieces (pure NumPy, usable on their own) ----------------------------------------------


def balanced_weights(w_num: np.ndarray, w_ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale both classes to the same total (half of all events), as in training."""
    n = len(w_num) + len(w_ref)
    return (
        np.asarray(w_num, np.float64) * (0.5 * n / np.sum(w_num)),
        np.asarray(w_ref, np.float64) * (0.5 * n / np.sum(w_ref)),
    )


def weighted_bce(
    logit_num: np.ndarray, logit_ref: np.ndarray, w_num: np.ndarray, w_ref: np.ndarray
) -> float:
    """The training loss definition evaluated on given logits (float64)."""
    bn, br = balanced_weights(w_num, w_ref)
    loss = np.sum(bn * np.logaddexp(0.0, -np.asarray(logit_num, np.float64)))
    loss += np.sum(br * np.logaddexp(0.0, np.asarray(logit_ref, np.float64)))
    return float(loss / (len(w_num) + len(w_ref)))


def kish_size(w: np.ndarray) -> float:
    """Effective number of events of a weighted (possibly signed) sample: (sum w)^2 / sum w^2."""
    w = np.asarray(w, np.float64)
    w2 = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / w2 if w2 > 0 else 0.0


def auc_null_error(w_num: np.ndarray, w_ref: np.ndarray) -> float:
    """Standard deviation of the AUC of two indistinguishable classes (Mann-Whitney,
    sqrt((n1 + n2 + 1) / (12 n1 n2)) with Kish effective sizes): a ratio whose true effect is
    tiny has an AUC within a few of these of 0.5 on either side."""
    n1, n2 = kish_size(w_num), kish_size(w_ref)
    if n1 <= 0 or n2 <= 0:
        return float("nan")
    return math.sqrt((n1 + n2 + 1.0) / (12.0 * n1 * n2))


def look_elsewhere_sigma(z_local: float, trials: int) -> float:
    """The largest of ``trials`` independent two-sided deviations, as a global significance.

    A reliability curve tests ~20 disjoint bins of events; the largest of 20 standard normal
    deviations exceeds 3 in 5 % of curves of a perfectly calibrated ratio. The Sidak
    correction p_global = 1 - (1 - p_local)^trials gives the significance of the whole curve,
    whose null distribution does not depend on how many bins were populated.
    """
    if not math.isfinite(z_local) or trials <= 1:
        return float(z_local)
    p_local = math.erfc(abs(z_local) / math.sqrt(2.0))  # two-sided; stdlib: no SciPy here
    if p_local <= 0.0:  # beyond float resolution: the correction cannot matter
        return float(z_local)
    p_global = -math.expm1(trials * math.log1p(-min(p_local, 1.0 - 1e-16)))
    return float(-NormalDist().inv_cdf(min(p_global / 2.0, 0.5)))


def _weighted_logistic(
    design: np.ndarray, y: np.ndarray, w: np.ndarray, start: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """Newton on the weighted logistic log likelihood: (coefficients, Hessian), None when the
    design is degenerate (e.g. a constant log r-hat)."""
    beta = np.asarray(start, np.float64)
    hess = np.eye(len(beta))
    for _ in range(50):
        p = np.exp(-np.logaddexp(0.0, -(design @ beta)))  # the sigmoid, without overflow
        hess = (design * (w * p * (1 - p))[:, None]).T @ design
        try:
            step = np.linalg.solve(hess, design.T @ (w * (y - p)))
        except np.linalg.LinAlgError:
            return None
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta, hess


def _class_design(
    log_r_num: np.ndarray, log_r_ref: np.ndarray, w_num: np.ndarray, w_ref: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(log r-hat, class label, weight) of both classes, each class's weights summing to one."""
    t = np.concatenate([log_r_num, log_r_ref]).astype(np.float64)
    y = np.concatenate([np.ones(len(log_r_num)), np.zeros(len(log_r_ref))])
    wn, wr = np.asarray(w_num, np.float64), np.asarray(w_ref, np.float64)
    return t, y, np.concatenate([wn / np.sum(wn), wr / np.sum(wr)])


def logit_slope(
    log_r_num: np.ndarray, log_r_ref: np.ndarray, w_num: np.ndarray, w_ref: np.ndarray
) -> tuple[float, float]:
    """Slope b, and its error, of a weighted logistic regression of the class on log r-hat
    (classes weighted to equal totals). b = 1 for a calibrated ratio; b > 1: r-hat is too flat,
    the usual way a network errs. One number for the whole curve, so it sees a flattening of a
    small ratio that no single bin of the reliability curve can (2-5 sigma for 20 % on the
    benchmarks' systematics, where the curve sees nothing; docs/validation.md)."""
    t, y, w = _class_design(log_r_num, log_r_ref, w_num, w_ref)
    fitted = _weighted_logistic(np.column_stack([np.ones_like(t), t]), y, w, np.array([0.0, 1.0]))
    if fitted is None:  # a constant log r-hat: no slope to measure
        return float("nan"), float("nan")
    beta, hess = fitted
    n1, n2 = kish_size(np.asarray(w_num, np.float64)), kish_size(np.asarray(w_ref, np.float64))
    if n1 <= 0 or n2 <= 0:
        return float(beta[1]), float("nan")
    scale = 2.0 / (1.0 / n1 + 1.0 / n2)  # the weights sum to 2: information per event
    return float(beta[1]), float(np.sqrt(np.linalg.inv(hess)[1, 1] / scale))


@dataclass(frozen=True)
class PolynomialCalibration:
    """log r-hat -> calibrated log r as a polynomial in log r-hat, fitted by weighted logistic
        regression of the class on it (classes to equal totals, so the logit is the log ratio).

        Few parameters on purpose: a recalibration is itself estimated from finite samples, and its
        noise, put into a fit, biases it (a shape ratio's noise reads as information; a 30-bin
        histogram map moved mu by +0.1 sigma on average with the *exact* ratio of a weak systematic,
        docs/validation.md). Slope, curvature and an odd cubic term are how networks err (too flat,
    saturating at both ends).
        Beyond the central 99 % of the events it was fitted on, the outermost correction is kept.
    """

    coefficients: tuple[float, ...]  # in powers of (log r-hat - center) / scale
    center: float
    scale: float
    low: float
    high: float

    def apply(self, log_r: np.ndarray) -> np.ndarray:
        z = np.asarray(log_r, np.float64)
        u = (np.clip(z, self.low, self.high) - self.center) / self.scale
        clipped = np.polynomial.polynomial.polyval(u, np.asarray(self.coefficients))
        return z + clipped - np.clip(z, self.low, self.high)


def polynomial_calibration(
    log_r_num: np.ndarray,
    log_r_ref: np.ndarray,
    w_num: np.ndarray,
    w_ref: np.ndarray,
    degree: int = 3,
) -> PolynomialCalibration | None:
    """The `PolynomialCalibration` of r-hat on these events (None if log r-hat is constant)."""
    t, y, w = _class_design(log_r_num, log_r_ref, w_num, w_ref)
    # the polynomial is fitted on the central 99 % of the events (balanced, |weights|): a few
    # events where one density vanishes (log r-hat of -35) would otherwise set its scale. The
    # others are left out, not clipped: a selection on log r-hat keeps the class probabilities
    # given log r-hat, so a calibrated r-hat still fits as itself
    order = np.argsort(t)
    cw = np.cumsum(np.abs(w[order]))
    low, high = np.interp([0.005 * cw[-1], 0.995 * cw[-1]], cw, t[order])
    keep = (t >= low) & (t <= high)
    t, y, w = t[keep], y[keep], w[keep]
    center = float(np.sum(np.abs(w) * t) / np.sum(np.abs(w)))
    scale = float(np.sqrt(np.sum(np.abs(w) * (t - center) ** 2) / np.sum(np.abs(w))))
    if not np.isfinite(scale) or scale <= 0:
        return None
    u = (t - center) / scale
    design = np.column_stack([u**k for k in range(degree + 1)])
    start = np.zeros(degree + 1)
    start[0], start[1] = center, scale  # the identity map
    fitted = _weighted_logistic(design, y, w, start)
    if fitted is None or not np.all(np.isfinite(fitted[0])):
        return None
    return PolynomialCalibration(tuple(float(b) for b in fitted[0]), center, scale, low, high)


def overconfident_fraction(
    log_r_num: np.ndarray,
    log_r_ref: np.ndarray,
    w_num: np.ndarray,
    w_ref: np.ndarray,
    limit: float,
) -> float:
    """Largest share of a class's weight that r-hat calls impossible for that class:
    numerator events with log r-hat < -limit, reference events with log r-hat > +limit.

    A steep true ratio (a narrow signal over a wide background) drives |log r| past any limit
    on the events where the other class dominates, and that is right. Against its own class
    it cannot be: P_num(r < e^-L) = E_ref[r; r < e^-L] <= e^-L, and likewise for the
    reference, so beyond ~1e-6 (L = 13.8) the share is the network's overconfidence.
    """
    wn, wr = np.asarray(w_num, np.float64), np.asarray(w_ref, np.float64)
    tn, tr = float(np.sum(wn)), float(np.sum(wr))
    share_num = float(np.sum(wn[np.asarray(log_r_num) < -limit])) / tn if tn else 0.0
    share_ref = float(np.sum(wr[np.asarray(log_r_ref) > limit])) / tr if tr else 0.0
    return max(share_num, share_ref, 0.0)


def weighted_roc(
    score_num: np.ndarray,
    score_ref: np.ndarray,
    w_num: np.ndarray,
    w_ref: np.ndarray,
    points: int = 101,
) -> tuple[float, np.ndarray, np.ndarray]:
    """(AUC, fpr, tpr) with event weights; ties between scores are grouped."""
    s = np.concatenate([score_num, score_ref]).astype(np.float64)
    y = np.concatenate([np.ones(len(score_num)), np.zeros(len(score_ref))])
    w = np.concatenate([w_num, w_ref]).astype(np.float64)
    order = np.argsort(-s, kind="stable")
    s, y, w = s[order], y[order], w[order]
    tp = np.cumsum(w * y)
    fp = np.cumsum(w * (1 - y))
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # end of each tie group
    tpr = np.r_[0.0, tp[last] / tp[-1]]
    fpr = np.r_[0.0, fp[last] / fp[-1]]
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    grid = np.linspace(0, 1, points)
    return auc, grid, np.interp(grid, fpr, tpr)


def calibration_curve(
    logit_num: np.ndarray,
    logit_ref: np.ndarray,
    w_num: np.ndarray,
    w_ref: np.ndarray,
    bins: int = 20,
    member: int | None = None,
) -> CalibrationCurve:
    """Weighted reliability curve: per bin of s, weighted mean s and weighted numerator fraction."""
    bn, br = balanced_weights(w_num, w_ref)
    s = 1.0 / (1.0 + np.exp(-np.concatenate([logit_num, logit_ref]).astype(np.float64)))
    y = np.concatenate([np.ones(len(logit_num)), np.zeros(len(logit_ref))])
    w = np.concatenate([bn, br])
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(s, edges) - 1, 0, bins - 1)
    sw = np.bincount(idx, w, bins)
    sw2 = np.bincount(idx, w * w, bins)
    mean_s = np.bincount(idx, w * s, bins) / np.where(sw > 0, sw, 1)
    frac = np.bincount(idx, w * y, bins) / np.where(sw > 0, sw, 1)
    n_eff = np.where(sw2 > 0, sw * sw / np.where(sw2 > 0, sw2, 1), 0)
    # binomial error under the calibration hypothesis (observed = mean score), floored at 1/n_eff
    var = np.maximum(mean_s * (1 - mean_s), 1.0 / np.maximum(n_eff, 1)) / np.maximum(n_eff, 1)
    err = np.sqrt(var)
    has = sw > 0
    dev = np.abs(frac - mean_s) / err
    enough = has & (n_eff >= 10)  # the max deviation ignores nearly empty bins
    mean_s[~has], frac[~has], err[~has] = np.nan, np.nan, np.nan
    worst = float(np.max(dev[enough])) if enough.any() else float("nan")
    tested = int(enough.sum())
    return CalibrationCurve(
        member,
        tuple(edges),
        tuple(mean_s),
        tuple(frac),
        tuple(err),
        tuple(sw),
        worst,
        tested,
        look_elsewhere_sigma(worst, tested),
    )


def _weighted_quantile_edges(x: np.ndarray, w: np.ndarray, bins: int) -> np.ndarray:
    order = np.argsort(x)
    cw = np.cumsum(w[order])
    cw /= cw[-1]
    inner = np.interp(np.linspace(0, 1, bins + 1)[1:-1], cw, x[order])
    edges = np.unique(np.r_[x.min(), inner, x.max()])
    return edges


def closure(
    name: str,
    x_num: np.ndarray,
    w_num: np.ndarray,
    x_ref: np.ndarray,
    w_ref: np.ndarray,
    ratio: np.ndarray,
    bins: int = 20,
) -> Closure:
    """Reweighting closure of one observable with equal-target-weight bins."""
    edges = _weighted_quantile_edges(
        np.asarray(x_num, np.float64), np.asarray(w_num, np.float64), bins
    )
    lo, hi = edges[0], edges[-1]
    x_ref = np.clip(x_ref, lo, hi)  # overflow into the edge bins

    def hist(x, w):
        h, _ = np.histogram(x, edges, weights=w)
        h2, _ = np.histogram(x, edges, weights=w * w)
        return h / np.sum(w), np.sqrt(h2) / np.sum(w)

    t, te = hist(x_num, w_num)
    wr = np.asarray(w_ref, np.float64) * np.asarray(ratio, np.float64)
    r, re = hist(x_ref, wr)
    ref, _ = hist(x_ref, np.asarray(w_ref, np.float64))
    var = te**2 + re**2
    ok = var > 0
    chi2 = float(np.sum((t[ok] - r[ok]) ** 2 / var[ok]))
    return Closure(
        name,
        tuple(edges),
        tuple(t),
        tuple(te),
        tuple(r),
        tuple(re),
        tuple(ref),
        chi2,
        int(ok.sum()) - 1,
    )


def histogram_calibration(
    logit_num: np.ndarray,
    logit_ref: np.ndarray,
    w_num: np.ndarray,
    w_ref: np.ndarray,
    bins: int = 30,
) -> HistogramCalibration:
    """Calibrate log r-hat by histogramming it for both classes (equal-population bins).

    A bin's calibrated value log(numerator share / reference share) is log E_ref[r | bin], so
    its centre is log E_ref[r-hat | bin], not the mean of log r-hat: then a calibrated r-hat
    maps onto itself in expectation however wide the bin (the mean of log r-hat would sit below
    it by half the log ratio's variance in the bin, which is large in the wide outer bins).
    """
    z = np.concatenate([logit_num, logit_ref]).astype(np.float64)
    bn, br = balanced_weights(w_num, w_ref)
    edges = _weighted_quantile_edges(z, np.concatenate([bn, br]), bins)
    zn = np.clip(np.asarray(logit_num, np.float64), edges[0], edges[-1])
    zr = np.clip(np.asarray(logit_ref, np.float64), edges[0], edges[-1])
    hn, _ = np.histogram(zn, edges, weights=w_num)
    hr, _ = np.histogram(zr, edges, weights=w_ref)
    top = float(np.max(zr))  # r-hat weighted sums relative to the largest: no overflow
    er, _ = np.histogram(zr, edges, weights=w_ref * np.exp(zr - top))
    hn, hr = hn / np.sum(w_num), hr / np.sum(w_ref)
    ok = (hn > 0) & (hr > 0) & (er > 0)
    centers = (np.log(np.where(ok, er, 1.0)) + top - np.log(np.where(ok, hr * np.sum(w_ref), 1.0)))[
        ok
    ]
    cal = np.log(hn[ok] / hr[ok])
    order = np.argsort(centers)
    return HistogramCalibration(tuple(edges), tuple(centers[order]), tuple(cal[order]))


# ---- the whole set ----------------------------------------------------------------------------


def diagnostics(
    ensemble: Ensemble,
    numerator_holdout: Any,
    reference_holdout: Any,
    *,
    aggregate: str = "mean_ratio",
    bins: int = 20,
    closure_bins: int = 20,
    train_numerator: Any = None,
    train_reference: Any = None,
    max_member_curves: int = 32,
    saturation_logit: float = 13.8,
    calibrate: bool = False,
    chunk_size: int = 65536,
) -> Diagnostics:
    """Every diagnostic of ``ensemble`` on held-out numerator and reference samples.

    ``train_numerator``/``train_reference``: pass the training samples to get per-member
    training losses for the overtraining check (otherwise only holdout and best validation
    losses are reported). ``saturation_logit``: |log r| beyond which an output counts as
    saturated (13.8 = scores within 1e-6 of 0 or 1). ``calibrate``: also fit a
    ``HistogramCalibration``.
    """
    enable_float64()
    names = ensemble.feature_names
    wn, wr = (
        np.asarray(numerator_holdout.weights, np.float64),
        np.asarray(reference_holdout.weights, np.float64),
    )
    zn = ensemble.member_log_ratios(numerator_holdout, chunk_size=chunk_size).astype(np.float64)
    zr = ensemble.member_log_ratios(reference_holdout, chunk_size=chunk_size).astype(np.float64)
    en, _ = ensemble.log_ratio(numerator_holdout, chunk_size=chunk_size, aggregate=aggregate)
    er, _ = ensemble.log_ratio(reference_holdout, chunk_size=chunk_size, aggregate=aggregate)
    m = ensemble.members

    r_ref = np.exp(er)
    total = np.sum(wr)
    norm = float(np.sum(wr * r_ref) / total)
    norm_err = float(np.sqrt(np.sum(wr**2 * (r_ref - norm) ** 2)) / total)
    member_norm = tuple(float(np.sum(wr * np.exp(zr[k])) / total) for k in range(m))

    auc, fpr, tpr = weighted_roc(en, er, wn, wr)
    member_auc = tuple(weighted_roc(zn[k], zr[k], wn, wr, points=2)[0] for k in range(m))

    curves = [calibration_curve(en, er, wn, wr, bins)]
    curves += [
        calibration_curve(zn[k], zr[k], wn, wr, bins, member=k)
        for k in range(min(m, max_member_curves))
    ]

    closures = tuple(
        closure(
            name,
            numerator_holdout.features[:, j],
            wn,
            reference_holdout.features[:, j],
            wr,
            r_ref,
            closure_bins,
        )
        for j, name in enumerate(names)
    )

    train_losses: list[float | None] = [None] * m
    if train_numerator is not None and train_reference is not None:
        tn = ensemble.member_log_ratios(train_numerator, chunk_size=chunk_size)
        tr = ensemble.member_log_ratios(train_reference, chunk_size=chunk_size)
        train_losses = [
            weighted_bce(tn[k], tr[k], train_numerator.weights, train_reference.weights)
            for k in range(m)
        ]
    best_val = {
        rec["member"]: rec["best_val_loss"]
        for rec in ensemble.metadata.get("training", {}).get("members", [])
    }
    losses = tuple(
        MemberLosses(k, train_losses[k], weighted_bce(zn[k], zr[k], wn, wr), best_val.get(k))
        for k in range(m)
    )

    all_z = np.concatenate([zn, zr], axis=1)
    member_sat = tuple(float(np.mean(np.abs(all_z[k]) > saturation_logit)) for k in range(m))
    sat = float(np.mean(np.abs(np.concatenate([en, er])) > saturation_logit))
    slope, slope_error = logit_slope(en, er, wn, wr)

    return Diagnostics(
        members=m,
        aggregate=aggregate,
        n_numerator=len(wn),
        n_reference=len(wr),
        normalization=norm,
        normalization_error=norm_err,
        member_normalization=member_norm,
        auc=auc,
        member_auc=member_auc,
        roc_fpr=tuple(fpr),
        roc_tpr=tuple(tpr),
        calibration=tuple(curves),
        closure=closures,
        losses=losses,
        saturated_fraction=sat,
        member_saturated_fraction=member_sat,
        histogram_calibration=histogram_calibration(en, er, wn, wr) if calibrate else None,
        overconfident_fraction=overconfident_fraction(en, er, wn, wr, saturation_logit),
        auc_null_error=auc_null_error(wn, wr),
        logit_slope=slope,
        logit_slope_error=slope_error,
    )
