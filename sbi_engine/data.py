"""Event samples: the `Sample` container, validation, seeded splits, feature scaling, loaders.

Every estimator and the fit consume a `Sample`: float32 features (n, d), float64 weights (n,)
whose sum is the expected yield for simulated samples, feature names and a human-readable
source used in error messages. `load_sample` reads Parquet, ROOT (TTree
and RNTuple), HDF5 and NumPy files, with feature expressions over (jagged) columns. All bad
input is reported as `DataError` naming the file, the column and how many rows are affected,
so a user never meets a traceback from deep inside awkward or JAX.

Which events a job gets (sample specs, the train / evaluation roles) is `sbi_engine.sample_specs`.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DataError",
    "Sample",
    "Split",
    "Scaler",
    "validate_sample",
    "split_sample",
    "load_sample",
]


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

    def with_weights(self, weights: np.ndarray | None = None, *, scale: float | None = None) -> Sample:
        """A copy with new weights, or with the weights multiplied by `scale`."""
        if (weights is None) == (scale is None):
            raise ValueError("with_weights: give exactly one of weights= or scale=")
        new = self.weights * float(scale) if scale is not None else weights
        return Sample(self.features, new, self.names, self.source)

    def column(self, name: str) -> np.ndarray:
        """One feature column by name."""
        try:
            return self.features[:, self.names.index(name)]
        except ValueError:
            raise DataError(f"{self.source}: no feature {name!r}; features are {list(self.names)}") from None


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
        raise DataError(f"{src}: length mismatch: {n} feature rows but {sample.weights.shape[0]} weights")
    for j, name in enumerate(sample.names):
        n_nan, n_inf = _bad_rows(sample.features[:, j])
        if n_nan or n_inf:
            raise DataError(
                f"{src}: column {name!r} has {n_nan} NaN and {n_inf} infinite value(s) "
                f"out of {n} rows"
            )
    n_nan, n_inf = _bad_rows(sample.weights)
    if n_nan or n_inf:
        raise DataError(f"{src}: the weights have {n_nan} NaN and {n_inf} infinite value(s) out of {n} rows")
    n_neg = int(np.sum(sample.weights < 0))
    if n_neg and not allow_negative_weights:
        raise DataError(
            f"{src}: {n_neg} of {n} rows have negative weights (sum of negative weights "
            f"{float(sample.weights[sample.weights < 0].sum()):.6g}); they are refused because the "
            "weighted BCE loss is then unbounded below; pass allow_negative_weights=True to accept them"
        )
    if not np.sum(sample.weights) > 0:
        raise DataError(f"{src}: the sum of weights is {float(np.sum(sample.weights)):.6g}; it must be > 0")
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
    indices: tuple[np.ndarray, np.ndarray, np.ndarray] = field(default=(), repr=False)

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
    idx = (np.sort(perm[:n_train]), np.sort(perm[n_train:n_train + n_val]), np.sort(perm[n_train + n_val:]))
    for name, f, part in zip(("train", "validation", "holdout"), fr, idx):
        if f > 0 and len(part) == 0:
            raise DataError(f"{sample.source}: {n} rows are too few for a non-empty {name} part (fraction {f})")
    total = sample.total_weight
    parts = []
    for part in idx:
        sub = sample.subset(part)
        if rescale_weights and len(sub):
            s = sub.total_weight
            if s == 0:
                raise DataError(f"{sample.source}: a split part has zero total weight; cannot rescale")
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
        w = np.ones(x.shape[0]) if weights is None else np.abs(np.asarray(weights, dtype=np.float64))
        if w.shape[0] != x.shape[0] or not w.sum() > 0:
            raise DataError(f"Scaler.fit: {x.shape[0]} rows but {w.shape[0]} weights (sum {w.sum():.3g})")
        mean = np.average(x, axis=0, weights=w)
        std = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=w))
        std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)
        return cls(mean, std, names)

    def apply(self, x: np.ndarray | Sample) -> np.ndarray:
        """Standardised float32 copy of x (n, d)."""
        arr = x.features if isinstance(x, Sample) else np.asarray(x)
        if arr.ndim != 2 or arr.shape[1] != self.mean.size:
            raise ValueError(f"Scaler.apply: expected (n, {self.mean.size}) features, got {arr.shape}")
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


# =============================================================================== file loading
#
# Every format is turned into a `_Table`: named columns (numpy arrays, or awkward arrays for
# jagged ROOT / Parquet branches) read lazily, only those an expression needs. Feature, weight
# and selection expressions are then evaluated the same way for all formats.

_FORMATS = {
    "parquet": "parquet", "pq": "parquet",
    "root": "root",
    "hdf5": "hdf5", "h5": "hdf5", "hdf": "hdf5",
    "numpy": "numpy", "npz": "numpy", "npy": "numpy",
}
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".root": "root", ".h5": "hdf5", ".hdf5": "hdf5",
             ".hdf": "hdf5", ".npz": "numpy", ".npy": "numpy"}


class _Table:
    """Named columns of one file; `get` reads (and caches) a column on demand."""

    def __init__(self, source: str, names: Sequence[str], reader, n_rows: int | None = None, kind: str = "column"):
        self.source = source
        self.names = list(names)
        self._reader = reader
        self._cache: dict[str, Any] = {}
        self.n_rows = n_rows
        self.kind = kind  # "branch" for ROOT, "column" otherwise

    def get_many(self, names: Sequence[str]) -> dict[str, Any]:
        todo = [n for n in names if n not in self._cache]
        if todo:
            self._cache.update(self._reader(todo))
        return {n: self._cache[n] for n in names}

    @property
    def _plural(self) -> str:
        return "branches" if self.kind == "branch" else "columns"

    def missing(self, name: str, context: str) -> DataError:
        import difflib

        close = difflib.get_close_matches(name, self.names, n=3, cutoff=0.6)
        hint = f"; did you mean {close}?" if close else ""
        listing = self.names if len(self.names) <= 60 else self.names[:60] + [f"... ({len(self.names) - 60} more)"]
        return DataError(f"{self.source}: no {self.kind} {name!r} (used in {context}){hint} "
                         f"{self._plural} available: {listing}")


def _resolve_format(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        try:
            return _FORMATS[fmt.lower()]
        except KeyError:
            raise DataError(f"{path}: unknown format {fmt!r}; use one of {sorted(set(_FORMATS.values()))}") from None
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise DataError(f"{path}: cannot tell the format from the suffix {suffix!r}; pass format= "
                        f"(one of {sorted(set(_FORMATS.values()))})")
    return _SUFFIXES[suffix]


_ROOT_TREE_CLASSES = ("TTree", "TNtuple", "TNtupleD", "ROOT::RNTuple", "ROOT::Experimental::RNTuple")


def _open_root(path: Path, tree: str | None, entry_stop: int | None) -> _Table:
    import uproot

    try:
        f = uproot.open(path)
    except Exception as exc:  # uproot raises several types for non-ROOT files
        raise DataError(f"{path}: cannot be read as a ROOT file ({type(exc).__name__}: {exc})") from None
    trees = sorted({k.split(";")[0] for k, cls in f.classnames().items() if cls in _ROOT_TREE_CLASSES})
    if tree is None:
        if len(trees) != 1:
            raise DataError(f"{path}: pass tree=; the file has {len(trees)} trees (TTree/RNTuple): {trees}")
        tree = trees[0]
    if tree not in trees:
        raise DataError(f"{path}: no tree {tree!r}; trees in the file: {trees}")
    t = f[tree]
    stop = t.num_entries if entry_stop is None else min(int(entry_stop), t.num_entries)

    def read(names: Sequence[str]) -> dict[str, Any]:
        arrays = t.arrays(list(names), library="ak", entry_stop=stop)
        return {n: arrays[n] for n in names}

    return _Table(f"{path}:{tree}", list(t.keys()), read, stop, kind="branch")


def _open_parquet(path: Path, entry_stop: int | None) -> _Table:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:
        raise DataError(f"{path}: cannot be read as Parquet ({type(exc).__name__}: {exc})") from None
    names = pf.schema_arrow.names
    n = pf.metadata.num_rows if entry_stop is None else min(int(entry_stop), pf.metadata.num_rows)

    def read(cols: Sequence[str]) -> dict[str, Any]:
        import awkward as ak
        import pyarrow as pa

        table = pf.read(columns=list(cols)).slice(0, n)
        out = {}
        for c in cols:
            col = table.column(c)
            if pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or col.null_count:
                out[c] = ak.from_arrow(col)
            else:
                out[c] = col.to_numpy()
        return out

    return _Table(str(path), names, read, n)


def _matrix_columns(mat: np.ndarray, names: Sequence[str] | None, where: str) -> dict[str, np.ndarray]:
    names = [str(n) for n in names] if names is not None else [f"x{j}" for j in range(mat.shape[1])]
    if len(names) != mat.shape[1]:
        raise DataError(f"{where}: a 2-D array with {mat.shape[1]} columns but {len(names)} column names {names}")
    return {n: mat[:, j] for j, n in enumerate(names)}


def _check_lengths(cols: Mapping[str, np.ndarray], where: str) -> int | None:
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(f"{where}: length mismatch between columns: {lengths}")
    return next(iter(lengths.values()), None)


def _decode_names(arr: Any) -> list[str]:
    return [a.decode() if isinstance(a, bytes) else str(a) for a in np.asarray(arr).reshape(-1)]


def _open_numpy(path: Path, columns: Sequence[str] | None, entry_stop: int | None) -> _Table:
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{path}: cannot be read by numpy.load ({type(exc).__name__}: {exc})") from None
    cols: dict[str, np.ndarray] = {}
    if isinstance(loaded, np.ndarray):  # .npy: one 2-D array (or 1-D: a single column)
        mat = loaded if loaded.ndim == 2 else loaded.reshape(-1, 1)
        cols = _matrix_columns(mat, columns, str(path))
    else:
        with loaded:
            arrays = {k: loaded[k] for k in loaded.files}
        names = _decode_names(arrays.pop("names")) if "names" in arrays else columns
        for key, arr in arrays.items():
            if arr.ndim == 2:
                cols.update(_matrix_columns(arr, names, f"{path}[{key}]"))
            else:
                cols[key] = arr.reshape(-1)
    n = _check_lengths(cols, str(path))
    if entry_stop is not None:
        cols = {k: v[:entry_stop] for k, v in cols.items()}
        n = None if n is None else min(n, int(entry_stop))
    return _Table(str(path), list(cols), lambda names: {k: cols[k] for k in names}, n)


def _open_hdf5(path: Path, group: str | None, columns: Sequence[str] | None, entry_stop: int | None) -> _Table:
    """Columns are 1-D datasets of a group, or the columns of a 2-D dataset whose names come
    from its "names"/"columns" attribute, a sibling "names" dataset, or `columns`. Only the
    datasets an expression needs are read."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except Exception as exc:
        raise DataError(f"{path}: cannot be read as HDF5 ({type(exc).__name__}: {exc})") from None
    layout: dict[str, tuple[str, int | None]] = {}  # column -> (dataset path, column index or None)
    lengths: dict[str, int] = {}
    with f:
        node = f if group is None else f.get(group)
        if node is None:
            raise DataError(f"{path}: no group or dataset {group!r}; top-level keys: {sorted(f.keys())}")
        where = f"{path}:{node.name}"
        if isinstance(node, h5py.Dataset):
            datasets, sidecar = {node.name.rsplit("/", 1)[-1]: node}, None
        else:
            datasets = {k: v for k, v in node.items() if isinstance(v, h5py.Dataset)}
            sidecar = _decode_names(datasets.pop("names")[()]) if "names" in datasets else None
        for key, ds in datasets.items():
            if ds.ndim == 2:
                attr = ds.attrs.get("names", ds.attrs.get("columns"))
                names = _decode_names(attr) if attr is not None else (sidecar or columns)
                names = list(_matrix_columns(np.empty((0, ds.shape[1])), names, f"{where}/{key}"))
                for j, name in enumerate(names):
                    layout[name] = (ds.name, j)
                    lengths[name] = ds.shape[0]
            elif ds.ndim == 1:
                layout[key] = (ds.name, None)
                lengths[key] = ds.shape[0]
    if not layout:
        raise DataError(f"{where}: no 1-D column datasets or 2-D dataset found")
    if len(set(lengths.values())) > 1:
        raise DataError(f"{where}: length mismatch between columns: {lengths}")
    n = next(iter(lengths.values()))
    n = n if entry_stop is None else min(n, int(entry_stop))

    def read(names: Sequence[str]) -> dict[str, np.ndarray]:
        with h5py.File(path, "r") as fh:
            out = {}
            for name in names:
                ds_path, j = layout[name]
                out[name] = fh[ds_path][:n] if j is None else fh[ds_path][:n, j]
            return out

    return _Table(where, list(layout), read, n)


