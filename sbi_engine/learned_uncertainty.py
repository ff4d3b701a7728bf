"""Error components that a fit from learned ratios owes its user, and the checks on its ratios.

Why: a Hesse error from learned ratios only counts the data's statistics (and the modelled
systematics). Two more sources are real and were measured to matter (docs/validation.md):

* **NN training** (``nn``): the ratios come from a finite training sample. With bootstrap
  members (the default), each member is one training on a resampled sample, so the spread of
  mu-hat over refits with one member's ratios at a time estimates that error, shared part
  included. (Members trained on the same events would underestimate it 2-3x; the component is
  flagged when the ensembles were not bootstrapped.)
* **Simulation statistics** (``sim``): the normalisation sample is finite and its noise enters
  q multiplied by 2 nu. Refits with Poisson(1) bootstrap multipliers on its weights give it.

Both refit the compiled Newton fit with other per-event arrays (`sbi_engine.fit.variations`).
Whether a component enters the total is the user's choice (``options.uncertainty``: "quadrature"
adds it in quadrature to the Hesse error; "report" only reports it).

Checks (records for `sbi_engine.result_checks`): the fit converged; noise relative to signal per
ratio task; the normalisation sample is large enough (sim component small next to the stat error);
and the simulated-Asimov closure: a fit to the simulation's own expectation at mu_true (signed
coefficient weights on evaluation events) returns mu_true.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .learned_ratios import NOISE_TO_SIGNAL_LIMIT

DEFAULT_NN_VARIANTS = 16  # refits with one member's ratios (cycled over members) at most
DEFAULT_SIM_VARIANTS = 20  # Poisson bootstrap replicas of the normalisation sample
SIM_TO_STAT_LIMIT = (
    0.5  # sim-statistics component above half the stat error: normalisation sample too small
)
CLOSURE_LIMIT = (
    0.2  # simulated-Asimov closure: |mu-hat - mu| within 0.2 sigma (+ 2 x its own sim error)
)
CLOSURE_POINTS = (
    0.5,
    1.0,
    2.0,
)  # POI values of the simulated-Asimov closure fits (besides mu_true)


@dataclass(frozen=True)
class Components:
    """mu's error components: Hesse (data stat + modelled systematics), NN training, simulation
    statistics, and the total with the user's choice of what enters it."""

    hesse: float
    nn: float | None
    nn_se: float | None
    sim: float | None
    sim_se: float | None
    include: tuple[str, ...]
    nn_members: int = 0
    bootstrap: bool | None = None

    @property
    def total(self) -> float:
        parts = [self.hesse] + [getattr(self, c) or 0.0 for c in self.include]
        return float(np.sqrt(np.sum(np.square(parts))))

    def to_dict(self) -> dict[str, Any]:
        return {
            "hesse": self.hesse,
            "nn": self.nn,
            "nn_se": self.nn_se,
            "sim": self.sim,
            "sim_se": self.sim_se,
            "total": self.total,
            "included": list(self.include),
            "nn_variants": self.nn_members,
            "nn_bootstrap": self.bootstrap,
            "method": {
                "nn": "spread of mu-hat over refits with one bootstrap member's ratios at a time",
                "sim": "spread of mu-hat over Poisson(1) bootstrap replicas of the normalisation sample",
                "total": "Hesse error with the included components added in quadrature",
            },
        }


def _spread(fits: Any, name: str) -> tuple[float, float]:
    theta = np.asarray(fits.theta)[np.asarray(fits.converged, dtype=bool)]
    j = list(fits.names).index(name)
    vals = theta[:, j]
    if len(vals) < 2:
        return float("nan"), float("nan")
    sd = float(np.std(vals, ddof=1))
    return sd, sd / np.sqrt(2.0 * (len(vals) - 1))


def nn_variants(lf: Any, n: int = DEFAULT_NN_VARIANTS) -> list[Any]:
    """One variant per member index j: every process ratio and kept shape effect from member j."""
    from .fit.variations import Variant

    m = max((r.n_members for r in lf.ratios.values()), default=0)
    out = []
    for j in range(min(m, n)):
        ratios = {p: lf.ratios[t].member_ratio(j) for p, t in lf.process_task.items()}
        shapes = {
            key: (lf.ratios[u].member_ratio(j), lf.ratios[d].member_ratio(j))
            for key, (u, d) in lf.shape_tasks.items()
        }
        out.append(Variant(ratios=ratios, shapes=shapes))
    return out


