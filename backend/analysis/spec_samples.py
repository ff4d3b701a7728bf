"""Static checks of samples: a demo spec, a file spec (with `sample_defaults`), or a name.

A file sample's path is resolved relative to the analysis file and must exist; its keys,
format, features, weight and selection are checked for form only (`spec_data` reads them).
So are the keys of its train / eval split (`eval_fraction`, `split_by`, `eval_sample`; see
`sbi_engine.sample_specs.load_sample_spec`): an `eval_sample` is checked like a file sample of its
own (sample_defaults apply to it too, except the split keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from backend.analysis.spec_checker import Checker, Resolved, is_number, kind
from backend.analysis.spec_engine import (
    DEMO_FEATURES,
    DEMO_KEYS,
    DEMO_PROCESSES,
    FILE_KEYS,
    FORMATS,
    SPLIT_KEYS,
    SUFFIXES,
)
from backend.analysis.spec_yaml import PathKey


def _resolve_path(text: str, base_dir: Path) -> Path:
    p = Path(text.removeprefix("file://")).expanduser()
    return p if p.is_absolute() else (base_dir / p).resolve()


def _check_demo(ck: Checker, path: PathKey, demo: Any) -> dict[str, Any] | None:
    d = ck.mapping((*path, "demo"), demo, DEMO_KEYS, "demo sample settings")
    if d is None:
        return None
    where = (*path, "demo")
    if "mu" in d:  # observed-like mixture data at mu
        if "process" in d:
            ck.add(
                where, "give either 'process' (a simulated process) or 'mu' (pseudo-data), not both"
            )
        ck.number((*where, "mu"), d["mu"])
        if "n" in d and d["n"] is not None:
            ck.integer((*where, "n"), d["n"], 1)
    else:
        for key in ("process", "n"):
            if key not in d:
                ck.add(where, f"missing required key {key!r}")
        if "process" in d and d["process"] not in DEMO_PROCESSES:
            ck.add(
                (*where, "process"),
                f"unknown demo process {d['process']!r}; allowed values: {', '.join(DEMO_PROCESSES)}",
            )
        if "n" in d:
            ck.integer((*where, "n"), d["n"], 1)
    if "seed" not in d:
        ck.add(where, "missing required key 'seed' (every sample needs its own seed)")
    else:
        ck.integer((*where, "seed"), d["seed"], 0)
    if "alpha" in d:
        alpha = ck.mapping((*where, "alpha"), d["alpha"], None, "nuisance values {name: alpha}")
        for k, v in (alpha or {}).items():
            ck.number((*where, "alpha", k), v)
    for key in ("weighted", "poisson"):
        if key in d:
            ck.boolean((*where, key), d[key])
    if "n_nuisances" in d:
        ck.integer((*where, "n_nuisances"), d["n_nuisances"], 0)
    if "luminosity" in d:
        ck.number((*where, "luminosity"), d["luminosity"], positive=True)
    return {"demo": dict(d)}


def _check_split(
    ck: Checker,
    path: PathKey,
    spec: dict[str, Any],
    merged: dict[str, Any],
    defaults: dict[str, Any],
) -> tuple[bool, dict[str, Any] | None]:
    """The split keys of a file sample: (ok, resolved eval_sample or None)."""
    ok = True
    where = lambda key: (*path, key) if key in spec else ("sample_defaults", key)  # noqa: E731
    if "eval_sample" in spec:
        clash: list[str] = [k for k in ("eval_fraction", "split_by") if k in spec]
        for key in clash:
            ck.add(
                (*path, key),
                f"{key!r} cannot be combined with 'eval_sample' (the eval_sample is the "
                "evaluation part; the whole sample is the training part)",
            )
        ok = not clash
    if merged.get("eval_fraction") is not None:
        f = merged["eval_fraction"]
        if not (is_number(f) and 0.0 < f < 1.0):
            ck.add(
                where("eval_fraction"),
                f"expected a number in (0, 1) (the share of events kept for "
                f"evaluation), got {kind(f)}",
            )
            ok = False
    if merged.get("split_by") is not None and not (
        isinstance(merged["split_by"], str) and merged["split_by"].strip()
    ):
        ck.add(
            where("split_by"),
            f"expected an expression (e.g. an event-number column), got {kind(merged['split_by'])}",
        )
        ok = False
    if "eval_sample" not in spec:
        return ok, None
    epath = (*path, "eval_sample")
    ev = ck.mapping(
        epath,
        spec["eval_sample"],
        None,
        "a file sample ({path: ..., features: ...}) of evaluation events",
    )
    if ev is None:
        return False, None
    inner = [k for k in SPLIT_KEYS if k in ev]
    for key in inner:
        ck.add((*epath, key), f"an eval_sample is used whole; {key!r} is not allowed in it")
    if inner or "demo" in ev:
        if "demo" in ev:
            ck.add(
                epath,
                "an eval_sample is a file sample ({path: ..., ...}); demo samples get their evaluation "
                "events from a new seed automatically",
            )
        return False, None
    if "path" not in ev:
        ck.add(epath, "missing required key 'path'")
        return False, None
    resolved = _check_file(
        ck, epath, ev, {k: v for k, v in defaults.items() if k not in SPLIT_KEYS}
    )
    if resolved is None:
        return False, None
    main_features = merged.get("features")
    if isinstance(main_features, (Mapping, list)) and feature_names(resolved) != feature_names(
        {"features": main_features}
    ):
        ck.add(
            (*epath, "features") if "features" in ev else epath,
            f"the eval_sample's features {list(feature_names(resolved))} differ from the sample's "
            f"{list(feature_names({'features': main_features}))}",
        )
        return False, None
    return ok, resolved


def _check_file(
    ck: Checker, path: PathKey, spec: dict[str, Any], defaults: dict[str, Any]
) -> dict[str, Any] | None:
    if "eval_sample" in spec:  # the sample's own eval_sample replaces a default split
        defaults = {k: v for k, v in defaults.items() if k not in SPLIT_KEYS}
    merged = {**defaults, **spec}
    ok = True
    for key in spec:
        if key not in FILE_KEYS:
            ck.add(
                (*path, key),
                f"unknown key {key!r}; allowed keys: {', '.join(FILE_KEYS)} (or 'demo' alone)",
            )
            ok = False
    text = ck.string((*path, "path"), merged.get("path"), "a file path")
    if text is None:
        return None
    if "://" in text and not text.startswith("file://"):
        ck.add(
            (*path, "path"),
            f"only local files can be read, got {text!r}; copy remote files to a local path",
        )
        return None
    resolved = _resolve_path(text, ck.base_dir)
    if not resolved.exists():
        ck.add((*path, "path"), f"file not found: {resolved}")
        ok = False
    elif resolved.is_dir():
        ck.add((*path, "path"), f"is a directory, not a file: {resolved}")
        ok = False
    fmt = merged.get("format")
    where_fmt = (
        (*path, "format")
        if "format" in spec
        else (path if fmt is None else ("sample_defaults", "format"))
    )
    if fmt is not None and (not isinstance(fmt, str) or fmt.lower() not in FORMATS):
        ck.add(where_fmt, f"unknown format {fmt!r}; allowed values: {', '.join(FORMATS)}")
        ok = False
    if fmt is None and resolved.suffix.lower() not in SUFFIXES:
        ck.add(
            (*path, "path"),
            f"cannot tell the format from the suffix {resolved.suffix!r}; "
            f"give format: (one of {', '.join(FORMATS)})",
        )
        ok = False
    feats = merged.get("features")
    fpath = (*path, "features") if "features" in spec else ("sample_defaults", "features")
    if feats is None:
        ck.add(
            path,
            "missing required key 'features' (here or in sample_defaults): {name: expression} or a list of columns",
        )
        ok = False
    elif isinstance(feats, Mapping):
        if not feats:
            ck.add(fpath, "no features given")
            ok = False
        for k, v in feats.items():
            if not isinstance(v, str) or not v.strip():
                ck.add((*fpath, str(k)), f"expected an expression (a string), got {kind(v)}")
                ok = False
    elif isinstance(feats, list):
        if not feats or not all(isinstance(f, str) and f for f in feats):
            ck.add(fpath, "expected a non-empty list of column names")
            ok = False
    else:
        ck.add(fpath, f"expected {{name: expression}} or a list of column names, got {kind(feats)}")
        ok = False
    for key in ("tree", "weight", "selection"):
        if merged.get(key) is not None and not (
            isinstance(merged[key], str) and merged[key].strip()
        ):
            ck.add(
                (*path, key) if key in spec else ("sample_defaults", key),
                f"expected a string, got {kind(merged[key])}",
            )
            ok = False
    if "allow_negative_weights" in merged and not isinstance(
        merged["allow_negative_weights"], bool
    ):
        ck.add((*path, "allow_negative_weights"), "expected true or false")
        ok = False
    if (
        merged.get("entry_stop") is not None
        and ck.integer((*path, "entry_stop"), merged["entry_stop"], 1) is None
    ):
        ok = False
    split_ok, eval_sample = _check_split(ck, path, spec, merged, defaults)
    if not (ok and split_ok):
        return None
    out = {k: v for k, v in merged.items() if k in FILE_KEYS and v is not None}
    out["path"] = str(resolved)
    if eval_sample is not None:
        out["eval_sample"] = eval_sample
    if isinstance(out["features"], Mapping):
        out["features"] = {str(k): str(v) for k, v in out["features"].items()}
    return out


def check_sample(
    ck: Checker, path: PathKey, value: Any, defaults: dict[str, Any]
) -> dict[str, Any] | None:
    """An inline sample spec ({demo: ...} or a file), resolved; None (problems added) if bad."""
    spec = ck.mapping(path, value, None, "a sample ({demo: {...}} or {path: ..., features: ...})")
    if spec is None:
        return None
    if "demo" in spec:
        if set(spec) != {"demo"}:
            for key in sorted(set(spec) - {"demo"}):
                ck.add((*path, key), "a demo sample has only the key 'demo'")
            return None
        return _check_demo(ck, path, spec["demo"])
    if "path" not in spec and "path" not in defaults:
        ck.add(
            path,
            f"a sample needs the key 'demo' or 'path'; got keys: {', '.join(sorted(spec)) or 'none'}",
        )
        return None
    return _check_file(ck, path, spec, defaults)


def sample_ref(
    ck: Checker,
    res: Resolved,
    path: PathKey,
    value: Any,
    defaults: dict[str, Any],
    named_bad: set[str],
) -> dict[str, Any] | None:
    """A sample given by name (a key of `samples`) or inline; recorded for the content checks."""
    spec: dict[str, Any] | None
    if isinstance(value, str):
        if value in res.samples:
            spec, path = res.samples[value], ("samples", value)  # problems go to its definition
        elif value not in named_bad:
            known = ", ".join(sorted(res.samples)) or "none defined"
            ck.add(path, f"unknown sample {value!r}; samples: {known}")
            return None
        else:
            return None
    else:
        spec = check_sample(ck, path, value, defaults)
    if spec is not None and all(p != path for p, _ in res.used_samples):
        res.used_samples.append((path, spec))
    return spec


def feature_names(spec: Mapping[str, Any]) -> tuple[str, ...]:
    if "demo" in spec:
        return DEMO_FEATURES
    feats = spec["features"]
    return tuple(feats) if isinstance(feats, Mapping) else tuple(str(f) for f in feats)