# ------------------------------------------------------------------------------- expressions

# Attributes an expression may use: pure array maths only (no file I/O such as np.save).
_MODULE_ATTRS = {
    "np": frozenset({
        "sqrt", "exp", "log", "log10", "log1p", "expm1", "abs", "absolute", "sign", "sin", "cos", "tan",
        "arcsin", "arccos", "arctan", "arctan2", "sinh", "cosh", "tanh", "arcsinh", "arccosh", "arctanh",
        "hypot", "where", "minimum", "maximum", "clip", "floor", "ceil", "round", "power", "square",
        "isfinite", "isnan", "pi", "e", "float32", "float64", "int64", "logical_and", "logical_or",
        "logical_not",
    }),
    "ak": frozenset({
        "num", "sum", "max", "min", "mean", "prod", "count", "count_nonzero", "any", "all", "firsts",
        "argmax", "argmin", "fill_none", "is_none", "where", "flatten", "sort", "argsort", "singletons",
    }),
}
_ALLOWED_NODES = (
    "Expression", "BinOp", "UnaryOp", "BoolOp", "Compare", "Call", "Name", "Load", "Constant",
    "Subscript", "Slice", "Tuple", "Attribute", "IfExp",
    "Add", "Sub", "Mult", "Div", "FloorDiv", "Mod", "Pow", "USub", "UAdd", "Not", "Invert",
    "BitAnd", "BitOr", "BitXor", "And", "Or", "Eq", "NotEq", "Lt", "LtE", "Gt", "GtE", "keyword",
)


