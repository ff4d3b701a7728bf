"""Reading event files into a `Sample`: Parquet, ROOT (TTree and RNTuple), HDF5 and NumPy.

Every format is turned into a `_Table`: named columns (numpy arrays, or awkward arrays for
jagged ROOT / Parquet branches) read lazily, only those an expression needs. Feature, weight
and selection expressions (`sbi_engine.expressions`) are then evaluated the same way for all
formats, and the result is validated like any `Sample`. All bad input is a `DataError` naming
the file, the column and how many rows are affected.

Which events a job gets (sample specs, the train / evaluation roles) is `sbi_engine.sample_specs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .expressions import count_rows, evaluate, parse, to_column
from .sample import DataError, Sample, _bad_rows, validate_sample

__all__ = ["load_sample"]

_FORMATS = {
    "parquet": "parquet",
    "pq": "parquet",
    "root": "root",
    "hdf5": "hdf5",
    "h5": "hdf5",
    "hdf": "hdf5",
    "numpy": "numpy",
    "npz": "numpy",
    "npy": "numpy",
}
_SUFFIXES = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".root": "root",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".hdf": "hdf5",
    ".npz": "numpy",
    ".npy": "numpy",
}


class _Table:
    """Named columns of one file; `get` reads (and caches) a column on demand."""

    def __init__(
        self,
        source: str,
        names: Sequence[str],
        reader,
        n_rows: int | None = None,
        kind: str = "column",
    ):
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
        listing = (
            self.names
            if len(self.names) <= 60
            else self.names[:60] + [f"... ({len(self.names) - 60} more)"]
        )
        return DataError(
            f"{self.source}: no {self.kind} {name!r} (used in {context}){hint} "
            f"{self._plural} available: {listing}"
        )


def _resolve_format(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        try:
            return _FORMATS[fmt.lower()]
        except KeyError:
            raise DataError(
                f"{path}: unknown format {fmt!r}; use one of {sorted(set(_FORMATS.values()))}"
            ) from None
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise DataError(
            f"{path}: cannot tell the format from the suffix {suffix!r}; pass format= "
            f"(one of {sorted(set(_FORMATS.values()))})"
        )
    return _SUFFIXES[suffix]


_ROOT_TREE_CLASSES = (
    "TTree",
    "TNtuple",
    "TNtupleD",
    "ROOT::RNTuple",
    "ROOT::Experimental::RNTuple",
)


def _open_root(path: Path, tree: str | None, entry_stop: int | None) -> _Table:
    import uproot

    try:
        f = uproot.open(path)
    except Exception as exc:  # uproot raises several types for non-ROOT files
        raise DataError(
            f"{path}: cannot be read as a ROOT file ({type(exc).__name__}: {exc})"
        ) from None
    trees = sorted(
        {k.split(";")[0] for k, cls in f.classnames().items() if cls in _ROOT_TREE_CLASSES}
    )
    if tree is None:
        if len(trees) != 1:
            raise DataError(
                f"{path}: pass tree=; the file has {len(trees)} trees (TTree/RNTuple): {trees}"
            )
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
        raise DataError(
            f"{path}: cannot be read as Parquet ({type(exc).__name__}: {exc})"
        ) from None
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


def _matrix_columns(
    mat: np.ndarray, names: Sequence[str] | None, where: str
) -> dict[str, np.ndarray]:
    names = [str(n) for n in names] if names is not None else [f"x{j}" for j in range(mat.shape[1])]
    if len(names) != mat.shape[1]:
        raise DataError(
            f"{where}: a 2-D array with {mat.shape[1]} columns but {len(names)} column names {names}"
        )
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
        raise DataError(
            f"{path}: cannot be read by numpy.load ({type(exc).__name__}: {exc})"
        ) from None
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


def _open_hdf5(
    path: Path, group: str | None, columns: Sequence[str] | None, entry_stop: int | None
) -> _Table:
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
            raise DataError(
                f"{path}: no group or dataset {group!r}; top-level keys: {sorted(f.keys())}"
            )
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
    return _load_file(
        path,
        format=format,
        tree=tree,
        features=features,
        weight=weight,
        selection=selection,
        allow_negative_weights=allow_negative_weights,
        columns=columns,
        entry_stop=entry_stop,
    )[0]


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
        text = text[len("file://") :]
    elif "://" in text:
        raise DataError(
            f"{text}: only local files can be read; copy remote objects (gs://, root://, ...) "
            "to a local path first"
        )
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
        raise DataError(
            f"{table.source}: features must be a list of columns or a {{name: expression}} mapping, "
            f"not the string {features!r}"
        )
    else:
        feat_map = {str(f): str(f) for f in features}
    if not feat_map:
        raise DataError(f"{table.source}: no features requested")

    feat_exprs = {name: parse(expr, f"feature {name!r}", table) for name, expr in feat_map.items()}
    w_expr = None if weight is None else parse(weight, "weight", table)
    sel_expr = None if selection is None else parse(selection, "selection", table)
    key_expr = None if split_by is None else parse(split_by, "split_by", table)

    n_all = count_rows(
        table,
        [*feat_exprs.values(), *([w_expr] if w_expr else []), *([sel_expr] if sel_expr else [])],
    )
    if n_all == 0:
        raise DataError(f"{table.source}: the sample is empty (0 rows)")
    mask = None
    if sel_expr is not None:
        mask = to_column(
            evaluate(sel_expr, table, None),
            n_all,
            f"selection {selection!r}",
            table.source,
            boolean=True,
        )
        if not mask.any():
            raise DataError(
                f"{table.source}: selection {selection!r} keeps 0 of {n_all} rows (empty sample)"
            )
    n = n_all if mask is None else int(mask.sum())

    cols = []
    for name, expr in feat_exprs.items():
        col = to_column(
            evaluate(expr, table, mask), n, expr.label + f" = {expr.text!r}", table.source
        )
        n_nan, n_inf = _bad_rows(col.astype(np.float64))
        if n_nan or n_inf:
            raise DataError(
                f"{table.source}: feature {name!r} ({expr.text!r}) has {n_nan} NaN and {n_inf} "
                f"infinite value(s) out of {n} rows"
            )
        cols.append(col.astype(np.float32))
    if w_expr is None:
        weights = np.ones(n)
    else:
        weights = to_column(evaluate(w_expr, table, mask), n, f"weight {weight!r}", table.source)
        weights = weights.astype(np.float64)
    key = None
    if key_expr is not None:
        key = to_column(evaluate(key_expr, table, mask), n, f"split_by {split_by!r}", table.source)
        if key.dtype == bool:
            key = key.astype(np.int64)
        if np.issubdtype(key.dtype, np.floating) and not np.all(np.isfinite(key)):
            raise DataError(
                f"{table.source}: split_by {split_by!r} has {int(np.sum(~np.isfinite(key)))} "
                f"non-finite value(s) out of {n} rows"
            )
    desc = table.source + (f" [{selection}]" if selection else "")
    sample = Sample(np.stack(cols, axis=1), weights, tuple(feat_exprs), desc)
    try:
        return validate_sample(sample, allow_negative_weights=allow_negative_weights), key
    except DataError as exc:
        if weight is not None and "weight" in str(exc):
            raise DataError(f"{exc} (weight {weight!r})") from None
        raise
