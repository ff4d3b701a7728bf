"""Event samples in memory: the `Sample` container, its validation, seeded splits and scaling.

Every estimator and the fit consume a `Sample`: float32 features (n, d), float64 weights (n,)
whose sum is the expected yield for simulated samples, feature names and a human-readable
source used in error messages. Bad input is reported as `DataError` naming the source, the
column and how many rows are affected, so a user never meets a traceback from deep inside
NumPy or JAX. Reading files into a `Sample` is `sbi_engine.readers`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["DataError", "Sample", "Split", "Scaler", "validate_sample", "split_sample"]


class DataError(ValueError):
    """Bad input data: the message names the file, the branch/column and the count of bad rows."""


@dataclass(frozen=True, eq=False)
class Sample:
    """A set of (weighted) events.

    features: (n, d) float32; weights: (n,) float64 (sum = expected yield for simulation);
    names: feature names (len d); source: where the events came from, for error messages.
    Arrays are converted (float32 / float64, C-contiguous) on construction; shapes are checked
    here, finiteness and signs by `validate_sample`.
    """

    features: np.ndarray
    weights: np.ndarray
    names: tuple[str, ...]
    source: str = "<memory>"

    def __post_init__(self) -> None:
        feats = np.ascontiguousarray(np.asarray(self.features, dtype=np.float32))
        if feats.ndim == 1:
            feats = feats.reshape(-1, 1)
        if feats.ndim != 2:
            raise DataError(f"{self.source}: features must be 2-D (n, d), got shape {feats.shape}")
        wts = np.ascontiguousarray(np.asarray(self.weights, dtype=np.float64).reshape(-1))
        names = tuple(str(n) for n in self.names)
        if len(names) != feats.shape[1]:
            raise DataError(
                f"{self.source}: {feats.shape[1]} feature columns but {len(names)} names {names}"
            )
        if wts.shape[0] != feats.shape[0]:
            raise DataError(
                f"{self.source}: length mismatch: {feats.shape[0]} feature rows but "
                f"{wts.shape[0]} weights"
            )
        object.__setattr__(self, "features", feats)
        object.__setattr__(self, "weights", wts)
        object.__setattr__(self, "names", names)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.features.shape[1])

    @property
    def total_weight(self) -> float:
        return float(np.sum(self.weights))

    def subset(self, idx: Any) -> Sample:
        """Rows selected by an index array, slice or boolean mask (weights are not rescaled)."""
        return Sample(self.features[idx], self.weights[idx], self.names, self.source)

    def with_weights(
        self, weights: np.ndarray | None = None, *, scale: float | None = None
    ) -> Sample:
        """A copy with new weights, or with the weights multiplied by `scale`."""
        if (weights is None) == (scale is None):
            raise ValueError("with_weights: give exactly one of weights= or scale=")
        if scale is not None:
            new = self.weights * float(scale)
        else:
            assert weights is not None  # exactly one of weights/scale was checked above
            new = weights
        return Sample(self.features, new, self.names, self.source)

    def column(self, name: str) -> np.ndarray:
        """One feature column by name."""
        try:
            return self.features[:, self.names.index(name)]
        except ValueError:
            raise DataError(
                f"{self.source}: no feature {name!r}; features are {list(self.names)}"
            ) from None


# =============================================================================== validation


def _bad_rows(values: np.ndarray) -> tuple[int, int]:
    """(rows with NaN, rows with +-inf) of a 1-D or 2-D array."""
    v = values if values.ndim == 2 else values[:, None]
    nan = np.isnan(v).any(axis=1)
    inf = np.isinf(v).any(axis=1)
    return int(nan.sum()), int((inf & ~nan).sum())


def validate_sample(sample: Sample, *, allow_negative_weights: bool = False) -> Sample:
    """Check a sample before it reaches training or a fit; return it unchanged if it is fine.

    Refused (as `DataError` naming the source, column and number of bad rows): an empty sample,
    NaN or inf in any feature column or in the weights, a features/weights length mismatch,
    negative weights, and a non-positive sum of weights.

    Negative weights (e.g. NLO generators with subtraction terms) are refused by default. With
    allow_negative_weights=True they are accepted, and the consequence is on the caller: the
    weighted binary cross-entropy is no longer bounded below (a negative-weight event rewards
    pushing its prediction to 0 or 1 without limit), so training can diverge, and per-class
    normalisation (dividing by the sum of weights) is ill-defined when a class sums to ~0.
    """
    src = sample.source
    n = len(sample)
    if n == 0:
        raise DataError(f"{src}: the sample is empty (0 rows)")
    if sample.weights.shape[0] != n:
        raise DataError(
            f"{src}: length mismatch: {n} feature rows but {sample.weights.shape[0]} weights"
        )
    for j, name in enumerate(sample.names):
        n_nan, n_inf = _bad_rows(sample.features[:, j])
        if n_nan or n_inf:
            raise DataError(
                f"{src}: column {name!r} has {n_nan} NaN and {n_inf} infinite value(s) "
                f"out of {n} rows"
            )
    n_nan, n_inf = _bad_rows(sample.weights)
    if n_nan or n_inf:
        raise DataError(
            f"{src}: the weights have {n_nan} NaN and {n_inf} infinite value(s) out of {n} rows"
        )
    n_neg = int(np.sum(sample.weights < 0))
    if n_neg and not allow_negative_weights:
        raise DataError(
            f"{src}: {n_neg} of {n} rows have negative weights (sum of negative weights "
            f"{float(sample.weights[sample.weights < 0].sum()):.6g}); they are refused because the "
            "weighted BCE loss is then unbounded below; pass allow_negative_weights=True to accept them"
        )
    if not np.sum(sample.weights) > 0:
        raise DataError(
            f"{src}: the sum of weights is {float(np.sum(sample.weights)):.6g}; it must be > 0"
        )
    return sample


# =============================================================================== splits


@dataclass(frozen=True, eq=False)
class Split:
    """A seeded train / validation / holdout partition of one sample, and its record."""

    train: Sample
    validation: Sample
    holdout: Sample
    seed: int
    fractions: tuple[float, float, float]
    indices: tuple[np.ndarray, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record: seed, fractions, sizes, sums of weights and a digest of the indices."""
        import hashlib

        h = hashlib.sha256()
        for idx in self.indices:
            h.update(np.asarray(idx, dtype=np.int64).tobytes())
            h.update(b"|")
        parts = {"train": self.train, "validation": self.validation, "holdout": self.holdout}
        return {
            "seed": int(self.seed),
            "fractions": [float(f) for f in self.fractions],
            "sizes": {k: len(v) for k, v in parts.items()},
            "sum_weights": {k: float(v.weights.sum()) for k, v in parts.items()},
            "source": self.train.source,
            "indices_sha256": h.hexdigest(),
        }