def _helpers() -> dict[str, Any]:
    import awkward as ak

    def pt(px, py):
        return np.sqrt(px**2 + py**2)

    def mass(e, px, py, pz):
        """Invariant mass; tiny negative m^2 from rounding is clipped to 0."""
        m2 = e**2 - px**2 - py**2 - pz**2
        return np.sqrt(np.maximum(m2, 0.0))

    def eta(px, py, pz):
        return np.arcsinh(pz / np.sqrt(px**2 + py**2))

    return {
        "np": np, "ak": ak,
        "sqrt": np.sqrt, "exp": np.exp, "log": np.log, "abs": np.abs, "sin": np.sin, "cos": np.cos,
        "tan": np.tan, "arctan2": np.arctan2, "arcsinh": np.arcsinh, "arccos": np.arccos,
        "hypot": np.hypot, "where": np.where, "minimum": np.minimum, "maximum": np.maximum,
        "pi": np.pi, "pt": pt, "mass": mass, "eta": eta,
        "num": lambda a: ak.num(a, axis=1),
        "sum": lambda a: ak.sum(a, axis=-1),
        "max": lambda a: ak.max(a, axis=-1),
        "min": lambda a: ak.min(a, axis=-1),
        "firsts": ak.firsts,
    }


class _Expr:
    """A parsed, restricted expression over columns (no builtins, no private attributes)."""

    def __init__(self, text: str, label: str, table: _Table):
        self.text, self.label = text, label
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError as exc:
            raise DataError(f"{table.source}: {label} {text!r} is not a valid expression ({exc.msg})") from None
        names: set[str] = set()
        for node in ast.walk(tree):
            kind = type(node).__name__
            if kind not in _ALLOWED_NODES:
                raise DataError(f"{table.source}: {label} {text!r} uses a disallowed construct ({kind})")
            if isinstance(node, ast.Attribute):
                base = node.value.id if isinstance(node.value, ast.Name) else None
                if node.attr not in _MODULE_ATTRS.get(base, ()):
                    raise DataError(
                        f"{table.source}: {label} {text!r} uses the attribute {ast.unparse(node)!r}; only "
                        "array maths from np and ak is allowed (e.g. np.sqrt, np.arctan2, ak.num, ak.sum; "
                        "the list is sbi_engine.data._MODULE_ATTRS)"
                    )
            if isinstance(node, ast.Name):
                names.add(node.id)
        helpers = _helpers()
        self.columns = sorted(n for n in names if n not in helpers or n in table.names)
        for n in self.columns:
            if n not in table.names:
                raise table.missing(n, f"{label} = {text!r}")
        guarded = ast.fix_missing_locations(_GuardSubscripts().visit(tree))
        self.code = compile(guarded, f"<{label}>", "eval")