def renormalisation_variants(lf: Any, n: int, seed: int) -> list[Any]:
    """Poisson(1) bootstrap replicas of the normalisation sample for a model without shape
    effects: there the sample enters only through the ratio normalisation E_ref[r_c] = 1, so
    each replica rescales every process ratio by its normalisation on the resampled events."""
    from .fit.variations import Variant

    ws = lf.workspace
    v = np.asarray(ws.data.norm_weights, dtype=np.float64)[lf.norm_rows]
    rng = np.random.default_rng(seed)
    ratios = {
        p.name: np.asarray(p.ratio, dtype=np.float64)
        for p in ws.processes
        if p.name in lf.process_task
    }
    base = {name: np.sum(v * r[lf.norm_rows]) / np.sum(v) for name, r in ratios.items()}
    out = []
    for j in range(n):
        pv = v * rng.poisson(1.0, v.size)
        out.append(
            Variant(
                ratios={
                    name: r * base[name] / (np.sum(pv * r[lf.norm_rows]) / np.sum(pv))
                    for name, r in ratios.items()
                },
                label=f"renormalisation bootstrap {j}",
            )
        )
    return out


def components(
    lf: Any,
    result: Any,
    *,
    poi: str = "mu",
    n_nn: int = DEFAULT_NN_VARIANTS,
    n_sim: int = DEFAULT_SIM_VARIANTS,
    seed: int = 0,
    include: tuple[str, ...] = ("nn", "sim"),
    bootstrap: bool | None = None,
) -> Components:
    """The NN-training and simulation-statistics components of ``poi`` by refits."""
    from .fit.variations import bootstrap_norm_variants, refit_variants

    ws = lf.workspace
    nn = nn_se = sim = sim_se = None
    variants = nn_variants(lf, n_nn)
    if len(variants) >= 2:
        nn, nn_se = _spread(refit_variants(ws, variants, init=result), poi)
    if n_sim >= 2 and ws.data.norm_weights is not None:
        from .fit import model_for

        boot = (
            bootstrap_norm_variants(ws, n_sim, seed)
            if model_for(ws).has_norm
            else renormalisation_variants(lf, n_sim, seed)
        )
        sim, sim_se = _spread(refit_variants(ws, boot, init=result), poi)
    return Components(
        float(result.errors[poi]),
        nn,
        nn_se,
        sim,
        sim_se,
        tuple(c for c in include if c in ("nn", "sim")),
        len(variants),
        bootstrap,
    )


def check(
    name: str,
    value: float | None,
    threshold: float,
    passed: bool,
    message: str,
    task: str | None = None,
    direction: str = "below",
    error: float | None = None,
) -> dict:
    """One check record (the shape `sbi_engine.result_checks` reads); value None when unknown.
    ``direction`` "below": the value must be at most the threshold; "above": at least.
    ``error``: the value's own uncertainty, where the check estimates one."""
    shown = float(value) if value is not None and np.isfinite(value) else None
    extra = {"error": float(error)} if error is not None and np.isfinite(error) else {}
    return {
        "name": name,
        "task": task,
        "value": shown,
        "threshold": float(threshold),
        "passed": bool(passed),
        "message": message,
        "direction": direction,
        **extra,
    }


def nuisance_shape_directions(workspace: Any, rows: np.ndarray) -> np.ndarray:
    """(len(rows), k): log(up / down) of every nuisance shape effect on ``rows`` (k may be 0)."""
    from .noise_shrinkage import shape_directions

    cols = [
        np.log(np.asarray(e.shape[0], dtype=np.float64)[rows])
        - np.log(np.asarray(e.shape[1], dtype=np.float64)[rows])
        for nu in workspace.nuisances
        for e in nu.effects.values()
        if e.shape is not None
    ]
    return shape_directions(cols, len(rows))


def ratio_checks(lf: Any) -> list[dict]:
    """Noise relative to signal for every process ratio task, on the data rows (weights |w|).

    The estimated log-ratio error (member spread) against the spread of the log ratio over the
    data that the nuisance shapes cannot mimic (`TaskRatios.signal` with confounders): only
    that part measures mu, so a large value means network noise can read as information about
    mu and shrink its interval; the remedy is more training events, steps or members.
    """
    from .learned_ratios import NOISE_TO_SIGNAL_LIMIT as limit

    rows = np.asarray(lf.data_rows)
    w = np.asarray(lf.workspace.data.weights, dtype=np.float64)[rows]
    shapes = nuisance_shape_directions(lf.workspace, rows)
    raw = getattr(lf, "unshrunk", None) or {}  # judged before the noise shrinkage
    factors = {s.task: s.factor for s in getattr(lf, "shrinkage", ())}
    out = []
    for _proc, task in sorted(lf.process_task.items()):
        r = raw.get(task, lf.ratios[task])
        noise = r.noise(rows)
        whole, signal = r.signal(rows, w), r.signal(rows, w, shapes)
        value = noise / signal if signal > 0 and np.isfinite(noise) else float("nan")
        ok = bool(np.isfinite(value) and value <= limit)
        msg = (
            f"log-ratio error {noise:.3g} against the log-ratio spread the nuisance shapes "
            f"cannot mimic {signal:.3g} on the data (whole spread {whole:.3g}; noise/signal "
            f"{value:.2f}, limit {limit})"
        )
        if task in factors:
            msg += f"; its noisy part shrunk by lambda = {factors[task]:.3f} before the fit"
        if not ok:
            msg += (
                "; unknown: the ensemble has one member"
                if not np.isfinite(value)
                else "; network noise this large reads as information about mu: train on more events, "
                "longer, or with more bootstrap members"
            )
            if np.isfinite(value) and r.paired is False:
                msg += (
                    "; or, where the generator can weight the reference's events to this "
                    "hypothesis, train on those (paired training: docs/analysis.md, hypotheses "
                    "simulated by reweighting)"
                )
            if np.isfinite(value) and r.stopped_early():
                msg += (
                    f"; early stopping ended it: the members' best steps are "
                    f"{min(r.best_steps)}-{max(r.best_steps)} of a {r.step_budget}-step budget, "
                    "so it never used its events: raise the training's patience (or patience_epochs, "
                    "passes over the events) first"
                )
        out.append(check("noise_to_signal", value, limit, ok, msg, task))
    for d in lf.shape_decisions:
        out.append(
            check(
                "shape_resolution",
                d.signal / d.noise if d.noise > 0 else float("nan"),
                2.0,
                True,
                f"{d.nuisance} on {d.process}: learned shape spread {d.signal:.3g}, noise {d.noise:.3g}: "
                f"{d.action}",
                f"{d.nuisance}:{d.process}",
            )
        )
    return out


