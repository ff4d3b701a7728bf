"""Density-ratio ensembles: r(x) = p_num(x) / p_den(x) from classifier ensembles.

Train with ``train_ensemble(numerator, denominator, TrainConfig(...))``, evaluate with
``Ensemble.log_ratio``, check with ``diagnostics``, and share one file via ``Ensemble.save``.
"""

from .callbacks import StopAfter, TrainCallbacks
from .checkpoint import Checkpointer, DirectoryCheckpointer, MemoryCheckpointer
from .config import TrainConfig
from .diagnostics import CalibrationCurve, Closure, Diagnostics, HistogramCalibration, diagnostics
from .ensemble import AGGREGATES, Ensemble
from .prepare import RatioDataError
from .strategy import Layout, choose_layout
from .train import CheckpointMismatch, TrainResult, train_ensemble

__all__ = [
    "AGGREGATES",
    "CheckpointMismatch",
    "Checkpointer",
    "DirectoryCheckpointer",
    "Ensemble",
    "Layout",
    "MemoryCheckpointer",
    "RatioDataError",
    "StopAfter",
    "TrainCallbacks",
    "TrainConfig",
    "TrainResult",
    "choose_layout",
    "diagnostics",
    "Diagnostics",
    "Closure",
    "CalibrationCurve",
    "HistogramCalibration",
    "train_ensemble",
]