class _GuardSubscripts(ast.NodeTransformer):
    """Rewrite a[idx] into _getitem(a, idx, "a[idx]", "a") so jagged indices are checked and an
    out-of-range index becomes a DataError that counts the short rows."""

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        self.generic_visit(node)
        call = ast.Call(
            func=ast.Name("_getitem", ast.Load()),
            args=[node.value, self._index(node.slice), ast.Constant(ast.unparse(node)),
                  ast.Constant(ast.unparse(node.value))],
            keywords=[],
        )
        return ast.copy_location(call, node)

    def _index(self, s: ast.AST) -> ast.AST:
        if isinstance(s, ast.Slice):
            parts = [p if p is not None else ast.Constant(None) for p in (s.lower, s.upper, s.step)]
            return ast.Call(ast.Name("slice", ast.Load()), parts, [])
        if isinstance(s, ast.Tuple):
            return ast.Tuple([self._index(e) for e in s.elts], ast.Load())
        return s


def _getitem_checked(source: str):
    import awkward as ak

    def getitem(value, idx, text, base):
        if isinstance(value, ak.Array):
            k = idx[1] if isinstance(idx, tuple) and len(idx) == 2 and idx[0] == slice(None) else None
            if isinstance(k, (int, np.integer)) and value.ndim >= 2:
                counts = np.asarray(ak.num(value, axis=1))
                short = int(np.sum(counts <= k)) if k >= 0 else int(np.sum(counts < -k))
                if short:
                    need = k + 1 if k >= 0 else -k
                    raise DataError(
                        f"{source}: {text!r}: {short} of {len(counts)} rows have fewer than {need} "
                        f"entries in {base} (index out of range); remove them first with a selection "
                        f"such as 'num({base}) >= {need}'"
                    )
        try:
            return value[idx]
        except (IndexError, ValueError, TypeError) as exc:
            raise DataError(f"{source}: cannot evaluate {text!r}: {exc}") from None

    return getitem


