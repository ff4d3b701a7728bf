"""Turn two ``Sample``s into the arrays training needs.

Stratified seeded train/validation split, feature standardisation fitted on the training
events, and class-balanced weights: each class's weights are rescaled to the same total
(half the events of the split), so the Bayes-optimal classifier logit is log p_num/p_den
whatever the samples' absolute yields are.

**Paired samples.** When both samples are the same events with different weights (a
hypothesis simulated by reweighting, as MadGraph's reweight module or a matrix-element
weight column gives it), each event becomes one row with the soft label
y = w_num / (w_num + w_den) and the weight w_num + w_den: the loss is then exactly
w_num softplus(-f) + w_den softplus(f) per event, the same objective as two rows, but the
split, the batches and the bootstrap see each event once. Two independent rows would give
the two copies of an event different batches, validation roles and bootstrap counts, noise
that on a ratio within a few per cent of 1 is as large as the ratio's own variation
(docs/validation.md, "Session 14"). Samples with negative weights keep two rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np


class RatioDataError(ValueError):
    """The samples given to training cannot be used (names differ, empty, bad weights)."""


@dataclass(frozen=True)
class Standardizer:
    """Network input preprocessing, fitted on training features.

    Features named in ``periodic`` are angles in radians and enter the network as
    (cos x, sin x), so the network never sees the artificial edge at +-pi; then every
    encoded column is standardised, z -> (z - mean) / scale. ``to_dict`` is plain JSON.
    """

    mean: np.ndarray
    scale: np.ndarray
    periodic: tuple[int, ...] = ()

    @staticmethod
    def encode(x: np.ndarray, periodic: tuple[int, ...]) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if not periodic:
            return x
        cols = []
        for j in range(x.shape[1]):
            if j in periodic:
                cols += [np.cos(x[:, j]), np.sin(x[:, j])]
            else:
                cols.append(x[:, j])
        return np.stack(cols, axis=1).astype(np.float32)

    @classmethod
    def fit(cls, x: np.ndarray, periodic: tuple[int, ...] = ()) -> Standardizer:
        z = cls.encode(x, periodic)
        mean = z.mean(axis=0, dtype=np.float64)
        scale = z.std(axis=0, dtype=np.float64)
        scale = np.where(scale > 1e-12, scale, 1.0)
        return cls(
            mean.astype(np.float32), scale.astype(np.float32), tuple(int(j) for j in periodic)
        )

    @property
    def n_inputs(self) -> int:
        """Width of the network input (after the periodic encoding)."""
        return int(len(self.mean))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((self.encode(x, self.periodic) - self.mean) / self.scale).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": [float(v) for v in self.mean],
            "scale": [float(v) for v in self.scale],
            "periodic": list(self.periodic),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Standardizer:
        return cls(
            np.asarray(data["mean"], np.float32),
            np.asarray(data["scale"], np.float32),
            tuple(int(j) for j in data.get("periodic", ())),
        )


@dataclass(frozen=True)
class PreparedData:
    """Standardised float32 arrays; labels 1 = numerator, 0 = denominator (soft labels in
    [0, 1] for paired samples)."""

    x_train: np.ndarray
    y_train: np.ndarray
    w_train: np.ndarray  # class-balanced, mean 1 over the split
    x_val: np.ndarray
    y_val: np.ndarray
    w_val: np.ndarray
    scaler: Standardizer
    names: tuple[str, ...]
    split: dict[str, Any]
    fingerprint: str


def _balanced(w: np.ndarray, y: np.ndarray, where: str) -> np.ndarray:
    out = np.empty_like(w, dtype=np.float64)
    n = len(w)
    for label, name in ((1, "numerator"), (0, "denominator")):
        mask = y == label
        total = float(w[mask].sum())
        if not total > 0:
            raise RatioDataError(
                f"{where}: {name} weights sum to {total:g} over {int(mask.sum())} events; "
                "need a positive total to balance the classes"
            )
        out[mask] = w[mask] * (0.5 * n / total)
    return out.astype(np.float32)


def _paired_rows(w_num: np.ndarray, w_den: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(soft labels, row weights) of paired events, each class balanced to half the rows."""
    y = np.concatenate([np.ones(len(w_num)), np.zeros(len(w_den))])
    balanced = _balanced(np.concatenate([w_num, w_den]), y, where).astype(np.float64)
    num, den = balanced[: len(w_num)], balanced[len(w_num) :]
    total = num + den
    return (num / total).astype(np.float32), (0.5 * total).astype(np.float32)


def same_events(numerator: Any, denominator: Any) -> bool:
    """Both samples hold the same events in the same order (`aligned_to` puts them in it), with
    weights that pair safely (none negative, no event weighted zero in both)."""
    a, b = numerator.features, denominator.features
    if a.shape != b.shape or not np.array_equal(a, b):
        return False
    wn, wd = np.asarray(numerator.weights), np.asarray(denominator.weights)
    return bool(np.all(wn >= 0) and np.all(wd >= 0) and np.all(wn + wd > 0))


