"""The shared base of the declarative file formats: pydantic models, finite numbers, and
validation errors as (key path, message) pairs in words a user can act on.

Why: the workspace (`sbi_engine.fit.workspace_model`), the campaign config
(`backend.campaign_model`) and the analysis file (`backend.analysis.spec_models`) declare their
shapes, types, ranges and defaults once, as models; the same models emit the JSON schemas of
the docs and reject a file. Their errors all read alike: ``key.path: expected an integer >= 1,
got 0`` or ``key: unknown key 'x'; allowed keys: a, b``.

Every model forbids unknown keys and coerces nothing (a string is no number, a boolean no
integer); every number must be finite (NaN and infinity are refused before anything is
stored as JSON). Standard library and pydantic only: no JAX.
"""

from __future__ import annotations

import copy
import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any, ClassVar, Union

import pydantic
from pydantic import ConfigDict
from pydantic.fields import FieldInfo
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import ErrorDetails

__all__ = [
    "Maybe",
    "Number",
    "OMITTED",
    "defaults",
    "PathKey",
    "StrictModel",
    "choose",
    "describe",
    "dotted",
    "error_problems",
    "kind",
    "non_finite",
    "validate",
]

PathKey = tuple[str | int, ...]


class StrictModel(pydantic.BaseModel):
    """A block of a file: unknown keys refused, no type coercion, only finite numbers.

    A block may word its key problems (see `error_problems`): `key_noun` names its keys
    ("unknown training key 'x'"), `key_hints` adds a hint to an unknown key that users mistake
    for an allowed one, `allowed_note` follows the list of allowed keys, and `missing_hints`
    says what a missing required key is."""

    model_config = ConfigDict(
        extra="forbid", strict=True, allow_inf_nan=False, populate_by_name=True, frozen=True
    )
    key_noun: ClassVar[str] = "key"
    key_hints: ClassVar[dict[str, str]] = {}
    allowed_note: ClassVar[str] = ""
    missing_hints: ClassVar[dict[str, str]] = {}


# A number: an integer or a float (read as a float), finite (the models' allow_inf_nan=False).
Number = float

T = typing.TypeVar("T")


class _Omitted:
    """Marks a key that may be left out (then it is absent, not null) but not given as null."""

    def __repr__(self) -> str:
        return "OMITTED"


OMITTED = _Omitted()


def _not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("may not be null; leave the key out instead")
    return value


# `key: Maybe[X] = None`: an optional key; absent means "not given" (no default is filled in),
# an explicit null is refused; the JSON schema shows X only.
Maybe = Annotated[T | SkipJsonSchema[None], pydantic.AfterValidator(_not_null), OMITTED]


NO_CHOICE = "no_choice"


def choose(expected: str, pick: Callable[[Any], str | None]) -> pydantic.Discriminator:
    """The discriminator of a union whose members are `Annotated[X, Tag(name)]`: `pick(value)`
    names the member a value is validated against (so only its errors are reported), or None
    when the value fits none; then the error reads "<expected>, got <the value>"."""
    return pydantic.Discriminator(pick, custom_error_type=NO_CHOICE, custom_error_message=expected)


def is_maybe(info: FieldInfo) -> bool:
    """Whether a model field is declared `Maybe[...]` (left out of the filled-in defaults)."""
    return any(m is OMITTED for m in info.metadata)


