"""The compiled pieces of training: optimiser, an interval of steps, validation, best-keeping.

Everything here is a pure function over a stacked (leading member axis) state, vmapped over
members and jitted once per shape. Randomness is a function of (member key, step) only, so a
run resumed from a checkpoint replays exactly the batches an uninterrupted run would draw.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from .config import TrainConfig
from .model import MLP, build_model, weighted_bce

Params = Any


class MemberState(NamedTuple):
    """Stacked per-member training state (leading axis = members of one pack)."""

    params: Params
    opt_state: Any
    best_params: Params
    best_val: jax.Array  # float32 (k,)
    best_step: jax.Array  # int32 (k,)
    bad_evals: jax.Array  # int32 (k,)
    stopped: jax.Array  # bool (k,)
    batch_keys: jax.Array  # uint32 (k, 2): fold_in(key, step) draws each step's batch


def make_schedule(config: TrainConfig) -> Callable[[jax.Array], jax.Array]:
    """Learning rate as a function of the step, returned as float32 (training runs with x64 on)."""
    lr, steps, warm = config.learning_rate, config.step_budget(0), config.warmup_steps
    if config.schedule == "cosine":
        base = optax.warmup_cosine_decay_schedule(
            0.0 if warm else lr, lr, warm, steps, end_value=0.01 * lr
        )
    elif config.schedule == "exponential":
        decay = optax.exponential_decay(lr, transition_steps=max(steps - warm, 1), decay_rate=0.01)
        base = (
            optax.join_schedules([optax.linear_schedule(0.0, lr, warm), decay], [warm])
            if warm
            else decay
        )
    else:
        base = (
            optax.join_schedules(
                [optax.linear_schedule(0.0, lr, warm), optax.constant_schedule(lr)], [warm]
            )
            if warm
            else optax.constant_schedule(lr)
        )
    return lambda count: jnp.asarray(base(count), jnp.float32)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Adam, NAdam (Nesterov Adam) or AdamW on the configured schedule."""
    sched = make_schedule(config)
    nesterov = config.optimizer == "nadam"
    if config.optimizer == "adamw" or config.weight_decay > 0:
        return optax.adamw(sched, weight_decay=config.weight_decay, nesterov=nesterov)
    return optax.nadam(sched) if nesterov else optax.adam(sched)


def make_interval(
    model: MLP,
    tx: optax.GradientTransformation,
    batch_size: int,
    n_steps: int,
    donate: bool = False,
) -> jax.stages.Wrapped:
    """Jitted ``(params, opt_state, start_step, active, batch_keys, x, y, w) ->
    (params, opt_state, mean_train_loss)`` running ``n_steps`` steps of every member.

    ``x``/``y`` are shared by all members; ``w`` is (k, n) so each member has its own
    bootstrap weights. Members with ``active == False`` keep their parameters unchanged.
    """

    def member_step(params, opt_state, active, key, step, x, y, w):
        idx = jax.random.randint(
            jax.random.fold_in(key, step), (batch_size,), 0, x.shape[0], dtype=jnp.int32
        )
        xb, yb, wb = x[idx], y[idx], w[idx]

        def loss_fn(p):
            return weighted_bce(model.apply({"params": p}, xb), yb, wb)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, new_opt = tx.update(grads, opt_state, params)
        new_params = jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, updates)
        keep = lambda new, old: jnp.where(active, new, old).astype(old.dtype)  # noqa: E731
        return jax.tree.map(keep, new_params, params), jax.tree.map(keep, new_opt, opt_state), loss

    stepped = jax.vmap(member_step, in_axes=(0, 0, 0, 0, None, None, None, 0))

    def interval(params, opt_state, start_step, active, batch_keys, x, y, w):
        def body(carry, i):
            p, o = carry
            p, o, loss = stepped(p, o, active, batch_keys, start_step + i, x, y, w)
            return (p, o), loss

        (params, opt_state), losses = jax.lax.scan(
            body, (params, opt_state), jnp.arange(n_steps, dtype=jnp.int32)
        )
        return params, opt_state, jnp.mean(losses, axis=0)

    return jax.jit(interval, donate_argnums=(0, 1) if donate else ())


def make_loss_sums(model: MLP) -> Callable:
    """Jitted ``(params, x, y, w) -> (k,)`` per-member sums of weight x BCE over one chunk."""

    def sums(params, x, y, w):
        logits = jax.vmap(lambda p: model.apply({"params": p}, x))(params)
        per = y * jax.nn.softplus(-logits) + (1.0 - y) * jax.nn.softplus(logits)
        return jnp.sum(per * w, axis=1)

    return jax.jit(sums)


@jax.jit
def update_best(
    state: MemberState,
    val: jax.Array,
    smooth_improved: jax.Array,
    step: jax.Array,
    patience: jax.Array,
) -> MemberState:
    """Keep each member's best parameters by its raw validation loss, but count patience on
    the smoothed loss: ``smooth_improved`` says which members' moving average reached a new
    minimum at this evaluation; a member whose average has not for ``patience`` evaluations
    stops. (With no smoothing this is the plain raw-loss rule.)"""
    improved = (val < state.best_val) & ~state.stopped

    def pick(new, old):
        mask = improved.reshape((-1,) + (1,) * (new.ndim - 1))
        return jnp.where(mask, new, old)

    bad = jnp.where(smooth_improved & ~state.stopped, 0, state.bad_evals + 1).astype(jnp.int32)
    return state._replace(
        best_params=jax.tree.map(pick, state.params, state.best_params),
        best_val=jnp.where(improved, val, state.best_val).astype(jnp.float32),
        best_step=jnp.where(improved, step, state.best_step).astype(jnp.int32),
        bad_evals=bad,
        stopped=state.stopped | (bad >= patience),
    )


_OPTIMIZER_FIELDS = (
    "optimizer",
    "learning_rate",
    "schedule",
    "warmup_steps",
    "weight_decay",
    "max_steps",
)
_MODEL_FIELDS = ("hidden_layers", "width", "activation", "dtype")


def interval_program(config: TrainConfig, n_steps: int, donate: bool = True) -> Callable:
    """``make_interval`` for a config, shared between calls so a resumed or repeated run
    reuses the compiled program instead of tracing and compiling it again."""
    key = (
        tuple(getattr(config, f) for f in _MODEL_FIELDS + _OPTIMIZER_FIELDS),
        config.batch_size,
        n_steps,
        donate,
    )
    return _cached_interval(key)


@functools.lru_cache(maxsize=64)
def _cached_interval(key: tuple) -> Callable:
    fields, batch_size, n_steps, donate = key
    values = dict(zip(_MODEL_FIELDS + _OPTIMIZER_FIELDS, fields))
    config = TrainConfig(**values)
    model = build_model(config.hidden_layers, config.width, config.activation, config.dtype)
    return make_interval(model, make_optimizer(config), batch_size, n_steps, donate)


@functools.lru_cache(maxsize=64)
def loss_sums_program(hidden_layers: int, width: int, activation: str, dtype: str) -> Callable:
    """``make_loss_sums`` shared between calls (one compiled program per architecture and shape)."""
    return make_loss_sums(build_model(hidden_layers, width, activation, dtype))