def aligned_to(numerator: Any, denominator: Any) -> Any:
    """``denominator`` reordered to the numerator's event order when both hold the same events
    in another order (two files of one reweighted simulation written in different orders);
    otherwise ``denominator`` itself. Rows with identical features may swap partners, which
    leaves the paired loss unchanged (it depends on the features only through f(x))."""
    a, b = np.asarray(numerator.features), np.asarray(denominator.features)
    if a.shape != b.shape or a.ndim != 2 or np.array_equal(a, b):
        return denominator
    if not np.array_equal(np.sort(a[:, 0]), np.sort(b[:, 0])):
        return denominator  # the cheap test first: independent simulations end here
    order_a, order_b = np.lexsort(a.T[::-1]), np.lexsort(b.T[::-1])
    if not np.array_equal(a[order_a], b[order_b]):
        return denominator
    perm = np.empty_like(order_a)
    perm[order_a] = order_b  # row i of the numerator pairs with row perm[i] of the denominator
    return denominator.subset(perm)


def _split_indices(
    n: int, val_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(n)
    n_val = int(round(n * val_fraction))
    n_val = min(max(n_val, 1), n - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def fingerprint(*arrays: np.ndarray) -> str:
    """Short content hash, so a resume can refuse a checkpoint made on other data."""
    h = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def prepare(
    numerator: Any,
    denominator: Any,
    val_fraction: float,
    seed: int,
    periodic_features: tuple[str, ...] = (),
) -> PreparedData:
    """Split, standardise and balance. Raises ``RatioDataError`` naming the offending sample."""
    for s, role in ((numerator, "numerator"), (denominator, "denominator")):
        if len(s.features) < 2:
            raise RatioDataError(
                f"{role} sample {s.source}: needs at least 2 events, got {len(s.features)}"
            )
    if tuple(numerator.names) != tuple(denominator.names):
        raise RatioDataError(
            f"feature names differ: numerator {numerator.source} has {list(numerator.names)}, "
            f"denominator {denominator.source} has {list(denominator.names)}"
        )
    for s, role in ((numerator, "numerator"), (denominator, "denominator")):
        if not np.all(np.isfinite(s.features)):
            bad = int((~np.isfinite(s.features)).any(axis=1).sum())
            raise RatioDataError(f"{role} sample {s.source}: {bad} events have non-finite features")
        if not np.all(np.isfinite(s.weights)):
            raise RatioDataError(f"{role} sample {s.source}: non-finite weights")

    missing = [name for name in periodic_features if name not in numerator.names]
    if missing:
        raise RatioDataError(
            f"periodic_features {missing} are not features of {numerator.source} "
            f"(features: {list(numerator.names)})"
        )
    periodic = tuple(numerator.names.index(name) for name in periodic_features)
    denominator = aligned_to(numerator, denominator)
    paired = same_events(numerator, denominator)
    # a paired layout is other training data: a checkpoint of the two-row layout must not resume
    layout_tag = [np.array([1], np.int8)] if paired else []
    fp = fingerprint(
        numerator.features,
        numerator.weights,
        denominator.features,
        denominator.weights,
        *layout_tag,
    )
    rng = np.random.default_rng([seed, 0x5EED])
    tr_n, va_n = _split_indices(len(numerator.features), val_fraction, rng)
    tr_d, va_d = (
        (tr_n, va_n) if paired else _split_indices(len(denominator.features), val_fraction, rng)
    )

    def stack(idx_n: np.ndarray, idx_d: np.ndarray, where: str) -> tuple[np.ndarray, ...]:
        if paired:
            y, w = _paired_rows(numerator.weights[idx_n], denominator.weights[idx_d], where)
            return numerator.features[idx_n].astype(np.float32), y, w
        x = np.concatenate([numerator.features[idx_n], denominator.features[idx_d]]).astype(
            np.float32
        )
        y = np.concatenate([np.ones(len(idx_n), np.float32), np.zeros(len(idx_d), np.float32)])
        w = np.concatenate([numerator.weights[idx_n], denominator.weights[idx_d]])
        return x, y, _balanced(w.astype(np.float64), y, where)

    x_tr, y_tr, w_tr = stack(tr_n, tr_d, "training split")
    x_va, y_va, w_va = stack(va_n, va_d, "validation split")
    scaler = Standardizer.fit(x_tr, periodic)
    split = {
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "paired": paired,
        "numerator": {
            "source": str(numerator.source),
            "n_train": int(len(tr_n)),
            "n_val": int(len(va_n)),
        },
        "denominator": {
            "source": str(denominator.source),
            "n_train": int(len(tr_d)),
            "n_val": int(len(va_d)),
        },
        "data_fingerprint": fp,
    }
    return PreparedData(
        x_train=scaler.transform(x_tr),
        y_train=y_tr,
        w_train=w_tr,
        x_val=scaler.transform(x_va),
        y_val=y_va,
        w_val=w_va,
        scaler=scaler,
        names=tuple(numerator.names),
        split=split,
        fingerprint=fp,
    )
