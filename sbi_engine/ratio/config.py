"""Training configuration for density-ratio ensembles.

One frozen dataclass holds every knob, so a job spec, a checkpoint and an exported ensemble
can all carry the exact configuration as JSON and a resumed run can refuse a mismatching one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ACTIVATIONS = ("silu", "relu", "gelu", "tanh", "elu", "softplus")
OPTIMIZERS = ("adam", "nadam", "adamw")
SCHEDULES = ("cosine", "constant", "exponential")
STRATEGIES = ("auto", "vmap", "packs")
DTYPES = ("float32", "bfloat16")
AUTO_MIN_STEPS = 2000  # the automatic step budget's floor (max_steps None)


def _is_real(value: Any) -> bool:
    """An int or float, not a bool (True would pass as 1 otherwise)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines how an ensemble of ratio classifiers is trained.

    The defaults (3x64 SiLU, 2 members) train the demo problem in seconds on a laptop CPU.
    ``patience`` counts evaluations (every ``eval_every`` steps) without an improvement of the
    *smoothed* validation loss before a member stops: ``early_stopping_smoothing`` = a in [0, 1)
    is the factor of an exponential moving average over evaluations, s_t = a s_(t-1) + (1 - a)
    v_t (s_1 = v_1), so a single lucky or unlucky evaluation does not stop a member that is still
    learning (its noise is reduced by sqrt((1 - a) / (1 + a)), at a lag of about a / (1 - a)
    evaluations); 0 acts on the raw loss. The parameters kept are still those of the evaluation
    with the lowest raw validation loss. Checkpoints are taken at evaluation boundaries, once at least
    ``checkpoint_every`` steps have run since the last one.
    ``periodic_features`` names angle features (radians) fed to the network as (cos, sin).
    ``patience_epochs``: patience is never shorter than this many passes over the training
    events (`patience_evaluations`). Within a pass every batch is fresh, so a network cannot
    overfit yet, and on a weak ratio a flat validation loss only means that the gains are below
    its noise: on 3.5M events per class (`interference` at 10x) a patience of 10 evaluations
    ended members after 1-2 of their 10 passes with a too-flat ratio, and 1.7 passes still ended
    two of four members at 23 % and 40 % of the budget (log-ratio error 0.0050 against 0.0031
    with 3 passes; docs/validation.md, "Session 13"). Up to 100k simulated events per sample
    (every benchmark problem but `interference`) it changes nothing.
    ``eval_budget_share``: a validation pass may cost at most this share of the arithmetic of
    the training steps between two passes (a forward pass per validation event against forward
    and backward per training event, 3x): the evaluation interval is raised from
    ``eval_every`` to ``ceil(n_val / (3 batch_size share))`` steps when that is more
    (`eval_interval`). Why: at 1.4M validation events a pass every 100 steps costs about 4.6
    times the training itself (`nsbi bench train-loop`: 3.1x faster with the default). Up to
    153,600 validation events (every benchmark problem) it changes nothing.
    ``max_steps``: the step budget; None (default) = automatic: 2000 steps, or ``min_epochs``
    passes over the training events if that is more (`step_budget`). An explicit ``max_steps``
    is honoured exactly (smoke runs, deliberately short training).
    """

    hidden_layers: int = 3
    width: int = 64
    activation: str = "silu"
    members: int = 2
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    schedule: str = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    batch_size: int = 1024
    max_steps: int | None = None
    min_epochs: float = 10.0
    eval_every: int = 100
    eval_budget_share: float = 0.5
    patience: int = 10
    patience_epochs: float = 3.0
    val_fraction: float = 0.2
    seed: int = 0
    bootstrap: bool = True
    strategy: str = "auto"
    pack_size: int | None = None
    checkpoint_every: int = 500
    dtype: str = "float32"
    periodic_features: tuple[str, ...] = ()
    early_stopping_smoothing: float = 0.7

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"TrainConfig: {msg}")

        need(self.hidden_layers >= 1, f"hidden_layers must be >= 1, got {self.hidden_layers}")
        need(self.width >= 1, f"width must be >= 1, got {self.width}")
        need(self.activation in ACTIVATIONS, f"activation {self.activation!r} not in {ACTIVATIONS}")
        need(self.members >= 1, f"members must be >= 1, got {self.members}")
        need(self.optimizer in OPTIMIZERS, f"optimizer {self.optimizer!r} not in {OPTIMIZERS}")
        need(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        need(self.schedule in SCHEDULES, f"schedule {self.schedule!r} not in {SCHEDULES}")
        need(
            self.max_steps is None or self.max_steps >= 1,
            f"max_steps must be None (automatic) or >= 1, got {self.max_steps}",
        )
        need(
            0 <= self.warmup_steps < (AUTO_MIN_STEPS if self.max_steps is None else self.max_steps),
            f"warmup_steps must be in [0, max_steps), got {self.warmup_steps}",
        )
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(
            _is_real(self.min_epochs) and 0.0 <= self.min_epochs <= 1000.0,
            f"min_epochs must be in [0, 1000], got {self.min_epochs!r}",
        )
        need(self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}")
        need(
            _is_real(self.eval_budget_share) and 0.0 < self.eval_budget_share <= 1000.0,
            f"eval_budget_share must be in (0, 1000], got {self.eval_budget_share!r}",
        )
        need(self.patience >= 1, f"patience must be >= 1, got {self.patience}")
        need(
            _is_real(self.patience_epochs) and 0.0 <= self.patience_epochs <= 1000.0,
            f"patience_epochs must be in [0, 1000], got {self.patience_epochs!r}",
        )
        need(
            0.0 < self.val_fraction < 1.0,
            f"val_fraction must be in (0, 1), got {self.val_fraction}",
        )
        need(self.strategy in STRATEGIES, f"strategy {self.strategy!r} not in {STRATEGIES}")
        need(
            self.pack_size is None or self.pack_size >= 1,
            f"pack_size must be None or >= 1, got {self.pack_size}",
        )
        need(
            self.checkpoint_every >= 1,
            f"checkpoint_every must be >= 1, got {self.checkpoint_every}",
        )
        need(self.dtype in DTYPES, f"dtype {self.dtype!r} not in {DTYPES}")
        need(
            _is_real(self.early_stopping_smoothing) and 0.0 <= self.early_stopping_smoothing < 1.0,
            f"early_stopping_smoothing must be in [0, 1), got {self.early_stopping_smoothing!r}",
        )
        if isinstance(self.periodic_features, str):
            raise ValueError(
                "TrainConfig: periodic_features must be a list of feature names, not a string"
            )
        object.__setattr__(self, "periodic_features", tuple(str(n) for n in self.periodic_features))

    def step_budget(self, n_train: int) -> int:
        """Steps to run on ``n_train`` training events: ``max_steps`` when set, else
        ``AUTO_MIN_STEPS`` raised so that the training set is seen ``min_epochs`` times.

        Why: a fixed 2000 steps of 1024 events is 10 passes over 100k events but two over 500k,
        and a ratio that differs from 1 by a few per cent (interference) is then still mostly
        optimiser noise (measured on the `interference` benchmark, docs/validation.md)."""
        if self.max_steps is not None:
            return self.max_steps
        return max(AUTO_MIN_STEPS, math.ceil(self.min_epochs * n_train / self.batch_size))

    def eval_interval(self, n_val: int) -> int:
        """Steps between validation passes over ``n_val`` events: ``eval_every``, raised so that
        a pass costs at most ``eval_budget_share`` of the steps' arithmetic."""
        capped = n_val / (3.0 * self.batch_size * self.eval_budget_share)
        return max(self.eval_every, math.ceil(capped))

    def patience_evaluations(self, n_train: int, n_val: int = 0) -> int:
        """Evaluations without improvement before a member stops on ``n_train`` training events
        (``n_val`` validation events set the interval): ``patience``, raised to cover
        ``patience_epochs`` passes over the training events."""
        steps = self.patience_epochs * n_train / self.batch_size
        return max(self.patience, math.ceil(steps / self.eval_interval(n_val)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of all fields (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["periodic_features"] = list(self.periodic_features)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys are an error naming them and the allowed ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"TrainConfig: unknown key(s) {unknown}; allowed keys are {sorted(known)}"
            )
        return cls(**dict(data))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
