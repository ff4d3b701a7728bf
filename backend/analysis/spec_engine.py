"""The two engine modules the static checks need, loaded without importing JAX.

Why: `sbi_engine.fit` and `sbi_engine.ratio` import JAX in their package `__init__`s (about two
seconds, and the dashboard must never import it). The coefficient parser
(`sbi_engine/fit/expr.py`) and `TrainConfig` (`sbi_engine/ratio/config.py`) only use the
standard library, so they are loaded here straight from their files: the same code the fit
and the training run, without the package import. A test checks the copies behave like the
package's own.
"""

from __future__ import annotations

import importlib.util
import sys
from functools import lru_cache
from pathlib import Path
from types import ModuleType

# find_spec of a top-level package locates it without running its __init__.
_ENGINE_SPEC = importlib.util.find_spec("sbi_engine")
if _ENGINE_SPEC is None or _ENGINE_SPEC.submodule_search_locations is None:
    raise ModuleNotFoundError("sbi_engine is not importable as a package")
_ENGINE = Path(list(_ENGINE_SPEC.submodule_search_locations)[0])

# Feature names of the built-in demo samples (sbi_engine.demo.OBSERVABLES; a test keeps them in step).
DEMO_FEATURES: tuple[str, ...] = ("m4l", "cos_theta1", "cos_theta2", "phi")
DEMO_PROCESSES: tuple[str, ...] = ("S", "SBI", "B")
# Keys of a {"demo": {...}} sample spec (sbi_engine.sample_specs._DEMO_KEYS; a test keeps them in step).
DEMO_KEYS: tuple[str, ...] = (
    "process",
    "n",
    "seed",
    "alpha",
    "n_nuisances",
    "luminosity",
    "weighted",
    "mu",
    "poisson",
)
# Keys of a file sample spec (sbi_engine.sample_specs._FILE_KEYS) and the formats its loader knows.
FILE_KEYS: tuple[str, ...] = (
    "path",
    "format",
    "tree",
    "features",
    "weight",
    "selection",
    "allow_negative_weights",
    "columns",
    "entry_stop",
    "eval_fraction",
    "eval_sample",
    "split_by",
)
# The keys that choose a file sample's train / eval split (sbi_engine.sample_specs._SPLIT_KEYS); an
# eval_sample is a whole file of its own, so it has none of them and is no sample default.
SPLIT_KEYS: tuple[str, ...] = ("eval_fraction", "eval_sample", "split_by")
FORMATS: tuple[str, ...] = ("root", "parquet", "pq", "hdf5", "h5", "hdf", "numpy", "npz", "npy")
SUFFIXES: tuple[str, ...] = (".root", ".parquet", ".pq", ".h5", ".hdf5", ".hdf", ".npz", ".npy")


def _load(relative: str, name: str) -> ModuleType:
    path = _ENGINE / relative
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a broken install
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look the module up while the class is built
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


@lru_cache(maxsize=1)
def expr_module() -> ModuleType:
    """sbi_engine/fit/expr.py: `parse_expression`, `ExpressionError`."""
    return _load("fit/expr.py", "_nsbi_analysis_expr")


@lru_cache(maxsize=1)
def train_config_module() -> ModuleType:
    """sbi_engine/ratio/config.py: `TrainConfig` and its allowed values."""
    return _load("ratio/config.py", "_nsbi_analysis_train_config")
