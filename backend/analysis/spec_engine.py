"""The two engine modules the static checks need, loaded without importing JAX.

Why: `sbi_engine.fit` and `sbi_engine.ratio` import JAX in their package `__init__`s (about two
seconds, and the dashboard must never import it). The coefficient parser
(`sbi_engine/fit/expr.py`) and `TrainConfig` (`sbi_engine/ratio/config.py`) only use the
standard library, so they are loaded straight from their files
(`backend.campaign_model.engine_module`): the same code the fit
and the training run, without the package import. A test checks the copies behave like the
package's own.
"""

from __future__ import annotations

from functools import lru_cache
from types import ModuleType

from backend.analysis.spec_models import FILE_KEYS, FORMATS, SPLIT_KEYS
from backend.campaign_model import TRAIN_CONFIG, DemoSample, engine_module

__all__ = ["DEMO_FEATURES", "DEMO_KEYS", "FILE_KEYS", "FORMATS", "SPLIT_KEYS", "SUFFIXES"]

# Feature names of the built-in demo samples (sbi_engine.demo.OBSERVABLES; a test keeps them in step).
DEMO_FEATURES: tuple[str, ...] = ("m4l", "cos_theta1", "cos_theta2", "phi")
DEMO_PROCESSES: tuple[str, ...] = ("S", "SBI", "B")
# The keys of a {"demo": {...}} sample spec and of a file sample spec, and the formats, are the
# models' (sbi_engine.sample_specs._DEMO_KEYS / _FILE_KEYS, sbi_engine.data._FORMATS: a test
# keeps them in step); the suffixes a format is told from.
DEMO_KEYS: tuple[str, ...] = tuple(DemoSample.model_fields)
SUFFIXES: tuple[str, ...] = (".root", ".parquet", ".pq", ".h5", ".hdf5", ".hdf", ".npz", ".npy")


@lru_cache(maxsize=1)
def expr_module() -> ModuleType:
    """sbi_engine/fit/expr.py: `parse_expression`, `ExpressionError`."""
    return engine_module("fit/expr.py", "_nsbi_analysis_expr")


def train_config_module() -> ModuleType:
    """sbi_engine/ratio/config.py: `TrainConfig` and its allowed values (the copy the training
    models of `backend.campaign_model` are derived from)."""
    return TRAIN_CONFIG