def _to_column(value: Any, n: int, what: str, source: str, *, boolean: bool = False) -> np.ndarray:
    """Turn an expression result into a flat numpy column of length n, or raise a DataError."""
    import awkward as ak

    if isinstance(value, ak.Array):
        if value.ndim != 1 or "var" in str(value.type):
            raise DataError(
                f"{source}: {what} gives a jagged (per-object) array of type {value.type}; select one "
                "object (e.g. Muon_Px[:, 0]) or reduce it (sum(...), max(...), num(...))"
            )
        missing = int(ak.sum(ak.is_none(value)))
        if missing:
            raise DataError(f"{source}: {what} has no value (None) in {missing} of {len(value)} rows; "
                            "add a selection that removes them")
        value = ak.to_numpy(value)
    arr = np.asarray(value)
    if arr.ndim == 0:
        arr = np.full(n, arr.item())
    arr = arr.reshape(-1) if arr.ndim > 1 and arr.size == n else arr
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(f"{source}: {what} has shape {arr.shape}; expected {n} values (one per row)")
    if boolean:
        if arr.dtype != bool:
            raise DataError(f"{source}: {what} must be a boolean condition, got dtype {arr.dtype}")
        return arr
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataError(f"{source}: {what} is not numeric (dtype {arr.dtype})")
    return arr