def split_sample(
    sample: Sample,
    *,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    rescale_weights: bool = False,
) -> Split:
    """Random seeded split into train / validation / holdout.

    Sizes are floor(f * n) for validation and holdout, the rest goes to training. Weights are
    kept as they are (each part then sums to about its fraction of the yield); with
    rescale_weights=True each part is rescaled so that it sums to the full sample's total.
    """
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(not (0.0 <= f <= 1.0) for f in fr) or abs(sum(fr) - 1.0) > 1e-9:
        raise ValueError(f"fractions must be three numbers in [0, 1] summing to 1, got {fractions}")
    n = len(sample)
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(np.floor(fr[1] * n))
    n_hold = int(np.floor(fr[2] * n))
    n_train = n - n_val - n_hold
    idx = (
        np.sort(perm[:n_train]),
        np.sort(perm[n_train : n_train + n_val]),
        np.sort(perm[n_train + n_val :]),
    )
    for name, f, part in zip(("train", "validation", "holdout"), fr, idx):
        if f > 0 and len(part) == 0:
            raise DataError(
                f"{sample.source}: {n} rows are too few for a non-empty {name} part (fraction {f})"
            )
    total = sample.total_weight
    parts = []
    for part in idx:
        sub = sample.subset(part)
        if rescale_weights and len(sub):
            s = sub.total_weight
            if s == 0:
                raise DataError(
                    f"{sample.source}: a split part has zero total weight; cannot rescale"
                )
            sub = sub.with_weights(scale=total / s)
        parts.append(sub)
    return Split(parts[0], parts[1], parts[2], int(seed), fr, idx)


# =============================================================================== scaling


@dataclass(frozen=True, eq=False)
class Scaler:
    """Per-feature standardisation x -> (x - mean) / scale, fitted on (weighted) training data."""

    mean: np.ndarray
    scale: np.ndarray
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
        scale = np.asarray(self.scale, dtype=np.float64).reshape(-1)
        if mean.shape != scale.shape:
            raise ValueError(f"Scaler: mean has {mean.size} entries but scale {scale.size}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
            raise ValueError("Scaler: mean must be finite and scale finite and > 0")
        if self.names and len(self.names) != mean.size:
            raise ValueError(f"Scaler: {mean.size} features but {len(self.names)} names")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "names", tuple(self.names))

    @classmethod
    def fit(cls, data: Sample | np.ndarray, weights: np.ndarray | None = None) -> Scaler:
        """Weighted mean and standard deviation per column (a Sample's own weights by default;
        |w| is used so negative-weight samples still give a positive variance). Constant columns
        get scale 1 so they map to 0 instead of dividing by zero."""
        names: tuple[str, ...] = ()
        if isinstance(data, Sample):
            x = data.features.astype(np.float64)
            names = data.names
            if weights is None:
                weights = data.weights
        else:
            x = np.asarray(data, dtype=np.float64)
            if x.ndim == 1:
                x = x[:, None]
        if x.shape[0] == 0:
            raise DataError("Scaler.fit: no rows to fit on")
        w = (
            np.ones(x.shape[0])
            if weights is None
            else np.abs(np.asarray(weights, dtype=np.float64))
        )
        if w.shape[0] != x.shape[0] or not w.sum() > 0:
            raise DataError(
                f"Scaler.fit: {x.shape[0]} rows but {w.shape[0]} weights (sum {w.sum():.3g})"
            )
        mean = np.average(x, axis=0, weights=w)
        std = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=w))
        std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)
        return cls(mean, std, names)

    def apply(self, x: np.ndarray | Sample) -> np.ndarray:
        """Standardised float32 copy of x (n, d)."""
        arr = x.features if isinstance(x, Sample) else np.asarray(x)
        if arr.ndim != 2 or arr.shape[1] != self.mean.size:
            raise ValueError(
                f"Scaler.apply: expected (n, {self.mean.size}) features, got {arr.shape}"
            )
        return ((arr - self.mean) / self.scale).astype(np.float32)

    def invert(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z, dtype=np.float64) * self.scale + self.mean

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "names": list(self.names)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Scaler:
        missing = {"mean", "scale"} - set(d)
        if missing:
            raise ValueError(f"Scaler.from_dict: missing key(s) {sorted(missing)}")
        return cls(np.asarray(d["mean"]), np.asarray(d["scale"]), tuple(d.get("names") or ()))
