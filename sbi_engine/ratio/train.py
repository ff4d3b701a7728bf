"""``train_ensemble``: the training loop around the compiled steps.

Members train in packs (one pack = all members when the layout is "vmap"). Each pack runs
intervals of ``eval_every`` steps (more on large validation sets: ``TrainConfig.eval_interval``)
as one compiled program, then evaluates the validation loss, keeps each member's best
parameters, and checkpoints when due. A checkpoint holds the whole loop state (parameters,
optimiser state, best copies, patience counters, RNG keys, finished packs and history), so a run
killed and resumed ends with the same parameters as an uninterrupted one.

Early stopping acts on a smoothed validation loss (an exponential moving average over
evaluations, ``TrainConfig.early_stopping_smoothing``): the per-member validation loss of a
small or heavily weighted validation set is noisy, and a rule on the raw value stops members
on a lucky evaluation while they are still learning (networks stopped that way learned a too
flat ratio). The moving average is part of the checkpoint; a checkpoint written before it
existed is resumed by recomputing it from the stored history, which holds every raw value.

Keeping the device busy: the training and validation events are put on the device once per
run and each pack's bootstrap weights once per pack (``_to_device``, the only host-to-device
copies); an interval of ``eval_every`` steps is one compiled ``lax.scan`` that draws each
step's batch on the device (random indices into the resident arrays), so no step reads the
host. Between intervals the host sends the step counter and the smoothed-loss flags (a few
bytes) and reads back the validation losses. ``TrainConfig.dtype="bfloat16"`` is mixed
precision: matmuls and activations in bfloat16, parameters, Adam moments, logits and loss in
float32 (``sbi_engine.ratio.model``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from ..precision import enable_float64
from .callbacks import TrainCallbacks
from .checkpoint import Checkpointer
from .config import TrainConfig
from .ensemble import FORMAT, Ensemble
from .model import build_model, init_stacked
from .prepare import PreparedData, prepare
from .steps import MemberState, interval_program, loss_sums_program, make_optimizer, update_best
from .strategy import Layout, choose_layout

CKPT_FORMAT = "nsbi-ratio-checkpoint/1"
_EVAL_BUDGET = 256 << 20  # bytes of activations per validation chunk
_HISTORY_COLUMNS = ("member", "step", "train_loss", "val_loss", "best_val_loss")


# TrainConfig fields added after CKPT_FORMAT 1 was defined: a checkpoint without them is resumed
# with this run's value (the smoothed loss is then recomputed from the stored history).
_COMPAT_FIELDS = ("early_stopping_smoothing", "patience_epochs", "eval_budget_share")


def _to_device(x: Any) -> jax.Array:
    """Every host-to-device copy of the training loop goes through here (explicit, so a
    ``jax.transfer_guard("disallow")`` around training passes; the tests count its bytes)."""
    return jax.device_put(x)


class CheckpointMismatch(ValueError):
    """The checkpoint found was written by a run with another configuration or other data."""


@dataclass(frozen=True)
class TrainResult:
    """What ``train_ensemble`` returns.

    ``steps_run``: optimiser steps executed in total over all packs (including steps before a
    resume); ``resumed_from``: checkpoint step resumed from, or None; ``stopped_early``: True
    when ``callbacks.should_stop()`` interrupted training (a checkpoint was saved; call again
    to resume); ``history``: metric records as given to ``on_metrics``.
    """

    ensemble: Ensemble
    steps_run: int
    resumed_from: int | None
    stopped_early: bool
    history: tuple[dict, ...]
    layout: Layout
    seconds: float

    @property
    def steps(self) -> int:
        return self.steps_run


def member_key(seed: int, member: int) -> jax.Array:
    """The root PRNG key of one member: depends on (seed, member index) only."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), member)


def bootstrap_weights(seed: int, member: int, n: int) -> np.ndarray:
    """Poisson(1) bootstrap multiplicities of one member, a function of (seed, member) only."""
    return np.random.default_rng([seed, member, 0xB007]).poisson(1.0, n).astype(np.float32)


