"""The expression language of sample specs: features, weights and selections over file columns.

Why its own module: every file format is read into a table of named columns (`ColumnTable`,
built by `sbi_engine.readers`), and an expression such as ``"pt(Muon_Px[:, 0], Muon_Py[:, 0])"``
or ``"NMuon >= 2"`` is parsed and evaluated the same way for all of them. Expressions are
Python arithmetic restricted by an AST whitelist (no builtins, no file I/O, only array maths
from np and ak); jagged indices are checked so that an out-of-range index becomes a
`DataError` that counts the short rows instead of a traceback from awkward.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from types import CodeType
from typing import Any, Protocol

import numpy as np

from .sample import DataError

__all__ = ["ColumnTable", "parse", "evaluate", "to_column", "count_rows"]


class ColumnTable(Protocol):
    """Named columns of one file, read on demand (what an expression reads from)."""

    source: str
    names: list[str]
    n_rows: int | None

    def get_many(self, names: Sequence[str]) -> dict[str, Any]: ...

    def missing(self, name: str, context: str) -> DataError: ...


# Attributes an expression may use: pure array maths only (no file I/O such as np.save).
_MODULE_ATTRS = {
    "np": frozenset(
        {
            "sqrt",
            "exp",
            "log",
            "log10",
            "log1p",
            "expm1",
            "abs",
            "absolute",
            "sign",
            "sin",
            "cos",
            "tan",
            "arcsin",
            "arccos",
            "arctan",
            "arctan2",
            "sinh",
            "cosh",
            "tanh",
            "arcsinh",
            "arccosh",
            "arctanh",
            "hypot",
            "where",
            "minimum",
            "maximum",
            "clip",
            "floor",
            "ceil",
            "round",
            "power",
            "square",
            "isfinite",
            "isnan",
            "pi",
            "e",
            "float32",
            "float64",
            "int64",
            "logical_and",
            "logical_or",
            "logical_not",
        }
    ),
    "ak": frozenset(
        {
            "num",
            "sum",
            "max",
            "min",
            "mean",
            "prod",
            "count",
            "count_nonzero",
            "any",
            "all",
            "firsts",
            "argmax",
            "argmin",
            "fill_none",
            "is_none",
            "where",
            "flatten",
            "sort",
            "argsort",
            "singletons",
        }
    ),
}
_ALLOWED_NODES = (
    "Expression",
    "BinOp",
    "UnaryOp",
    "BoolOp",
    "Compare",
    "Call",
    "Name",
    "Load",
    "Constant",
    "Subscript",
    "Slice",
    "Tuple",
    "Attribute",
    "IfExp",
    "Add",
    "Sub",
    "Mult",
    "Div",
    "FloorDiv",
    "Mod",
    "Pow",
    "USub",
    "UAdd",
    "Not",
    "Invert",
    "BitAnd",
    "BitOr",
    "BitXor",
    "And",
    "Or",
    "Eq",
    "NotEq",
    "Lt",
    "LtE",
    "Gt",
    "GtE",
    "keyword",
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
        "np": np,
        "ak": ak,
        "sqrt": np.sqrt,
        "exp": np.exp,
        "log": np.log,
        "abs": np.abs,
        "sin": np.sin,
        "cos": np.cos,
        "tan": np.tan,
        "arctan2": np.arctan2,
        "arcsinh": np.arcsinh,
        "arccos": np.arccos,
        "hypot": np.hypot,
        "where": np.where,
        "minimum": np.minimum,
        "maximum": np.maximum,
        "pi": np.pi,
        "pt": pt,
        "mass": mass,
        "eta": eta,
        "num": lambda a: ak.num(a, axis=1),
        "sum": lambda a: ak.sum(a, axis=-1),
        "max": lambda a: ak.max(a, axis=-1),
        "min": lambda a: ak.min(a, axis=-1),
        "firsts": ak.firsts,
    }


class _Expr:
    """A parsed, restricted expression over columns (no builtins, no private attributes)."""

    code: CodeType | None  # None only for a plain column reference (_ColumnRef)

    def __init__(self, text: str, label: str, table: ColumnTable):
        self.text, self.label = text, label
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError as exc:
            raise DataError(
                f"{table.source}: {label} {text!r} is not a valid expression ({exc.msg})"
            ) from None
        names: set[str] = set()
        for node in ast.walk(tree):
            kind = type(node).__name__
            if kind not in _ALLOWED_NODES:
                raise DataError(
                    f"{table.source}: {label} {text!r} uses a disallowed construct ({kind})"
                )
            if isinstance(node, ast.Attribute):
                base = node.value.id if isinstance(node.value, ast.Name) else None
                if node.attr not in (_MODULE_ATTRS.get(base, ()) if base is not None else ()):
                    raise DataError(
                        f"{table.source}: {label} {text!r} uses the attribute {ast.unparse(node)!r}; only "
                        "array maths from np and ak is allowed (e.g. np.sqrt, np.arctan2, ak.num, ak.sum; "
                        "the list is sbi_engine.expressions._MODULE_ATTRS)"
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
            args=[
                node.value,
                self._index(node.slice),
                ast.Constant(ast.unparse(node)),
                ast.Constant(ast.unparse(node.value)),
            ],
            keywords=[],
        )
        return ast.copy_location(call, node)

    def _index(self, s: ast.expr) -> ast.expr:
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
            k = (
                idx[1]
                if isinstance(idx, tuple) and len(idx) == 2 and idx[0] == slice(None)
                else None
            )
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


def to_column(value: Any, n: int, what: str, source: str, *, boolean: bool = False) -> np.ndarray:
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
            raise DataError(
                f"{source}: {what} has no value (None) in {missing} of {len(value)} rows; "
                "add a selection that removes them"
            )
        value = ak.to_numpy(value)
    arr = np.asarray(value)
    if arr.ndim == 0:
        arr = np.full(n, arr.item())
    arr = arr.reshape(-1) if arr.ndim > 1 and arr.size == n else arr
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DataError(
            f"{source}: {what} has shape {arr.shape}; expected {n} values (one per row)"
        )
    if boolean:
        if arr.dtype != bool:
            raise DataError(f"{source}: {what} must be a boolean condition, got dtype {arr.dtype}")
        return arr
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise DataError(f"{source}: {what} is not numeric (dtype {arr.dtype})")
    return arr


class _ColumnRef(_Expr):
    """A column taken verbatim by name (also names that are not Python identifiers)."""

    def __init__(self, name: str, label: str, table: ColumnTable):
        self.text, self.label, self.columns, self.code = name, label, [name], None


def parse(text: str, label: str, table: ColumnTable) -> _Expr:
    """An exact column name is read as is; anything else is an expression."""
    return _ColumnRef(text, label, table) if text in table.names else _Expr(text, label, table)


def evaluate(expr: _Expr, table: ColumnTable, mask: np.ndarray | None) -> Any:
    """The expression's value on the table's rows (those where ``mask`` is True, if given)."""
    if isinstance(expr, _ColumnRef):
        col = table.get_many([expr.text])[expr.text]
        return col if mask is None else col[mask]
    cols = table.get_many(expr.columns)
    if mask is not None:
        cols = {k: v[mask] for k, v in cols.items()}
    ns = {**_helpers(), **cols, "_getitem": _getitem_checked(table.source), "slice": slice}
    assert expr.code is not None  # every _Expr except a _ColumnRef (handled above) is compiled
    try:
        with np.errstate(all="ignore"):
            return eval(expr.code, {"__builtins__": {}}, ns)  # noqa: S307 - AST whitelisted above
    except DataError:
        raise
    except Exception as exc:
        raise DataError(
            f"{table.source}: cannot evaluate {expr.label} {expr.text!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from None


def count_rows(table: ColumnTable, exprs: Sequence[_Expr]) -> int:
    """Rows of the table: its own count, else the length of the first column an expression reads."""
    if table.n_rows is not None:
        return int(table.n_rows)
    first = next((e.columns[0] for e in exprs if e.columns), None)
    if first is None:
        raise DataError(
            f"{table.source}: none of the expressions reads a column; cannot tell the number of rows"
        )
    return len(table.get_many([first])[first])