def closure_check(
    sim: Any,
    build: Callable[[Any], Any],
    mu_true: float,
    sim_component: float | None,
    points: tuple[float, ...] = CLOSURE_POINTS,
    poi: str = "mu",
) -> dict:
    """Fit the simulation's own Asimov expectation with the learned ratios at mu_true and at
    ``points`` (values of the primary POI ``poi``; any other POI stays at its initial value in
    ``sim.pois``); the worst |mu-hat - mu| / sigma is the check's value.

    ``sim``: the simulated Asimov events (`fit_jobs.SimulatedAsimov`); ``build(data)``: the
    job's `LearnedFit` with ``data`` as its data rows (the caller knows the job spec).

    Not circular: the data weights come from the simulation and the coefficients, not from the
    ratios, so wrong ratios pull mu-hat away from the truth. Several POI values because a ratio
    can be right where its process is small and wrong where it dominates. One workspace (all
    evaluation events) serves every point: only the weights change.
    """
    from .fit import fit, model_for

    lf = build(sim.at(mu_true))
    model = model_for(lf.workspace)
    n_data = len(sim.events)
    worst: tuple[float, float | None] = (0.0, None)  # (|pull|, sigma) of the worst point
    rows: list[str] = []
    for mu in dict.fromkeys((mu_true, *points)):
        w = np.zeros(lf.workspace.n_events)
        w[:n_data] = sim.weights(mu)
        res = fit(model, weights=w, init={poi: mu})
        sigma = float(res.errors[poi])
        value = float(res.values[poi])
        pull = (value - mu) / sigma if sigma > 0 and res.converged else float("inf")
        rows.append(f"{poi}={mu:g}: {value:.4g} +- {sigma:.3g} ({pull:+.2f} sigma)")
        if abs(pull) >= worst[0]:
            worst = (abs(pull), sigma)
    allowed = CLOSURE_LIMIT + 2.0 * ((sim_component or 0.0) / worst[1] if worst[1] else 0.0)
    ok = bool(np.isfinite(worst[0]) and worst[0] <= allowed)
    msg = (
        f"fits to the simulation's Asimov expectation: {'; '.join(rows)}; worst {worst[0]:.2f} sigma "
        f"(allowed {allowed:.2f})"
    )
    return check("asimov_closure", worst[0], allowed, ok, msg)


def fit_checks(result: Any, comps: Components) -> list[dict]:
    """Convergence and the size of the simulation-statistics component."""
    out = [
        check(
            "converged",
            1.0 if result.converged else 0.0,
            1.0,
            bool(result.converged),
            "the fit converged"
            if result.converged
            else f"the fit did not converge: {result.message}",
            direction="above",
        )
    ]
    if comps.sim is not None and comps.hesse > 0:
        ratio = comps.sim / comps.hesse
        ok = ratio <= SIM_TO_STAT_LIMIT
        out.append(
            check(
                "norm_sample_size",
                ratio,
                SIM_TO_STAT_LIMIT,
                ok,
                f"simulation-statistics error {comps.sim:.3g} is {ratio:.2f} of the Hesse error"
                + (
                    ""
                    if ok
                    else "; the normalisation sample is too small for the expected yield: "
                    "give more reference simulation (evaluation part)"
                ),
            )
        )
    if comps.bootstrap is False and comps.nn is not None:
        out.append(
            check(
                "nn_bootstrap",
                0.0,
                1.0,
                False,
                "the ensembles were not bootstrapped: members share their training events, so the NN "
                "component underestimates the training-sample error (set training bootstrap: true)",
            )
        )
    return out


__all__ = [
    "Components",
    "components",
    "nn_variants",
    "ratio_checks",
    "closure_check",
    "fit_checks",
    "check",
    "NOISE_TO_SIGNAL_LIMIT",
]