class Smoother:
    """Per-member exponential moving average of the validation loss and its running minimum.

    Host-side float64 arithmetic on the float64 values the history records, so the state can
    be recomputed exactly from a checkpoint's history (`from_history`). Only members still
    training are updated, exactly the members whose values reach the history.
    """

    def __init__(self, factor: float, k: int) -> None:
        self.factor = float(factor)
        self.ema = np.full(k, np.nan)
        self.best = np.full(k, np.inf)

    def update(self, values: np.ndarray, active: np.ndarray) -> np.ndarray:
        """Fold in one evaluation; returns which active members reached a new smoothed minimum."""
        a = self.factor
        v = np.asarray(values, np.float64)
        new = np.where(np.isnan(self.ema), v, a * self.ema + (1.0 - a) * v)
        self.ema = np.where(active, new, self.ema)
        improved = active & (self.ema < self.best)
        self.best = np.where(improved, self.ema, self.best)
        return improved

    @classmethod
    def from_history(cls, factor: float, members: range, history: list[dict]) -> Smoother:
        out = cls(factor, len(members))
        series = {
            m: sorted(
                (r["step"], r["value"])
                for r in history
                if r["member"] == m and r["name"] == "val_loss"
            )
            for m in members
        }
        steps = sorted({st for vals in series.values() for st, _ in vals})
        for st in steps:
            vals, active = np.full(len(members), np.nan), np.zeros(len(members), bool)
            for j, m in enumerate(members):
                hit = [v for s_, v in series[m] if s_ == st]
                if hit:
                    vals[j], active[j] = hit[0], True
            out.update(np.where(active, vals, 0.0), active)
        return out

    def to_payload(self) -> dict[str, np.ndarray]:
        return {"ema": self.ema.copy(), "best": self.best.copy()}

    @classmethod
    def from_payload(cls, factor: float, payload: dict) -> Smoother:
        ema, best = np.asarray(payload["ema"], np.float64), np.asarray(payload["best"], np.float64)
        out = cls(factor, len(ema))
        out.ema, out.best = ema.copy(), best.copy()
        return out