def defaults(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """The defaults a model fills in, nested blocks included (`Maybe` keys left out), as
    plain JSON data keyed by the file's key names."""
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if is_maybe(info) or info.is_required():
            continue
        value = info.get_default(call_default_factory=True)
        if isinstance(value, pydantic.BaseModel):
            value = defaults(type(value))
        out[info.alias or name] = copy.deepcopy(value)
    return out


def dotted(path: PathKey) -> str:
    """('processes', 'S', 'sample') -> 'processes.S.sample'; list indices as [i]."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def kind(v: Any) -> str:
    """A value as a message names it: 'a string 'x'', 'an integer 3', 'a mapping'."""
    if v is None:
        return "nothing (null)"
    name = {
        dict: "a mapping",
        list: "a list",
        tuple: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }.get(type(v), type(v).__name__)
    text = repr(v)
    if isinstance(v, (dict, list, tuple)) and (not v or len(text) > 60):
        return name
    return f"{name} {text if len(text) <= 60 else text[:57] + '...'}"


# --------------------------------------------------------------------------- the model at a key


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _tag(tp: Any) -> str | None:
    if typing.get_origin(tp) is Annotated:
        for meta in typing.get_args(tp)[1:]:
            if isinstance(meta, pydantic.Tag):
                return meta.tag
    return None


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _child(tp: Any, part: str | int) -> Any:
    """The declared type one key below `tp` (None when unknown)."""
    bare = _unwrap(tp)
    origin = typing.get_origin(bare)
    if isinstance(bare, type) and issubclass(bare, pydantic.BaseModel):
        for name, info in bare.model_fields.items():
            if part in (name, info.alias):
                return info.annotation
        return None
    if origin in (dict, Mapping):
        return typing.get_args(bare)[1]
    if origin in (list, tuple):
        args = typing.get_args(bare)
        if origin is tuple and args and args[-1] is not Ellipsis and isinstance(part, int):
            return args[part] if part < len(args) else None
        return args[0] if args else None
    return None


_SCALAR_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none", "tuple"})


def _is_none(tp: Any) -> bool:
    return _unwrap(tp) in (None, type(None))


def _looks_like_tag(part: str | int) -> bool:
    """A union member's or validator's name in an error location (not a key of the file)."""
    return isinstance(part, str) and (
        "[" in part or part in _SCALAR_TAGS or part.startswith("constrained-")
    )


def _model_at(root: Any, loc: tuple[str | int, ...]) -> tuple[Any, PathKey]:
    """The declared type at `loc` (pydantic's error location) and the key path in the file it
    stands for: a union's tag or a validator's name only chooses a type, it is no key."""
    tp, path = root, []
    for part in loc:
        while tp is not None and _is_union(_unwrap(tp)):
            members = [m for m in typing.get_args(_unwrap(tp)) if not _is_none(m)]
            chosen = [
                m for m in members if part in (_tag(m), getattr(_unwrap(m), "__name__", None))
            ]
            if not chosen and len(members) == 1 and _looks_like_tag(part):
                chosen = members
            if chosen:
                tp = chosen[0]
                break
            tp = members[0] if len(members) == 1 else None
        else:
            if tp is None and _looks_like_tag(part):
                continue  # a validator's or an unknown union member's name
            path.append(part)
            tp = _child(tp, part) if tp is not None else None
            continue
        # the part was a union tag: it chose `tp` and is not a key of the file
    return tp, tuple(path)


def _fields(tp: Any) -> list[str]:
    bare = _unwrap(tp)
    if isinstance(bare, type) and issubclass(bare, pydantic.BaseModel):
        return [info.alias or name for name, info in bare.model_fields.items()]
    return []


# --------------------------------------------------------------------------- messages

_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "dict_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
}


def _bound(err: ErrorDetails) -> str:
    ctx = err.get("ctx") or {}
    for key, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if key in ctx:
            v = ctx[key]
            return f"{sign} {v if isinstance(v, int) else format(v, 'g')}"
    return ""


def _is_int(tp: Any) -> bool:
    return _unwrap(tp) is int


def describe(err: ErrorDetails, tp: Any) -> str:
    """One pydantic error as a message without its key path (the caller places it)."""
    t, value = err["type"], err.get("input")
    ctx = err.get("ctx") or {}
    if t in _TYPE_WORDS:
        return f"expected {_TYPE_WORDS[t]}, got {kind(value)}"
    if t in ("model_type", "model_attributes_type"):
        return f"expected a mapping, got {kind(value)}"
    if t == "missing":
        return "missing"  # rewritten by error_problems at the parent
    if t in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        what = "an integer" if _is_int(tp) else "a number"
        return f"expected {what} {_bound(err)}, got {value!r}"
    if t == "too_short":
        return f"expected at least {ctx.get('min_length')} item(s), got {kind(value)}"
    if t == "too_long":
        return f"expected at most {ctx.get('max_length')} item(s), got {ctx.get('actual_length')}"
    if t == "string_too_short":
        return "expected a non-empty string"
    if t == "string_too_long":
        return f"expected at most {ctx.get('max_length')} characters"
    if t == "string_pattern_mismatch":
        return f"{value!r} does not match the pattern {ctx.get('pattern')}"
    if t in ("literal_error", "enum"):
        expected = str(ctx.get("expected", "")).replace(" or ", ", ")
        return f"{value!r} is not allowed; allowed values: {expected}"
    if t == "finite_number":
        return f"expected a finite number, got {value!r}"
    if t == NO_CHOICE:
        return f"{err['msg']}, got {kind(value)}"
    if t == "union_tag_invalid":
        return f"{kind(value)} is not allowed here"
    if t == "value_error":
        return str(ctx.get("error", err["msg"]))
    return str(err["msg"])


def _block(tp: Any) -> type[StrictModel] | None:
    bare = _unwrap(tp)
    return bare if isinstance(bare, type) and issubclass(bare, StrictModel) else None


def _unknown_key(key: Any, parent: Any, allowed: str) -> str:
    block = _block(parent)
    noun, hint, note = "key", "", ""
    if block is not None:
        noun, note = block.key_noun, block.allowed_note
        hint = block.key_hints.get(str(key), "")
    return f"unknown {noun} {key!r}{f' ({hint})' if hint else ''}; allowed keys: {allowed}{note}"


def error_problems(exc: pydantic.ValidationError, root: Any) -> list[tuple[PathKey, str]]:
    """Every error of `exc` (raised validating against `root`) as (key path, message); unknown
    keys name the allowed keys, missing keys are reported at their parent (each with its
    block's hints, see `StrictModel`)."""
    out: list[tuple[PathKey, str]] = []
    missing: dict[PathKey, tuple[Any, list[str]]] = {}
    for err in exc.errors(include_url=False):
        if err["type"] == "none_required":
            continue  # the null branch of an optional key: the other branch's error says it
        tp, path = _model_at(root, tuple(err["loc"]))
        if err["type"] == "extra_forbidden":
            parent, _ = _model_at(root, tuple(err["loc"][:-1]))
            out.append((path, _unknown_key(path[-1], parent, ", ".join(_fields(parent)))))
        elif err["type"] == "missing":
            parent, _ = _model_at(root, tuple(err["loc"][:-1]))
            missing.setdefault(path[:-1], (parent, []))[1].append(str(path[-1]))
        elif err["loc"][-1:] == ("[key]",) and err["type"] == "literal_error":
            allowed = str((err.get("ctx") or {}).get("expected", "")).replace("'", "")
            allowed = allowed.replace(" or ", ", ")
            out.append((path[:-1], _unknown_key(err.get("input"), None, allowed)))
        elif err["loc"][-1:] == ("[key]",):  # a key of a mapping that is not a valid name
            out.append((path[:-1], describe(err, None)))
        else:
            out.append((path, describe(err, tp)))
    for parent_path, (parent, keys) in missing.items():
        hints = block.missing_hints if (block := _block(parent)) is not None else {}
        plain = [k for k in keys if k not in hints]
        out += [
            (parent_path, f"missing required key {k!r}: {hints[k]}") for k in keys if k in hints
        ]
        if plain:
            many = "s" if len(plain) > 1 else ""
            out.append(
                (parent_path, f"missing required key{many} {', '.join(repr(k) for k in plain)}")
            )
    return out


_ADAPTERS: dict[Any, pydantic.TypeAdapter[Any]] = {}


def validate(model: Any, value: Any) -> tuple[Any, list[tuple[PathKey, str]]]:
    """`value` validated against `model` (a model class or any type): (result, []) or
    (None, problems with key paths relative to `value`)."""
    try:
        adapter = _ADAPTERS[model]
    except KeyError:
        adapter = _ADAPTERS[model] = pydantic.TypeAdapter(model)
    try:
        return adapter.validate_python(value), []
    except pydantic.ValidationError as exc:
        return None, error_problems(exc, model)


def non_finite(value: Any, path: PathKey = ()) -> Iterator[tuple[PathKey, float]]:
    """Key paths of every NaN or infinite float inside nested mappings and lists."""
    stack: list[tuple[PathKey, Any]] = [(path, value)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            yield where, v
        elif isinstance(v, Mapping):
            stack.extend(((*where, str(k)), x) for k, x in reversed(list(v.items())))
        elif isinstance(v, (list, tuple)):
            stack.extend(((*where, i), x) for i, x in reversed(list(enumerate(v))))
