"""Event samples and file loading: the public names, kept importable from one place.

Why a facade: callers outside the engine (backend, dashboard, tests, examples) import these
names from ``sbi_engine.data``. The code lives in modules with one job each:
`sbi_engine.sample` (the `Sample` container, validation, seeded splits, feature scaling),
`sbi_engine.readers` (Parquet, ROOT, HDF5 and NumPy files into a `Sample`) and
`sbi_engine.expressions` (the feature / weight / selection expression language). Code inside
sbi_engine imports from those modules directly. NumPy only: importing this does not import JAX.

Which events a job gets (sample specs, the train / evaluation roles) is `sbi_engine.sample_specs`.
"""

from __future__ import annotations

# _FORMATS / _SUFFIXES: the formats the loader knows (backend.analysis.spec_engine mirrors them)
from .readers import _FORMATS as _FORMATS
from .readers import _SUFFIXES as _SUFFIXES
from .readers import load_sample
from .sample import DataError, Sample, Scaler, Split, split_sample, validate_sample

__all__ = [
    "DataError",
    "Sample",
    "Split",
    "Scaler",
    "validate_sample",
    "split_sample",
    "load_sample",
]
