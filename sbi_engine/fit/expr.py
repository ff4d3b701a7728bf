"""Coefficient functions m_c(theta) as small, safely parsed arithmetic expressions.

A workspace writes the POI dependence of each process as text such as ``"mu - sqrt(mu)"``.
The text is parsed with :mod:`ast` and only numbers, parameter names, ``+ - * / **``, unary
signs and the functions ``sqrt``, ``exp`` and ``log`` are accepted, so loading a workspace
never evaluates arbitrary code. The parsed tree evaluates with any array module (``jax.numpy``
for the fit, ``numpy`` for the baseline NLL).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ExpressionError", "Expression", "parse_expression"]

_FUNCTIONS = ("sqrt", "exp", "log")
MAX_LENGTH = 1000  # characters of one coefficient expression
MAX_NODES = 200  # syntax-tree nodes (numbers, names, operators, calls)
MAX_DEPTH = 32  # nesting of operators and calls


class ExpressionError(ValueError):
    """A coefficient expression that cannot be parsed or uses an unknown name."""


@dataclass(frozen=True)
class Expression:
    """A parsed coefficient: ``expr(values, xp)`` evaluates it for a name -> value mapping."""

    text: str
    names: tuple[str, ...]
    _fn: Callable[[Mapping[str, Any], Any], Any] = field(repr=False, compare=False)

    def __call__(self, values: Mapping[str, Any], xp: Any = None) -> Any:
        if xp is None:
            import jax.numpy as xp  # noqa: PLC0415 - default array module
        return self._fn(values, xp)


def _compile(node: ast.AST, allowed: frozenset[str], used: set[str], where: str, text: str):
    def fail(msg: str) -> ExpressionError:
        return ExpressionError(f"{where}: {msg} in coefficient expression {text!r}")

    if isinstance(node, ast.Expression):
        return _compile(node.body, allowed, used, where, text)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise fail(f"constant {node.value!r} is not a number")
        value = float(node.value)
        return lambda v, xp: value
    if isinstance(node, ast.Name):
        if node.id not in allowed:
            raise fail(f"unknown parameter {node.id!r} (known: {sorted(allowed)})")
        used.add(node.id)
        name = node.id
        return lambda v, xp: v[name]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _compile(node.operand, allowed, used, where, text)
        if isinstance(node.op, ast.USub):
            return lambda v, xp: -inner(v, xp)
        return inner
    if isinstance(node, ast.BinOp):
        a = _compile(node.left, allowed, used, where, text)
        b = _compile(node.right, allowed, used, where, text)
        ops = {
            ast.Add: lambda v, xp: a(v, xp) + b(v, xp),
            ast.Sub: lambda v, xp: a(v, xp) - b(v, xp),
            ast.Mult: lambda v, xp: a(v, xp) * b(v, xp),
            ast.Div: lambda v, xp: a(v, xp) / b(v, xp),
            ast.Pow: lambda v, xp: a(v, xp) ** b(v, xp),
        }
        for op_type, fn in ops.items():
            if isinstance(node.op, op_type):
                return fn
        raise fail(f"operator {type(node.op).__name__} is not allowed")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            raise fail(f"only the functions {', '.join(_FUNCTIONS)} may be called")
        if len(node.args) != 1 or node.keywords:
            raise fail(f"{node.func.id}() takes exactly one argument")
        arg = _compile(node.args[0], allowed, used, where, text)
        fname = node.func.id
        return lambda v, xp: _function(xp, fname)(arg(v, xp))
    raise fail(f"{type(node).__name__} is not allowed")


_SQRT_FLOOR = 1e-100  # below this the derivative of sqrt is held at 0.5 / sqrt(floor) = 5e49


def _function(xp: Any, name: str) -> Callable[[Any], Any]:
    """``xp``'s function, except sqrt under JAX, which gets a finite derivative at 0.

    d sqrt(x)/dx is infinite at x = 0, and a JAX derivative multiplies it by every tangent,
    zero ones included: 0 * inf = NaN would spread from a POI at its bound 0 (a scan point,
    a Neyman toy at mu = 0) to the whole gradient and Hessian. With the derivative capped at
    a huge finite value only the POI's own row is extreme, and its sign stays right.
    """
    if name == "sqrt" and getattr(xp, "__name__", "") == "jax.numpy":
        return _jax_sqrt()
    return getattr(xp, name)


def _jax_sqrt() -> Callable[[Any], Any]:
    global _JAX_SQRT  # noqa: PLW0603 - built on first use: static validation must not import JAX
    if _JAX_SQRT is None:
        import jax  # noqa: PLC0415
        import jax.numpy as jnp  # noqa: PLC0415

        @jax.custom_jvp
        def sqrt(x):
            return jnp.sqrt(x)

        @sqrt.defjvp
        def _sqrt_jvp(primals, tangents):
            (x,), (t,) = primals, tangents
            return sqrt(x), t * (0.5 / jnp.sqrt(jnp.maximum(x, _SQRT_FLOOR)))

        _JAX_SQRT = sqrt
    return _JAX_SQRT


_JAX_SQRT: Callable[[Any], Any] | None = None


def _check_size(tree: ast.AST, where: str, text: str) -> None:
    """Refuse trees the evaluator would recurse through too deeply or too long."""
    nodes, stack = 0, [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES or depth > MAX_DEPTH:
            what = f"more than {MAX_NODES} terms" if nodes > MAX_NODES else "too deep a nesting"
            raise ExpressionError(
                f"{where}: coefficient expression {text!r} has {what}; write a shorter one"
            )
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def parse_expression(
    text: str | float | int, names: Iterable[str], where: str = "expression"
) -> Expression:
    """Parse ``text`` into an :class:`Expression` over the parameter ``names``.

    ``where`` names the owner (e.g. ``"process 'S'"``) in error messages.

    >>> e = parse_expression("mu - sqrt(mu)", ["mu"], where="process 'S'")
    >>> import numpy as np; float(e({"mu": 4.0}, np))
    2.0
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        text = repr(float(text))
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError(
            f"{where}: coefficient expression must be a non-empty string, got {text!r}"
        )
    if len(text) > MAX_LENGTH:
        raise ExpressionError(
            f"{where}: coefficient expression is {len(text)} characters long; at most "
            f"{MAX_LENGTH} are allowed"
        )
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError) as exc:  # ValueError: a null character
        raise ExpressionError(
            f"{where}: cannot parse coefficient expression {text!r}: {getattr(exc, 'msg', exc)}"
        ) from None
    except (RecursionError, MemoryError):
        raise ExpressionError(
            f"{where}: coefficient expression {text!r} is nested too deeply"
        ) from None
    _check_size(tree, where, text)
    used: set[str] = set()
    fn = _compile(tree, frozenset(names), used, where, text)
    return Expression(text=text, names=tuple(sorted(used)), _fn=fn)