class _ColumnRef(_Expr):
    """A column taken verbatim by name (also names that are not Python identifiers)."""

    def __init__(self, name: str, label: str, table: _Table):
        self.text, self.label, self.columns, self.code = name, label, [name], None


def _parse(text: str, label: str, table: _Table) -> _Expr:
    """An exact column name is read as is; anything else is an expression."""
    return _ColumnRef(text, label, table) if text in table.names else _Expr(text, label, table)


def _evaluate(expr: _Expr, table: _Table, mask: np.ndarray | None) -> Any:
    if isinstance(expr, _ColumnRef):
        col = table.get_many([expr.text])[expr.text]
        return col if mask is None else col[mask]
    cols = table.get_many(expr.columns)
    if mask is not None:
        cols = {k: v[mask] for k, v in cols.items()}
    ns = {**_helpers(), **cols, "_getitem": _getitem_checked(table.source), "slice": slice}
    try:
        with np.errstate(all="ignore"):
            return eval(expr.code, {"__builtins__": {}}, ns)  # noqa: S307 - AST whitelisted above
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{table.source}: cannot evaluate {expr.label} {expr.text!r}: "
                        f"{type(exc).__name__}: {exc}") from None


def _n_rows(table: _Table, exprs: Sequence[_Expr]) -> int:
    if table.n_rows is not None:
        return int(table.n_rows)
    first = next((e.columns[0] for e in exprs if e.columns), None)
    if first is None:
        raise DataError(f"{table.source}: none of the expressions reads a column; cannot tell the number of rows")
    return len(table.get_many([first])[first])


def load_sample(
    path: str | Path,
    *,
    format: str | None = None,  # noqa: A002 - the natural keyword for users
    tree: str | None = None,
    features: Mapping[str, str] | Sequence[str],
    weight: str | None = None,
    selection: str | None = None,
    allow_negative_weights: bool = False,
    columns: Sequence[str] | None = None,
    entry_stop: int | None = None,
) -> Sample:
    """Read events from Parquet, ROOT, HDF5 or NumPy into a validated `Sample`.

    features: {name: expression} or a list of column names. Expressions are Python arithmetic
    over columns/branches (jagged ROOT branches are awkward arrays) with helpers: sqrt, exp,
    log, abs, sin, cos, arctan2, hypot, where, minimum, maximum, pt(px, py),
    mass(E, px, py, pz), eta(px, py, pz), num(a), sum(a), max(a), min(a), firsts(a), np, ak.
    Examples: "Muon_Px[:, 0]", "pt(Muon_Px[:, 0], Muon_Py[:, 0])",
    "mass(E1 + E2, px1 + px2, py1 + py2, pz1 + pz2)".
    weight: expression for per-event weights (default 1 each). selection: boolean expression,
    applied before the features are computed, so it can remove rows an index would overflow
    (e.g. "NMuon >= 2"). tree: the TTree (ROOT) or group/dataset (HDF5). columns: names of the
    columns of an unnamed 2-D array (.npy, or 2-D HDF5/npz data without names; default x0,
    x1, ...). entry_stop: read at most this many rows.
    """
    return _load_file(path, format=format, tree=tree, features=features, weight=weight, selection=selection,
                      allow_negative_weights=allow_negative_weights, columns=columns, entry_stop=entry_stop)[0]


