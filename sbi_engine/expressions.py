"""The expression language of sample specs: features, weights and selections over file columns.

Why its own module: every file format is read into a table of named columns (`ColumnTable`,
built by `sbi_engine.readers`), and an expression such as ``"pt(Muon_Px[:, 0], Muon_Py[:, 0])"``
or ``"NMuon >= 2"`` is parsed and evaluated the same way for all of them. Expressions are
Python arithmetic restricted by an AST whitelist (no builtins, no file I/O, only array maths
from np and ak); jagged indices are checked so that an out-of-range index becomes a
`DataError` that counts the short rows instead of a traceback from awkward.

Expressions come from analysis files, so they are bounded before anything runs: the text
(`MAX_TEXT` characters), the syntax tree (`MAX_NODES` nodes, `MAX_DEPTH` levels), constants
(numbers only: no strings to repeat or %-format) and literal exponents (|p| <= `MAX_EXPONENT`).
Every ``**`` and ``*`` is evaluated through a guard that refuses what the parse cannot see: a
computed scalar exponent above `MAX_EXPONENT`, an exact-integer power above `MAX_INT_BITS`
bits, sequence repetition. So ``x + 9**9**9`` is refused at once instead of computing a
370-million-digit integer. Each refusal is an `ExpressionError` (a `DataError`, which the
analysis validator reports) naming the file, the expression and the limit.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from types import CodeType
from typing import Any, Protocol

import numpy as np

from .sample import DataError

__all__ = [
    "MAX_DEPTH",
    "MAX_EXPONENT",
    "MAX_INT_BITS",
    "MAX_NODES",
    "MAX_TEXT",
    "ColumnTable",
    "ExpressionError",
    "count_rows",
    "evaluate",
    "parse",
    "to_column",
]

# Limits on one expression (a real feature is a few dozen characters and nodes, see
# examples/analysis-root.yaml); what exceeds them is refused with an ExpressionError.
MAX_TEXT = 4000  # characters
MAX_NODES = 2000  # syntax-tree nodes (each name counts twice: the name and its Load context)
MAX_DEPTH = 100  # nesting levels of the syntax tree (a chain a + b + ... adds one per term)
MAX_EXPONENT = 64  # |p| of a scalar exponent in x ** p
MAX_INT_BITS = 4096  # bits of an exact integer power (a constant such as 2**64 is fine)


class ExpressionError(DataError):
    """A feature, weight or selection expression that is refused before or while it is
    evaluated (too long, too deep, a huge power, a disallowed construct); the message names
    the file, the expression and the problem."""


class _Refused(Exception):
    """Raised by the evaluation guards; `evaluate` turns it into an ExpressionError."""


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

        def refuse(problem: str) -> ExpressionError:
            return ExpressionError(f"{table.source}: {label} {_show(text)} {problem}")

        if len(text) > MAX_TEXT:
            raise refuse(f"is {len(text)} characters long; the limit is {MAX_TEXT}")
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError as exc:
            raise refuse(f"is not a valid expression ({exc.msg})") from None
        except (RecursionError, MemoryError):  # too nested for the parser itself
            raise refuse(
                f"is nested too deeply to parse (the limit is {MAX_DEPTH} levels)"
            ) from None
        except ValueError as exc:  # e.g. a NUL character
            raise refuse(f"is not a valid expression ({exc})") from None
        _check_size(tree, refuse)
        names: set[str] = set()
        bad_constant: ast.Constant | None = None  # refused after the names: those say more
        for node in ast.walk(tree):
            kind = type(node).__name__
            if kind not in _ALLOWED_NODES:
                raise refuse(f"uses a disallowed construct ({kind})")
            if isinstance(node, ast.Constant) and not _allowed_constant(node.value):
                bad_constant = bad_constant or node
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
                p = _literal_number(node.right)
                if p is not None and not abs(p) <= MAX_EXPONENT:
                    raise refuse(
                        f"raises to the power {_show(p)}; exponents are limited to "
                        f"|p| <= {MAX_EXPONENT}"
                    )
            if isinstance(node, ast.Attribute):
                base = node.value.id if isinstance(node.value, ast.Name) else None
                if node.attr not in (_MODULE_ATTRS.get(base, ()) if base is not None else ()):
                    raise refuse(
                        f"uses the attribute {ast.unparse(node)!r}; only "
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
        if bad_constant is not None:
            raise refuse(
                f"uses the constant {_show(bad_constant.value)}; only numbers (and True, False, "
                "None) may appear in an expression"
            )
        guarded = ast.fix_missing_locations(_Guard().visit(tree))
        self.code = compile(guarded, f"<{label}>", "eval")


def _show(value: Any, limit: int = 80) -> str:
    """repr() of a value, shortened in the middle when long (messages stay one line)."""
    text = repr(value)
    return (
        text if len(text) <= limit else f"{text[: limit - 20]}...{text[-12:]} ({len(text)} chars)"
    )


def _check_size(tree: ast.AST, refuse: Any) -> None:
    """Count the nodes and measure the depth without recursion (a deep tree must not blow the
    stack here, nor later in the compiler: that is what MAX_DEPTH is for)."""
    count, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise refuse(f"has more than {MAX_NODES} syntax-tree nodes (the limit)")
        if depth > MAX_DEPTH:
            raise refuse(f"is nested more than {MAX_DEPTH} levels deep (the limit)")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def _allowed_constant(value: Any) -> bool:
    return value is None or value is Ellipsis or isinstance(value, (int, float, complex))


def _literal_number(node: ast.expr) -> int | float | None:
    """The value of a literal number, or of + / - applied to one (else None); exact, never
    converted (an integer literal may be beyond float range)."""
    negative = False
    while isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        negative ^= isinstance(node.op, ast.USub)
        node = node.operand
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return -node.value if negative else node.value
    return None


class _Guard(ast.NodeTransformer):
    """Rewrite a[idx] into _getitem(a, idx, "a[idx]", "a") so jagged indices are checked and an
    out-of-range index becomes a DataError that counts the short rows; a ** b into
    _pow(a, b) and a * b into _mul(a, b), which refuse huge powers and sequence repetition."""

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        text, base = ast.unparse(node), ast.unparse(node.value)  # as written, before rewriting
        self.generic_visit(node)
        call = ast.Call(
            func=ast.Name("_getitem", ast.Load()),
            args=[node.value, self._index(node.slice), ast.Constant(text), ast.Constant(base)],
            keywords=[],
        )
        return ast.copy_location(call, node)

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        guard = {ast.Pow: "_pow", ast.Mult: "_mul"}.get(type(node.op))
        if guard is None:
            return node
        call = ast.Call(ast.Name(guard, ast.Load()), [node.left, node.right], [])
        return ast.copy_location(call, node)

    def _index(self, s: ast.expr) -> ast.expr:
        if isinstance(s, ast.Slice):
            parts = [p if p is not None else ast.Constant(None) for p in (s.lower, s.upper, s.step)]
            return ast.Call(ast.Name("slice", ast.Load()), parts, [])
        if isinstance(s, ast.Tuple):
            return ast.Tuple([self._index(e) for e in s.elts], ast.Load())
        return s


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float, np.number, np.bool_)) or (
        isinstance(value, np.ndarray) and value.ndim == 0
    )


def _pow(base: Any, exp: Any) -> Any:
    """base ** exp, refused when a scalar exponent exceeds MAX_EXPONENT or an exact integer
    power would exceed MAX_INT_BITS bits (array exponents are bounded by their dtype)."""
    if _is_scalar(exp):
        try:
            size = abs(float(exp))
        except (OverflowError, TypeError, ValueError):
            size = float("inf")
        if not size <= MAX_EXPONENT:  # also NaN
            raise _Refused(
                f"raises to the power {_show(exp)}; exponents are limited to |p| <= {MAX_EXPONENT}"
            )
        if (
            isinstance(base, int)
            and isinstance(exp, int)
            and exp > 0
            and base.bit_length() * exp > MAX_INT_BITS
        ):
            raise _Refused(
                f"computes an integer power of about {base.bit_length() * exp} bits; exact "
                f"integer powers are limited to {MAX_INT_BITS} bits (use a float base, e.g. 2.0 ** p)"
            )
    elif isinstance(exp, np.ndarray) and exp.dtype == object:
        raise _Refused("raises to a power given as an array of Python objects")
    return base**exp


_SEQUENCES = (str, bytes, tuple, list)


def _mul(a: Any, b: Any) -> Any:
    """a * b, refusing sequence repetition (("x",) * 10**9 would fill the memory)."""
    if isinstance(a, _SEQUENCES) or isinstance(b, _SEQUENCES):
        raise _Refused("repeats a sequence with '*'; only numbers and arrays may be multiplied")
    return a * b


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
    ns = {
        **_helpers(),
        **cols,
        "_getitem": _getitem_checked(table.source),
        "_pow": _pow,
        "_mul": _mul,
        "slice": slice,
    }
    assert expr.code is not None  # every _Expr except a _ColumnRef (handled above) is compiled
    try:
        with np.errstate(all="ignore"):
            return eval(expr.code, {"__builtins__": {}}, ns)  # noqa: S307 - AST whitelisted above
    except DataError:
        raise
    except _Refused as exc:
        raise ExpressionError(f"{table.source}: {expr.label} {_show(expr.text)} {exc}") from None
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
