"""Per-member learned ratios of one ratio task on the fit's rows, and how noisy they are.

Why a module of its own: the fit needs more than the aggregated ratio. The member log ratios
give the NN-training component of the error (refits with one member's ratios per variant), and
their spread against the variation of the log ratio tells whether network noise is small next
to the effect the ratio must carry (noise in a small effect reads as information and shrinks
intervals; see shared STATISTICS notes and docs/validation.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

NOISE_TO_SIGNAL_LIMIT = (
    0.2  # estimated log-ratio error / spread of the log ratio above which a task needs review
)
SHAPE_RESOLUTION = (
    1.5  # a shape effect is kept when its spread exceeds this many times the network noise
)


EARLY_STOP_SHARE = 0.5  # best steps all before this share of the budget: training stopped early


class LearnedRatioError(ValueError):
    """Ensemble files of a ratio task that cannot be used (missing, or disagreeing features)."""


@dataclass(frozen=True, eq=False)
class TaskRatios:
    """Member log ratios of one task on a set of rows, each member normalised on the denominator.

    ``members`` (M, n) float64: log r_j(x_i) - log E_den[r_j]; ``nominal`` (n,): log of the mean
    member ratio, normalised the same way (what the fit uses).
    """

    task: str
    members: np.ndarray
    nominal: np.ndarray
    bootstrapped: bool | None = None  # members trained on bootstrap replicas (None: not recorded)
    best_steps: tuple[int, ...] = ()  # each member's best-validation step (as recorded)
    step_budget: int | None = None  # the training's step budget (None: not recorded)
    # trained on the same events with two weightings (None: not recorded)
    paired: bool | None = None

    def stopped_early(self, share: float = EARLY_STOP_SHARE) -> bool:
        """Whether every member's best step came before ``share`` of its step budget.

        Why: early stopping on a validation loss whose gains are below its noise ends a weak
        ratio's training long before the schedule has used its events; on `interference` with
        3.5M events per class it stopped at 6,000 of 54,700 steps with twice the error of the
        whole schedule (docs/validation.md, "Session 12"). More events do not help then.
        """
        return bool(
            self.best_steps and self.step_budget and max(self.best_steps) < share * self.step_budget
        )

    @property
    def n_members(self) -> int:
        return int(self.members.shape[0])

    def member_ratio(self, j: int) -> np.ndarray:
        """r of member ``j`` (cycled when a variant index exceeds this task's member count)."""
        return np.exp(self.members[j % self.n_members])

    def noise(
        self, rows: np.ndarray | slice = slice(None), weights: np.ndarray | None = None
    ) -> float:
        """RMS over rows (weighted by |weights| if given) of the member standard deviation of
        log r: the estimated log-ratio error.

        With bootstrap members this is the error of one training on a fresh sample, which is of
        the size of the ensemble's shared finite-sample error (members alone do not remove it).
        """
        if self.n_members < 2:
            return float("nan")
        var = np.var(self.members[:, rows], axis=0, ddof=1)
        if weights is None:
            return float(np.sqrt(np.mean(var)))
        w = np.abs(np.asarray(weights, dtype=np.float64))
        return float(np.sqrt(np.sum(w * var) / np.sum(w))) if w.sum() > 0 else float("nan")

    def signal(
        self,
        rows: np.ndarray | slice = slice(None),
        weights: np.ndarray | None = None,
        confounders: np.ndarray | None = None,
    ) -> float:
        """Weighted standard deviation over rows of the nominal log ratio: the variation it carries.

        ``confounders`` (n_rows, k): directions the fit can also move (log shape ratios of the
        nuisances); the log ratio is first residualised on them by weighted least squares, so
        the result is the variation only this ratio carries. Why: on the `interference`
        benchmark SBI/B's spread is 0.019 but 0.0096 once the background-slope shape is taken
        out, and a network error of 0.0071 against that residual shrank the mu interval by 40 %.
        """
        x = self.nominal[rows]
        w = np.ones_like(x) if weights is None else np.abs(np.asarray(weights, dtype=np.float64))
        if w.sum() <= 0:
            return float("nan")
        if confounders is not None and confounders.size:
            design = np.column_stack([np.ones_like(x), confounders])
            sw = np.sqrt(w)
            coef, *_ = np.linalg.lstsq(design * sw[:, None], x * sw, rcond=None)
            x = x - design @ coef
        mean = np.sum(w * x) / np.sum(w)
        return float(np.sqrt(np.sum(w * (x - mean) ** 2) / np.sum(w)))


def _member_log_ratios(ensembles: Sequence[Any], x: np.ndarray) -> np.ndarray:
    """(M, n) member log ratios over all ensembles (packs) of a task."""
    return np.concatenate(
        [np.asarray(e.member_log_ratios(x), dtype=np.float64) for e in ensembles], axis=0
    )


def _every_pack(ensembles: Sequence[Any], section: str, key: str) -> bool | None:
    """Whether every pack's metadata says ``section.key`` is true (None if a pack does not say,
    as ensembles trained before the key existed)."""
    flags = [e.metadata.get(section, {}).get(key) for e in ensembles]
    return None if any(f is None for f in flags) else all(bool(f) for f in flags)


def _training_use(ensembles: Sequence[Any]) -> tuple[tuple[int, ...], int | None]:
    """(every member's best-validation step, the step budget) from the ensembles' metadata;
    ((), None) when a pack does not record them or the packs disagree on the budget."""
    steps: list[int] = []
    budgets = set()
    for e in ensembles:
        members = e.metadata.get("training", {}).get("members") or []
        budget = e.metadata.get("config", {}).get("max_steps")
        if not members or budget is None:
            return (), None
        steps.extend(int(m["best_step"]) for m in members)
        budgets.add(int(budget))
    return (tuple(steps), budgets.pop()) if len(budgets) == 1 else ((), None)


def _log_mean_exp(a: np.ndarray, axis: int = 0) -> np.ndarray:
    top = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.mean(np.exp(a - top), axis=axis))


def task_ratios(
    task: str,
    paths: Sequence[str],
    x: np.ndarray,
    denominator_x: np.ndarray,
    denominator_w: np.ndarray,
) -> TaskRatios:
    """Evaluate a task's members on ``x``, each normalised so that E_den[r_j] = 1 on the
    denominator's evaluation events (a density ratio integrates to one against its denominator;
    the extended likelihood turns a miss into a bias of the POI)."""
    from .ratio import Ensemble

    if not paths:
        raise LearnedRatioError(f"ratio task {task!r}: no ensemble files")
    ensembles = [Ensemble.load(p) for p in paths]
    w = np.asarray(denominator_w, dtype=np.float64)
    on_den = _member_log_ratios(ensembles, denominator_x)
    member_shift = np.log(np.sum(w * np.exp(on_den), axis=1) / np.sum(w))  # (M,)
    raw = _member_log_ratios(ensembles, x)
    members = raw - member_shift[:, None]
    nominal_raw = _log_mean_exp(raw)
    nominal_shift = float(np.log(np.sum(w * np.exp(_log_mean_exp(on_den))) / np.sum(w)))
    best_steps, budget = _training_use(ensembles)
    return TaskRatios(
        task,
        members,
        nominal_raw - nominal_shift,
        _every_pack(ensembles, "config", "bootstrap"),  # bootstrap members
        best_steps,
        budget,
        _every_pack(ensembles, "split", "paired"),  # sbi_engine.ratio.prepare
    )
