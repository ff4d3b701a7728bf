"""Sample specs and sample roles: what job specs and analysis files say about a sample.

Why a module of its own: `sbi_engine.readers` reads events; this module decides *which* events a
job gets. ``load_sample_spec(spec, role="train")`` is the part of a sample the networks are
trained on, ``role="eval"`` the part they never see (diagnostics, closure, normalisation samples,
Asimov data); file samples are split by a stable per-event hash, demo samples get a fresh draw.
``split_record(spec)`` describes the split for provenance.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .readers import _load_file
from .sample import DataError, Sample

__all__ = [
    "load_sample_spec",
    "sample_parts",
    "SampleParts",
    "split_record",
    "evaluation_spec",
    "row_hash",
    "hash_uniform",
    "DEFAULT_EVAL_FRACTION",
    "EVAL_SEED_OFFSET",
    "SAMPLE_ROLES",
]


# ------------------------------------------------------------------------------- specs

_DEMO_KEYS = {
    "process",
    "n",
    "seed",
    "alpha",
    "n_nuisances",
    "luminosity",
    "weighted",
    "mu",
    "poisson",
}
_SPLIT_KEYS = {"eval_fraction", "eval_sample", "split_by"}
_FILE_KEYS = {
    "path",
    "format",
    "tree",
    "features",
    "weight",
    "selection",
    "allow_negative_weights",
    "columns",
    "entry_stop",
} | _SPLIT_KEYS

SAMPLE_ROLES = (None, "train", "eval")
DEFAULT_EVAL_FRACTION = 0.3  # share of a file sample's events kept away from training
EVAL_SEED_OFFSET = (
    100_003  # demo samples: the evaluation part is a fresh draw at seed + this offset
)
SPLIT_SALT = 0x6E73_6269_2D65_7661  # fixed salt of the row hash ("nsbi-eva"); changing it changes every split

_GOLDEN = np.uint64(0x9E37_79B9_7F4A_7C15)
_MIX1 = np.uint64(0xBF58_476D_1CE4_E5B9)
_MIX2 = np.uint64(0x94D0_49BB_1331_11EB)


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (arithmetic wraps modulo 2**64)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def _bits64(col: np.ndarray) -> np.ndarray:
    """A column as uint64 bit patterns: integers as two's complement int64, everything else as
    float64 (+0.0 added first so that -0.0 and 0.0 hash alike)."""
    col = np.asarray(col)
    if np.issubdtype(col.dtype, np.integer) or col.dtype == bool:
        return np.ascontiguousarray(col.astype(np.int64)).view(np.uint64)
    return np.ascontiguousarray(col.astype(np.float64) + 0.0).view(np.uint64)


def row_hash(columns: Sequence[np.ndarray]) -> np.ndarray:
    """A stable 64-bit hash per row of equally long columns (vectorised splitmix64 mixing).

    It depends on the values only -- not on the row's position, the file, the platform or the
    NumPy version -- so the same event always lands in the same part of a split.
    """
    n = len(columns[0])
    h = np.full(n, SPLIT_SALT, dtype=np.uint64)
    for col in columns:
        with np.errstate(over="ignore"):
            h = _mix64((h ^ _bits64(col)) + _GOLDEN)
    return h


def hash_uniform(h: np.ndarray) -> np.ndarray:
    """The top 53 bits of a uint64 hash as a float64 in [0, 1)."""
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def evaluation_spec(spec: Mapping[str, Any], offset: int = EVAL_SEED_OFFSET) -> dict[str, Any]:
    """The evaluation counterpart of a demo spec: the same definition at seed + offset (new
    random draws, independent of the training events). Other specs are returned unchanged
    (copied): their evaluation part is chosen by ``load_sample_spec(spec, role="eval")``."""
    if not (isinstance(spec, Mapping) and "demo" in spec and isinstance(spec["demo"], Mapping)):
        return dict(spec)
    demo = dict(spec["demo"])
    demo["seed"] = int(demo.get("seed", 0)) + int(offset)
    return {"demo": demo}


def _load_demo(spec: Mapping[str, Any]) -> Sample:
    extra = set(spec) - {"demo"}
    if extra:
        raise DataError(f"sample spec: 'demo' cannot be combined with {sorted(extra)}")
    d = spec["demo"]
    if not isinstance(d, Mapping):
        raise DataError(f"sample spec: 'demo' must be a mapping, got {type(d).__name__}")
    unknown = set(d) - _DEMO_KEYS
    if unknown:
        raise DataError(
            f"sample spec: unknown demo key(s) {sorted(unknown)}; allowed: {sorted(_DEMO_KEYS)}"
        )
    from sbi_engine.demo import DemoProblem

    try:
        problem = DemoProblem(
            n_nuisances=int(d.get("n_nuisances", 3)), luminosity=float(d.get("luminosity", 1.0))
        )
        seed = int(d.get("seed", 0))
        alpha = {str(k): float(v) for k, v in (d.get("alpha") or {}).items()}
        if "mu" in d:
            if "process" in d:
                raise DataError(
                    "sample spec: give either demo 'process' (simulation) or 'mu' (data), not both"
                )
            n = d.get("n")
            return problem.sample_mixture(
                float(d["mu"]),
                None if n is None else int(n),
                seed,
                poisson=bool(d.get("poisson", False)),
                alpha=alpha or None,
            )
        if "process" not in d or "n" not in d:
            raise DataError(f"sample spec: demo needs 'process' and 'n' (or 'mu'); got {sorted(d)}")
        return problem.sample(
            str(d["process"]),
            int(d["n"]),
            seed,
            alpha=alpha or None,
            weighted=bool(d.get("weighted", True)),
        )
    except DataError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise DataError(f"sample spec: bad demo settings: {exc}") from None


def _spec_feature_names(spec: Mapping[str, Any]) -> tuple[str, ...]:
    feats = spec.get("features")
    if isinstance(feats, Mapping):
        return tuple(str(k) for k in feats)
    if isinstance(feats, (list, tuple)):
        return tuple(str(f) for f in feats)
    return ()


def _check_file_spec(spec: Mapping[str, Any], *, nested: bool = False) -> str:
    """Keys and split settings of a file spec; returns its label for messages."""
    label = f"sample spec for {spec['path']}"
    unknown = set(spec) - _FILE_KEYS
    if unknown:
        raise DataError(f"{label}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_FILE_KEYS)}")
    if "features" not in spec:
        raise DataError(f"{label}: 'features' is required")
    if nested:
        inner = sorted(set(spec) & _SPLIT_KEYS)
        if inner:
            raise DataError(
                f"{label}: an 'eval_sample' is used whole; it cannot have {inner} itself"
            )
        return label
    if "eval_fraction" in spec:
        f = spec["eval_fraction"]
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not (0.0 < float(f) < 1.0):
            raise DataError(
                f"{label}: 'eval_fraction' must be a number in (0, 1) (the share of events kept "
                f"for evaluation), got {f!r}"
            )
    if "split_by" in spec and not (isinstance(spec["split_by"], str) and spec["split_by"].strip()):
        raise DataError(
            f"{label}: 'split_by' must be an expression (e.g. an event-number branch), "
            f"got {spec['split_by']!r}"
        )
    if "eval_sample" in spec:
        ev = spec["eval_sample"]
        if not isinstance(ev, Mapping) or "path" not in ev:
            raise DataError(
                f"{label}: 'eval_sample' must be a complete file sample spec ({{path: ..., "
                f"features: ...}}), got {type(ev).__name__ if not isinstance(ev, Mapping) else sorted(ev)}"
            )
        both = sorted(set(spec) & {"eval_fraction", "split_by"})
        if both:
            raise DataError(
                f"{label}: 'eval_sample' gives the evaluation events; it cannot be combined with {both}"
            )
        _check_file_spec(ev, nested=True)
        main_names, ev_names = _spec_feature_names(spec), _spec_feature_names(ev)
        if main_names != ev_names:
            raise DataError(
                f"{label}: 'eval_sample' has features {list(ev_names)}, the sample has "
                f"{list(main_names)}; they must be the same, in the same order"
            )
    return label


def _load_file_spec(spec: Mapping[str, Any]) -> tuple[Sample, np.ndarray | None]:
    split_by = spec.get("split_by")
    return _load_file(
        spec["path"],
        format=spec.get("format"),
        tree=spec.get("tree"),
        features=spec["features"],
        weight=spec.get("weight"),
        selection=spec.get("selection"),
        allow_negative_weights=bool(spec.get("allow_negative_weights", False)),
        columns=spec.get("columns"),
        entry_stop=spec.get("entry_stop"),
        split_by=split_by if isinstance(split_by, str) else None,
    )


@dataclass(frozen=True, eq=False)
class SampleParts:
    """The training and evaluation parts of one sample spec, and their provenance record."""

    train: Sample
    eval: Sample
    record: dict[str, Any]


def _rescaled(part: Sample, total: float, what: str, label: str) -> tuple[Sample, float]:
    s = part.total_weight
    if not s > 0:
        raise DataError(
            f"{label}: the {what} part has a sum of weights {s:.6g}; it must be > 0 to be "
            "rescaled to the sample's yield (choose another eval_fraction or split_by)"
        )
    scale = total / s
    return part.with_weights(scale=scale), scale


def sample_parts(spec: Mapping[str, Any]) -> SampleParts:
    """Both parts of a sample at once (each file is read once); see `load_sample_spec`."""
    if not isinstance(spec, Mapping):
        raise DataError(f"sample spec must be a mapping, got {type(spec).__name__}")
    if "demo" in spec:
        ev_spec = evaluation_spec(spec)
        train, ev = _load_demo(spec), _load_demo(ev_spec)
        record: dict[str, Any] = {
            "method": "demo_seed",
            "eval_fraction": None,
            "seed_offset": EVAL_SEED_OFFSET,
            "train_seed": int(spec["demo"].get("seed", 0)),
            "eval_seed": int(ev_spec["demo"]["seed"]),
            "sizes": {"train": len(train), "eval": len(ev)},
            "sum_weights": {"train": train.total_weight, "eval": ev.total_weight},
            "scale": {"train": 1.0, "eval": 1.0},
            "eval_indices_sha256": None,
        }
        return SampleParts(train, ev, record)
    if "path" not in spec:
        raise DataError(f"sample spec needs a 'demo' or a 'path' key; got {sorted(spec)}")
    label = _check_file_spec(spec)
    if "eval_sample" in spec:
        train, _ = _load_file_spec(spec)
        ev, _ = _load_file_spec(spec["eval_sample"])
        if ev.names != train.names:
            raise DataError(
                f"{label}: 'eval_sample' gives features {list(ev.names)}, the sample {list(train.names)}"
            )
        record = {
            "method": "eval_sample",
            "eval_fraction": None,
            "eval_source": ev.source,
            "sizes": {"train": len(train), "eval": len(ev)},
            "sum_weights": {"train": train.total_weight, "eval": ev.total_weight},
            "scale": {"train": 1.0, "eval": 1.0},
            "eval_indices_sha256": None,
        }
        return SampleParts(train, ev, record)
    fraction = float(spec.get("eval_fraction", DEFAULT_EVAL_FRACTION))
    whole, key = _load_file_spec(spec)
    row_h = row_hash([*whole.features.T, whole.weights])
    if key is not None:
        u = hash_uniform(row_hash([key]))
        method = "split_by"
    else:
        u = hash_uniform(row_h)
        method = "row_hash"
    is_eval = u < fraction
    n_eval = int(is_eval.sum())
    n = len(whole)
    if n_eval == 0 or n_eval == n:
        empty = "evaluation" if n_eval == 0 else "training"
        raise DataError(
            f"{label}: the {empty} part would be empty ({n} rows, eval_fraction {fraction:g}); "
            "use more events or another eval_fraction"
        )
    eval_idx = np.flatnonzero(is_eval)
    raw_ev, raw_tr = whole.subset(is_eval), whole.subset(~is_eval)
    total = whole.total_weight
    ev, s_ev = _rescaled(raw_ev, total, "evaluation", label)
    train, s_tr = _rescaled(raw_tr, total, "training", label)
    ev = Sample(ev.features, ev.weights, ev.names, f"{whole.source} (eval part)")
    train = Sample(train.features, train.weights, train.names, f"{whole.source} (train part)")
    record = {
        "method": method,
        "eval_fraction": fraction,
        "split_by": spec.get("split_by"),
        "sizes": {"train": len(train), "eval": n_eval},
        "sum_weights": {
            "train": raw_tr.total_weight,
            "eval": raw_ev.total_weight,
        },  # before rescaling
        "scale": {"train": s_tr, "eval": s_ev},
        "eval_indices_sha256": hashlib.sha256(eval_idx.astype("<i8").tobytes()).hexdigest(),
        "eval_rows_sha256": hashlib.sha256(
            np.sort(row_h[is_eval]).astype("<u8").tobytes()
        ).hexdigest(),
    }
    return SampleParts(train, ev, record)


def _event_hashes(part: Sample) -> np.ndarray:
    """Sorted content hashes of a part's events (features only: the weight may differ)."""
    return np.sort(row_hash(list(part.features.T)))


