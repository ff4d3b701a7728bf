"""The rules of samples that the model (`spec_models`) cannot state: which keys a file sample
gets from `sample_defaults`, that its file exists, its format, the features it ends up with,
and how its train / eval split keys combine; and references to named samples.

Every value read here has passed the model (see `Checker.ok`). A file sample's path is
resolved relative to the analysis file; an `eval_sample` is resolved like a file sample of its
own (sample_defaults apply to it too, except the split keys; see
`sbi_engine.sample_specs.load_sample_spec`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from backend.analysis.spec_checker import Checker, Resolved
from backend.analysis.spec_engine import DEMO_FEATURES, FORMATS, SUFFIXES
from backend.analysis.spec_models import FILE_KEYS, SPLIT_KEYS
from backend.analysis.spec_yaml import PathKey


def _resolve_path(text: str, base_dir: Path) -> Path:
    p = Path(text.removeprefix("file://")).expanduser()
    return p if p.is_absolute() else (base_dir / p).resolve()


def _split_clash(ck: Checker, path: PathKey, spec: Mapping[str, Any]) -> list[str]:
    """Split keys given beside an eval_sample (reported even when other keys are broken: the
    clash depends only on which keys are there)."""
    clash = [k for k in ("eval_fraction", "split_by") if spec.get(k) is not None]
    for key in clash:
        ck.add(
            (*path, key),
            f"{key!r} cannot be combined with 'eval_sample' (the eval_sample is the "
            "evaluation part; the whole sample is the training part)",
        )
    return clash


def _check_split(
    ck: Checker,
    path: PathKey,
    spec: dict[str, Any],
    merged: dict[str, Any],
    defaults: dict[str, Any],
) -> tuple[bool, dict[str, Any] | None]:
    """The split keys of a file sample: (ok, resolved eval_sample or None)."""
    if "eval_sample" not in spec:
        return True, None
    clash = _split_clash(ck, path, spec)
    epath = (*path, "eval_sample")
    resolved = _check_file(
        ck, epath, spec["eval_sample"], {k: v for k, v in defaults.items() if k not in SPLIT_KEYS}
    )
    if resolved is None:
        return False, None
    main_features = merged.get("features")
    if main_features is not None and feature_names(resolved) != feature_names(
        {"features": main_features}
    ):
        ck.add(
            (*epath, "features") if "features" in spec["eval_sample"] else epath,
            f"the eval_sample's features {list(feature_names(resolved))} differ from the sample's "
            f"{list(feature_names({'features': main_features}))}",
        )
        return False, None
    return not clash, resolved


def _check_file(
    ck: Checker, path: PathKey, spec: dict[str, Any], defaults: dict[str, Any]
) -> dict[str, Any] | None:
    if "eval_sample" in spec:  # the sample's own eval_sample replaces a default split
        defaults = {k: v for k, v in defaults.items() if k not in SPLIT_KEYS}
    merged = {k: v for k, v in {**defaults, **spec}.items() if v is not None}  # null: removed
    ok = True
    if "path" not in merged:
        ck.add(
            path,
            f"a sample needs the key 'demo' or 'path'; got keys: {', '.join(sorted(spec)) or 'none'}",
        )
        return None
    text = merged["path"]
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
    if "format" not in merged and resolved.suffix.lower() not in SUFFIXES:
        ck.add(
            (*path, "path"),
            f"cannot tell the format from the suffix {resolved.suffix!r}; "
            f"give format: (one of {', '.join(FORMATS)})",
        )
        ok = False
    if "features" not in merged:
        ck.add(
            path,
            "missing required key 'features' (here or in sample_defaults): {name: expression} "
            "or a list of columns",
        )
        ok = False
    split_ok, eval_sample = _check_split(ck, path, spec, merged, defaults)
    if not (ok and split_ok):
        return None
    out = {k: v for k, v in merged.items() if k in FILE_KEYS}
    out["path"] = str(resolved)
    if eval_sample is not None:
        out["eval_sample"] = eval_sample
    if isinstance(out["features"], Mapping):
        out["features"] = {str(k): str(v) for k, v in out["features"].items()}
    return out


def check_sample(
    ck: Checker, path: PathKey, value: Any, defaults: dict[str, Any]
) -> dict[str, Any] | None:
    """An inline sample spec ({demo: ...} or a file), resolved; None if it is not sound (the
    model's problems, or those added here)."""
    if not ck.ok(path):
        if isinstance(value, Mapping) and "eval_sample" in value:
            _split_clash(ck, path, value)
        return None
    if "demo" in value:
        return {"demo": dict(value["demo"])}
    return _check_file(ck, path, dict(value), defaults)


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
    if not ck.ok(path):
        return None
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


_SAME_EVENTS_KEYS = ("path", "format", "tree", "selection", "entry_stop", "features")


def check_reweighted_splits(ck: Checker, samples: Mapping[str, dict[str, Any]]) -> None:
    """Samples that read the same events (file, tree, selection, features) with different
    weights -- hypotheses simulated by reweighting -- must split them alike: the row hash that
    splits a sample without `split_by` includes the weight, so an event could be a training
    event of one and an evaluation event of the other. Both need the same `split_by` (and
    `eval_fraction`); then a ratio between them also trains paired."""
    groups: dict[str, list[str]] = {}
    for name, spec in samples.items():
        if "demo" in spec or "eval_sample" in spec:
            continue
        key = repr([spec.get(k) for k in _SAME_EVENTS_KEYS])
        groups.setdefault(key, []).append(name)
    for names in groups.values():
        first = samples[names[0]]
        for name in names[1:]:
            spec = samples[name]
            if spec.get("weight") == first.get("weight"):
                continue
            split = [(s.get("split_by"), s.get("eval_fraction")) for s in (first, spec)]
            if split[0] == split[1] and split[0][0] is not None:
                continue
            ck.add(
                ("samples", name),
                f"reads the same events as sample {names[0]!r} (same file, tree, selection and "
                f"features) with another weight ({spec.get('weight')!r} against "
                f"{first.get('weight')!r}), but they are not split by the same `split_by`: "
                "without it the split hashes each event with its weight, so an event could "
                "train one sample and evaluate the other; give both `split_by: <event number>` "
                "(and the same eval_fraction)",
            )


def feature_names(spec: Mapping[str, Any]) -> tuple[str, ...]:
    if "demo" in spec:
        return DEMO_FEATURES
    feats = spec["features"]
    return tuple(feats) if isinstance(feats, Mapping) else tuple(str(f) for f in feats)