def _load_file(
    path: str | Path,
    *,
    format: str | None = None,  # noqa: A002
    tree: str | None = None,
    features: Mapping[str, str] | Sequence[str],
    weight: str | None = None,
    selection: str | None = None,
    allow_negative_weights: bool = False,
    columns: Sequence[str] | None = None,
    entry_stop: int | None = None,
    split_by: str | None = None,
) -> tuple[Sample, np.ndarray | None]:
    """`load_sample`, plus the values of the `split_by` expression on the selected rows (or None)."""
    text = str(path)
    if text.startswith("file://"):
        text = text[len("file://"):]
    elif "://" in text:
        raise DataError(f"{text}: only local files can be read; copy remote objects (gs://, root://, ...) "
                        "to a local path first")
    path = Path(text).expanduser()
    if not path.exists():
        raise DataError(f"{path}: file not found (working directory {Path.cwd()})")
    if path.is_dir():
        raise DataError(f"{path}: is a directory; give one file")
    fmt = _resolve_format(path, format)
    if fmt == "root":
        table = _open_root(path, tree, entry_stop)
    elif fmt == "parquet":
        table = _open_parquet(path, entry_stop)
    elif fmt == "hdf5":
        table = _open_hdf5(path, tree, columns, entry_stop)
    else:
        table = _open_numpy(path, columns, entry_stop)

    if isinstance(features, Mapping):
        feat_map = {str(k): str(v) for k, v in features.items()}
    elif isinstance(features, (str, bytes)):
        raise DataError(f"{table.source}: features must be a list of columns or a {{name: expression}} mapping, "
                        f"not the string {features!r}")
    else:
        feat_map = {str(f): str(f) for f in features}
    if not feat_map:
        raise DataError(f"{table.source}: no features requested")

    feat_exprs = {name: _parse(expr, f"feature {name!r}", table) for name, expr in feat_map.items()}
    w_expr = None if weight is None else _parse(weight, "weight", table)
    sel_expr = None if selection is None else _parse(selection, "selection", table)
    key_expr = None if split_by is None else _parse(split_by, "split_by", table)

    n_all = _n_rows(table, [*feat_exprs.values(), *([w_expr] if w_expr else []), *([sel_expr] if sel_expr else [])])
    if n_all == 0:
        raise DataError(f"{table.source}: the sample is empty (0 rows)")
    mask = None
    if sel_expr is not None:
        mask = _to_column(_evaluate(sel_expr, table, None), n_all, f"selection {selection!r}", table.source,
                          boolean=True)
        if not mask.any():
            raise DataError(f"{table.source}: selection {selection!r} keeps 0 of {n_all} rows (empty sample)")
    n = n_all if mask is None else int(mask.sum())

    cols = []
    for name, expr in feat_exprs.items():
        col = _to_column(_evaluate(expr, table, mask), n, expr.label + f" = {expr.text!r}", table.source)
        n_nan, n_inf = _bad_rows(col.astype(np.float64))
        if n_nan or n_inf:
            raise DataError(f"{table.source}: feature {name!r} ({expr.text!r}) has {n_nan} NaN and {n_inf} "
                            f"infinite value(s) out of {n} rows")
        cols.append(col.astype(np.float32))
    if w_expr is None:
        weights = np.ones(n)
    else:
        weights = _to_column(_evaluate(w_expr, table, mask), n, f"weight {weight!r}", table.source)
        weights = weights.astype(np.float64)
    key = None
    if key_expr is not None:
        key = _to_column(_evaluate(key_expr, table, mask), n, f"split_by {split_by!r}", table.source)
        if key.dtype == bool:
            key = key.astype(np.int64)
        if np.issubdtype(key.dtype, np.floating) and not np.all(np.isfinite(key)):
            raise DataError(f"{table.source}: split_by {split_by!r} has {int(np.sum(~np.isfinite(key)))} "
                            f"non-finite value(s) out of {n} rows")
    desc = table.source + (f" [{selection}]" if selection else "")
    sample = Sample(np.stack(cols, axis=1), weights, tuple(feat_exprs), desc)
    try:
        return validate_sample(sample, allow_negative_weights=allow_negative_weights), key
    except DataError as exc:
        if weight is not None and "weight" in str(exc):
            raise DataError(f"{exc} (weight {weight!r})") from None
        raise
