"""Shrink the network noise out of a learned log ratio before the fit uses it.

Why: a learned log ratio is the true one plus network noise from the finite training sample.
The fit reads the noise as information about mu. Where the part of the ratio that measures mu
is small (the `interference` benchmark: SBI/B within a few per cent of 1, noise 60 % of the part
the nuisance shapes cannot mimic) that makes the interval up to 40 % too narrow and pulls mu-hat
0.55 sigma low (docs/validation.md). This is regression dilution in errors-in-variables form:
given the noisy value t of a quantity s with noise e independent of s, the best linear estimate
of s is E[s | t] = fitted + lambda (t - fitted) with lambda = var(s) / var(t) = 1 - var(e) / var(t).

Per process ratio task: the nominal log ratio is regressed on [1, nuisance shape directions] by
weighted least squares over the data rows (what the nuisances can mimic moves the nuisances,
not mu alone, and is left alone); only the residual is shrunk, by lambda = 1 - noise^2 /
var(residual), noise^2 being the mean member variance of log r on the data rows (same weights) (bootstrap
members: the error of one training on a fresh sample). Every member is treated the same way
with its own regression and the same lambda, so the NN component is that of the shrunk ratios
and keeps the members' differences along the shape directions; every row (data and
normalisation) is transformed, and each ratio is renormalised on the normalisation sample
(E_ref[r] = 1).

Opt-in (``options.shrink_noise: true``), because it assumes that the learned log ratio has the
true one's slope plus independent noise. Where noise dominates (`interference`) it removes the
mean bias and restores the interval width; where it does not, it changes little (lambda 0.99 on
`correlated5`). But a network that underfits learns a ratio that is already too flat, and
shrinking flattens it further: on the demo (lambda 0.92 for SBI/B) the simulated-Asimov mu-hat
moved from +0.14 to +0.24 sigma of the exact one. It cannot remove the scatter the noise adds on
each data set, which the NN component carries.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .learned_ratios import TaskRatios


@dataclass(frozen=True)
class Shrinkage:
    """What was done to one task's ratio: lambda, the noise and the residual spread it came from."""

    task: str
    factor: float  # lambda: 1 = unchanged
    noise: float  # RMS member spread of log r on the data rows (nan: one member)
    residual: float  # spread of the nominal log r on the data rows after the shape directions
    directions: int  # nuisance shape directions regressed out first

    def to_dict(self) -> dict[str, Any]:
        ok = self.residual > 0 and np.isfinite(self.noise)
        return {
            "task": self.task,
            "lambda": self.factor,
            "noise": self.noise if np.isfinite(self.noise) else None,
            "residual": self.residual,
            "noise_to_signal": self.noise / self.residual if ok else None,
            "shape_directions": self.directions,
        }


def shape_directions(columns: Sequence[np.ndarray], n: int) -> np.ndarray:
    """(n, k) log(up / down) columns that can serve as regressors (finite, not constant);
    k may be 0."""
    cols = [np.asarray(c, dtype=np.float64) for c in columns]
    cols = [c for c in cols if np.all(np.isfinite(c)) and np.std(c) > 0]
    return np.column_stack(cols) if cols else np.empty((n, 0))


def _renormalised(log_r: np.ndarray, norm_rows: np.ndarray, norm_w: np.ndarray) -> np.ndarray:
    """log r shifted so that E_ref[r] = 1 on the normalisation rows (last axis)."""
    on_norm = np.exp(log_r[..., norm_rows])
    shift = np.log(np.sum(norm_w * on_norm, axis=-1) / np.sum(norm_w))
    return log_r - np.asarray(shift)[..., None]


def shrink(
    ratios: TaskRatios,
    directions: np.ndarray,
    data_rows: np.ndarray,
    data_weights: np.ndarray,
    norm_rows: np.ndarray,
    norm_weights: np.ndarray,
) -> tuple[TaskRatios, Shrinkage]:
    """The task's ratios with the noisy residual shrunk (see the module docstring).

    ``directions`` (n_rows, k), k >= 0 (`shape_directions`): nuisance shape directions on every row;
    ``data_weights``: the data weights of ``data_rows`` (|w| is used); ``norm_weights``: the
    simulation weights of ``norm_rows``. One member (noise unknown) or no residual: unchanged.
    """
    n = ratios.nominal.shape[0]
    k = directions.shape[1]
    design_all = np.column_stack([np.ones(n), directions])
    rows = np.asarray(data_rows)
    w = np.abs(np.asarray(data_weights, dtype=np.float64))
    sw = np.sqrt(w)
    # nominal and every member regressed at once: (k+1, 1+M) coefficients
    targets = np.vstack([ratios.nominal[None, :], ratios.members])
    coef, *_ = np.linalg.lstsq(
        design_all[rows] * sw[:, None], (targets[:, rows] * sw).T, rcond=None
    )
    resid = ratios.nominal[rows] - design_all[rows] @ coef[:, 0]
    mean = np.sum(w * resid) / np.sum(w)
    resid_var = float(np.sum(w * (resid - mean) ** 2) / np.sum(w))
    noise = ratios.noise(rows, w)
    if not np.isfinite(noise) or resid_var <= 0:
        return ratios, Shrinkage(ratios.task, 1.0, noise, float(np.sqrt(resid_var)), k)
    lam = float(max(0.0, 1.0 - noise**2 / resid_var))
    # each member keeps its own fitted part (what the nuisances can mimic varies by member too)
    fitted = (design_all @ coef).T  # (1+M, n)
    shrunk_all = _renormalised(
        fitted + lam * (targets - fitted),
        np.asarray(norm_rows),
        np.asarray(norm_weights, dtype=np.float64),
    )
    shrunk = dataclasses.replace(ratios, members=shrunk_all[1:], nominal=shrunk_all[0])
    return shrunk, Shrinkage(ratios.task, lam, noise, float(np.sqrt(resid_var)), k)


__all__ = ["Shrinkage", "shape_directions", "shrink"]