def shared_events_split_apart(numerator: SampleParts, denominator: SampleParts) -> str | None:
    """A message when two samples hold the same events (a hypothesis simulated by reweighting)
    but split them differently, else None.

    The row hash includes the weight, so two weightings of the same events split differently
    unless both use ``split_by`` on an event number: events the networks train on in one
    sample would then be evaluation events of the other, and the training could not pair them.
    """
    n = len(numerator.train) + len(numerator.eval)
    if n != len(denominator.train) + len(denominator.eval):
        return None
    num_train, den_train = _event_hashes(numerator.train), _event_hashes(denominator.train)
    if np.array_equal(num_train, den_train):
        return None  # the same training events (or independent samples alike in size)
    whole_num = np.sort(np.concatenate([num_train, _event_hashes(numerator.eval)]))
    whole_den = np.sort(np.concatenate([den_train, _event_hashes(denominator.eval)]))
    if not np.array_equal(whole_num, whole_den):
        return None
    return (
        f"{numerator.train.source} and {denominator.train.source} hold the same {n} events "
        "with other weights, but split them into training and evaluation events differently "
        f"(numerator: {numerator.record.get('method')}, denominator: "
        f"{denominator.record.get('method')}): give both samples the same `split_by: <event "
        "number>` so that an event is a training event of both or of neither"
    )