class _Trainer:
    def __init__(self, data: PreparedData, config: TrainConfig, layout: Layout) -> None:
        self.data, self.config, self.layout = data, config, layout
        self.model = build_model(
            config.hidden_layers, config.width, config.activation, config.dtype
        )
        self.tx = make_optimizer(config)
        self.n_features = data.x_train.shape[1]
        self.donate = True  # reuse parameter and optimiser buffers in place (CPU and GPU)
        self.loss_sums = loss_sums_program(
            config.hidden_layers, config.width, config.activation, config.dtype
        )
        self.x = _to_device(np.asarray(data.x_train, np.float32))
        self.y = _to_device(np.asarray(data.y_train, np.float32))
        self._val_chunks = self._make_val_chunks()
        self._n_val = _to_device(np.float32(len(data.x_val)))

    def _make_val_chunks(self) -> list[tuple[jax.Array, jax.Array, jax.Array]]:
        d = self.data
        n = len(d.x_val)
        per_event = 2 * 4 * self.config.width * max(1, self.layout.pack_size)
        chunk = int(max(256, min(n, 32768, _EVAL_BUDGET // per_event)))
        pad = (-n) % chunk
        x = np.concatenate([d.x_val, np.zeros((pad, d.x_val.shape[1]), np.float32)])
        y = np.concatenate([d.y_val, np.zeros(pad, np.float32)])
        w = np.concatenate([d.w_val, np.zeros(pad, np.float32)])
        return [
            (
                _to_device(x[i : i + chunk]),
                _to_device(y[i : i + chunk]),
                _to_device(w[i : i + chunk]),
            )
            for i in range(0, len(x), chunk)
        ]

    def interval(self, n_steps: int):
        return interval_program(self.config, n_steps, self.donate)

    def pack_weights(self, members: range) -> jax.Array:
        n = len(self.data.w_train)
        if self.config.bootstrap:
            w = np.stack(
                [self.data.w_train * bootstrap_weights(self.config.seed, m, n) for m in members]
            )
        else:
            w = np.broadcast_to(self.data.w_train, (len(members), n))
        return _to_device(np.ascontiguousarray(w, np.float32))

    def fresh_state(self, members: range) -> MemberState:
        with jax.transfer_guard_host_to_device("allow"):  # the seeds: a few scalars per pack
            return self._fresh_state(members)

    def _fresh_state(self, members: range) -> MemberState:
        keys = jnp.stack([member_key(self.config.seed, m) for m in members])
        init_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
        batch_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
        params = init_stacked(self.model, init_keys, self.n_features)
        opt_state = jax.vmap(self.tx.init)(params)
        k = len(members)
        return MemberState(
            params=params,
            opt_state=opt_state,
            best_params=jax.tree.map(jnp.copy, params),
            best_val=jnp.full((k,), jnp.inf, jnp.float32),
            best_step=jnp.zeros((k,), jnp.int32),
            bad_evals=jnp.zeros((k,), jnp.int32),
            stopped=jnp.zeros((k,), bool),
            batch_keys=batch_keys,
        )

    def val_loss(self, params: Any) -> jax.Array:
        total: jax.Array | None = None
        for x, y, w in self._val_chunks:
            s = self.loss_sums(params, x, y, w)
            total = s if total is None else total + s
        assert total is not None  # prepare() rejects an empty validation split (_balanced)
        return (total / self._n_val).astype(jnp.float32)


# ---- checkpoint payloads ------------------------------------------------------------------


def _leaves_dict(tree: Any) -> dict[str, np.ndarray]:
    leaves = jax.device_get(jax.tree.leaves(tree))
    return {str(i): np.asarray(leaf) for i, leaf in enumerate(leaves)}


def _restore_leaves(template: Any, stored: dict[str, np.ndarray], what: str) -> Any:
    leaves, treedef = jax.tree.flatten(template)
    if len(stored) != len(leaves):
        raise CheckpointMismatch(
            f"checkpoint {what}: {len(stored)} arrays, this run expects {len(leaves)}"
        )
    out = []
    for i, ref in enumerate(leaves):
        arr = np.asarray(stored[str(i)])
        if arr.shape != ref.shape:
            raise CheckpointMismatch(
                f"checkpoint {what}[{i}]: shape {arr.shape}, expected {ref.shape}"
            )
        out.append(_to_device(arr.astype(ref.dtype)))
    return jax.tree.unflatten(treedef, out)


def _history_array(history: list[dict]) -> np.ndarray:
    rows: dict[tuple[int, int], dict[str, float]] = {}
    for rec in history:
        rows.setdefault((rec["member"], rec["step"]), {})[rec["name"]] = rec["value"]
    out = np.full((len(rows), len(_HISTORY_COLUMNS)), np.nan)
    for i, ((member, step), vals) in enumerate(rows.items()):
        out[i, 0], out[i, 1] = member, step
        for j, name in enumerate(_HISTORY_COLUMNS[2:], start=2):
            out[i, j] = vals.get(name, np.nan)
    return out


def _history_records(arr: np.ndarray, n_train: int, batch_size: int) -> list[dict]:
    records = []
    for row in np.asarray(arr).reshape(-1, len(_HISTORY_COLUMNS)):
        member, step = int(row[0]), int(row[1])
        for j, name in enumerate(_HISTORY_COLUMNS[2:], start=2):
            if np.isfinite(row[j]):
                records.append(
                    {
                        "member": member,
                        "step": step,
                        "epoch": step * batch_size / n_train,
                        "name": name,
                        "value": float(row[j]),
                    }
                )
    return records


def _encode(
    config: TrainConfig,
    fp: str,
    pack: int,
    step: int,
    total: int,
    done: list[Any],
    state: MemberState | None,
    history: list[dict],
    best: list[dict],
    smoother: Smoother | None = None,
) -> bytes:
    payload: dict[str, Any] = {
        "format": CKPT_FORMAT,
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "fingerprint": fp,
        "pack": pack,
        "step": step,
        "total": total,
        "n_done": len(done),
        "history": _history_array(history),
        "best": json.dumps(best),
    }
    for i, params in enumerate(done):
        payload[f"done_{i}"] = _leaves_dict(params)
    if state is not None:
        payload["state"] = _leaves_dict(state)
        if smoother is not None:
            payload["smoothing"] = smoother.to_payload()
    return flax.serialization.msgpack_serialize(payload)


def _check_resumable(payload: dict, config: TrainConfig, fp: str) -> None:
    if payload.get("format") != CKPT_FORMAT:
        raise CheckpointMismatch(
            f"checkpoint format {payload.get('format')!r}, expected {CKPT_FORMAT!r}"
        )
    saved = json.loads(payload["config"])
    saved = {**{k: config.to_dict()[k] for k in _COMPAT_FIELDS}, **saved}
    if saved != config.to_dict():
        diff = sorted(
            k for k in set(saved) | set(config.to_dict()) if saved.get(k) != config.to_dict().get(k)
        )
        raise CheckpointMismatch(
            f"checkpoint was written with a different TrainConfig (differs in {diff})"
        )
    if payload["fingerprint"] != fp:
        raise CheckpointMismatch(
            f"checkpoint was written for other data (fingerprint {payload['fingerprint']} "
            f"!= {fp}); refusing to resume"
        )


# ---- the loop -----------------------------------------------------------------------------


def train_ensemble(
    numerator: Any,
    denominator: Any,
    config: TrainConfig | None = None,
    *,
    checkpointer: Checkpointer | None = None,
    callbacks: TrainCallbacks | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train ``config.members`` classifiers of numerator (label 1) against denominator (label 0).

    Resumes automatically from ``checkpointer.load_latest()`` when one exists (the config and
    data must match). Returns the ensemble of each member's best-validation parameters.
    """
    enable_float64()  # optax's schedule and bias corrections: see sbi_engine.precision
    config = config or TrainConfig()
    callbacks = callbacks or TrainCallbacks()
    t0 = time.perf_counter()
    data = prepare(
        numerator, denominator, config.val_fraction, config.seed, config.periodic_features
    )
    n_train = len(data.x_train)
    budget = config.step_budget(n_train)
    config = config.replace(max_steps=budget)  # recorded as run (and checked on resume)
    layout = choose_layout(config, data.x_train.shape[1], n_train)
    packs = layout.packs(config.members)
    trainer = _Trainer(data, config, layout)

    pack_i, step, total, done, state, history, best = 0, 0, 0, [], None, [], []
    smoother: Smoother | None = None
    resumed_from = None
    latest = checkpointer.load_latest() if checkpointer is not None else None
    if latest is not None:
        resumed_from, raw = latest
        payload = flax.serialization.msgpack_restore(raw)
        _check_resumable(payload, config, data.fingerprint)
        pack_i, step, total = int(payload["pack"]), int(payload["step"]), int(payload["total"])
        history = _history_records(payload["history"], n_train, config.batch_size)
        best = json.loads(payload["best"])
        for i in range(int(payload["n_done"])):
            template = trainer.fresh_state(packs[i]).params
            done.append(_restore_leaves(template, payload[f"done_{i}"], f"done_{i}"))
        if "state" in payload and pack_i < len(packs):
            state = _restore_leaves(trainer.fresh_state(packs[pack_i]), payload["state"], "state")
            if "smoothing" in payload:
                smoother = Smoother.from_payload(
                    config.early_stopping_smoothing, payload["smoothing"]
                )
            else:  # written before the smoothed loss was checkpointed: rebuild it from the history
                smoother = Smoother.from_history(
                    config.early_stopping_smoothing, packs[pack_i], history
                )

    last_ckpt = total
    stopped_early = False

    def save(pack: int, step_: int, st: MemberState | None) -> None:
        nonlocal last_ckpt
        if checkpointer is not None:
            checkpointer.save(
                total,
                _encode(
                    config, data.fingerprint, pack, step_, total, done, st, history, best, smoother
                ),
            )
        last_ckpt = total

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(packs) * budget,
            desc=f"train {config.members}x{config.hidden_layers}x{config.width}",
            unit="step",
        )
        bar.update(pack_i * budget + step)

    n_val = len(data.x_val)
    eval_interval = config.eval_interval(n_val)
    patience_n = config.patience_evaluations(n_train, n_val)
    patience = _to_device(np.int32(patience_n))
    while pack_i < len(packs) and not stopped_early:
        members = packs[pack_i]
        if state is None:
            state, step = trainer.fresh_state(members), 0
            smoother = None
        if smoother is None:
            smoother = Smoother(config.early_stopping_smoothing, len(members))
        weights = trainer.pack_weights(members)
        while step < budget and not bool(jnp.all(state.stopped)):
            n = min(eval_interval, budget - step)
            params, opt_state, train_loss = trainer.interval(n)(
                state.params,
                state.opt_state,
                _to_device(np.int32(step)),
                ~state.stopped,
                state.batch_keys,
                trainer.x,
                trainer.y,
                weights,
            )
            state = state._replace(params=params, opt_state=opt_state)
            step += n
            total += n
            val = trainer.val_loss(state.params)
            was_stopped = np.asarray(state.stopped)
            smooth_improved = smoother.update(np.asarray(val, np.float64), ~was_stopped)
            state = update_best(
                state, val, _to_device(smooth_improved), _to_device(np.int32(step)), patience
            )
            tl, vl, bv = (np.asarray(a, np.float64) for a in (train_loss, val, state.best_val))
            records = []
            for j, m in enumerate(members):
                if was_stopped[j]:
                    continue
                for name, value in (
                    ("train_loss", tl[j]),
                    ("val_loss", vl[j]),
                    ("best_val_loss", bv[j]),
                ):
                    records.append(
                        {
                            "member": m,
                            "step": step,
                            "epoch": step * config.batch_size / n_train,
                            "name": name,
                            "value": float(value),
                        }
                    )
            history.extend(records)
            callbacks.on_metrics(step, records)
            if bar is not None:
                bar.update(n)
                bar.set_postfix(pack=f"{pack_i + 1}/{len(packs)}", val=f"{float(np.mean(vl)):.4f}")
            if step >= budget or bool(jnp.all(state.stopped)):
                break  # the pack is finished; the pack-end checkpoint below covers it
            if callbacks.should_stop():
                stopped_early = True
                save(pack_i, step, state)
                break
            if total - last_ckpt >= config.checkpoint_every:
                save(pack_i, step, state)
        if stopped_early:
            break
        done.append(state.best_params)
        best.extend(
            {"member": m, "best_step": int(s), "best_val_loss": float(v)}
            for m, s, v in zip(members, np.asarray(state.best_step), np.asarray(state.best_val))
        )
        if bar is not None:
            bar.update(budget - step)
        pack_i, state, step, smoother = pack_i + 1, None, 0, None
        save(pack_i, 0, None)  # every checkpoint step (= total steps) is saved at most once
        if pack_i < len(packs) and callbacks.should_stop():
            stopped_early = True
    if bar is not None:
        bar.close()

    if stopped_early:
        # Not finished: hand back what exists (finished packs plus the current pack's best so far).
        partial = done + ([state.best_params] if state is not None else [])
        if not partial:  # stopped right after resuming at a pack boundary: nothing trained yet
            state = trainer.fresh_state(packs[pack_i])
            partial = [state.best_params]
        params = jax.tree.map(lambda *a: jnp.concatenate(a), *partial)
    else:
        params = jax.tree.map(lambda *a: jnp.concatenate(a), *done)
    n_members = int(jax.tree.leaves(params)[0].shape[0])
    ensemble = Ensemble(
        jax.device_get(params),
        _metadata(
            config, data, layout, total, best, stopped_early, n_members, eval_interval, patience_n
        ),
    )
    return TrainResult(
        ensemble,
        total,
        resumed_from,
        stopped_early,
        tuple(history),
        layout,
        time.perf_counter() - t0,
    )


def _metadata(
    config: TrainConfig,
    data: PreparedData,
    layout: Layout,
    total: int,
    best: list[dict],
    partial: bool,
    n_members: int,
    eval_interval: int,
    patience_evaluations: int,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "model": {
            "kind": "mlp",
            "hidden_layers": config.hidden_layers,
            "width": config.width,
            "activation": config.activation,
            "dtype": config.dtype,
            "n_inputs": int(data.x_train.shape[1]),
            "output": "logit = log r",
        },
        "feature_names": list(data.names),
        "scaler": data.scaler.to_dict(),
        "config": config.to_dict(),
        "split": data.split,
        "members": n_members,
        "member_seeds": [[config.seed, m] for m in range(n_members)],
        "layout": {
            "strategy": layout.strategy,
            "pack_size": layout.pack_size,
            "reason": layout.reason,
        },
        "training": {
            "steps_run": total,
            "complete": not partial,
            "eval_interval": eval_interval,
            "patience_evaluations": patience_evaluations,
            "members": best,
        },
    }