def split_record(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Provenance of the train / eval split of a sample spec (JSON-able).

    method ("row_hash", "split_by", "eval_sample" or "demo_seed"), eval_fraction, sizes and
    sums of weights (before rescaling) of both parts, the rescaling factors, the sha256 of the
    evaluation rows' indices (int64 little endian, positions among the selected rows) and, for
    hashed splits, ``eval_rows_sha256``: the sha256 of the evaluation rows' sorted content hashes,
    which does not change when the file's rows are reordered.
    """
    return sample_parts(spec).record


def load_sample_spec(spec: Mapping[str, Any], role: str | None = None) -> Sample:
    """Build a Sample from a JSON-able spec (what job specs and campaign configs carry).

    {"demo": {"process": "S", "n": 20000, "seed": 1, "alpha": {...}, "n_nuisances": 3,
              "luminosity": 1.0, "weighted": true}}
    {"demo": {"mu": 1.0, "n": 5000, "seed": 2, "poisson": false}}   observed-like mixture data
    {"path": "...", "format": "root", "tree": "events", "features": {...}, "weight": "...",
     "selection": "...", "eval_fraction": 0.3, "split_by": "event", "eval_sample": {...}}
                                                                    see `load_sample`

    role: None -- the whole sample (what the spec describes); "train" -- the part the networks
    are trained on; "eval" -- the part they never see (diagnostics, closure, normalisation
    samples, Asimov data).

    File specs are split per event by a stable 64-bit hash of the row's content (its feature
    values and weight) or, with ``split_by``, of an event-number expression: u = hash / 2**64 <
    ``eval_fraction`` (default DEFAULT_EVAL_FRACTION) is evaluation, the rest training. The
    split does not depend on the order of the rows or on anything but the spec and the data.
    With ``eval_sample`` (a complete file spec) the evaluation part is that sample and the
    training part is the whole main sample. Each hashed part's weights are multiplied by
    (sum of all weights) / (sum of the part's weights), i.e. by 1 / the part's share: a part
    then stands for the full sample's expected yield, so a yield read off any part (an Asimov
    dataset, a normalisation sample, a fit's nu) is the sample's yield and not 30 % or 70 % of
    it. Demo specs: "train" is the spec itself, "eval" a fresh draw (`evaluation_spec`).
    """
    if role not in SAMPLE_ROLES:
        raise DataError(f"load_sample_spec: role must be one of {list(SAMPLE_ROLES)}, got {role!r}")
    if not isinstance(spec, Mapping):
        raise DataError(f"sample spec must be a mapping, got {type(spec).__name__}")
    if "demo" in spec:
        return _load_demo(evaluation_spec(spec) if role == "eval" else spec)
    if "path" in spec:
        _check_file_spec(spec)
        if role is None or (role == "train" and "eval_sample" in spec):
            return _load_file_spec(spec)[0]
        if role == "eval" and "eval_sample" in spec:
            return _load_file_spec(spec["eval_sample"])[0]
        parts = sample_parts(spec)
        return parts.train if role == "train" else parts.eval
    raise DataError(f"sample spec needs a 'demo' or a 'path' key; got {sorted(spec)}")
