"""Early stopping on a smoothed validation loss (TrainConfig.early_stopping_smoothing).

Why: a per-member validation loss is noisy; a rule on the raw value stops members on one
lucky evaluation while they are still learning, and networks stopped that way learned a too
flat ratio. The rule now counts patience on an exponential moving average; these tests run a
real (tiny) training where the raw rule stops early and the smoothed one does not, and check
that resuming from a checkpoint (also one written before the smoothed state was stored)
ends exactly like an uninterrupted run.
"""

import json

import flax.serialization
import jax
import numpy as np
import pytest
from scipy.stats import norm

from sbi_engine.data import Sample
from sbi_engine.ratio import MemoryCheckpointer, StopAfter, TrainConfig, train_ensemble
from sbi_engine.ratio.train import Smoother

NAMES = ("a", "b")


def gaussians(n, seed):
    rng = np.random.default_rng(seed)
    xq = rng.normal(0.0, 1.6, (n, 2))
    w = 7.0 * np.exp((norm.logpdf(xq, 0.6, 1.0) - norm.logpdf(xq, 0.0, 1.6)).sum(axis=1))
    return (
        Sample(xq, w, NAMES, f"num({seed})"),
        Sample(rng.normal(0.0, 1.3, (n, 2)), np.ones(n), NAMES, f"den({seed})"),
    )


# A large learning rate and a small validation set: the validation loss still falls over the
# run but jumps by more than it falls between evaluations.
NOISY = TrainConfig(
    hidden_layers=2,
    width=32,
    members=1,
    batch_size=256,
    max_steps=200,
    eval_every=20,
    checkpoint_every=20,
    learning_rate=0.3,
    seed=3,
    strategy="vmap",
    patience=2,
    bootstrap=False,
)


@pytest.fixture(scope="module")
def data():
    return gaussians(1500, seed=1)


def leaves(ensemble):
    return [np.asarray(a) for a in jax.tree.leaves(ensemble.params)]


def val_series(result):
    return [(r["step"], r["value"]) for r in result.history if r["name"] == "val_loss"]


def test_smoother_ignores_single_lucky_evaluations():
    # a loss that keeps falling slowly, with a lucky dip at the third evaluation
    series = [1.0, 0.9, 0.7, 0.86, 0.84, 0.82, 0.80, 0.79]
    raw, smooth = Smoother(0.0, 1), Smoother(0.7, 1)
    bad_raw = bad_smooth = 0
    for v in series:
        bad_raw = 0 if raw.update(np.array([v]), np.array([True]))[0] else bad_raw + 1
        bad_smooth = 0 if smooth.update(np.array([v]), np.array([True]))[0] else bad_smooth + 1
    assert bad_raw == 5  # the raw rule has been waiting since the dip (patience 5 would stop)
    assert bad_smooth == 0  # the moving average still improves at every evaluation
    # inactive members keep their state
    s = Smoother(0.5, 2)
    s.update(np.array([1.0, 2.0]), np.array([True, True]))
    s.update(np.array([0.0, 0.0]), np.array([True, False]))
    np.testing.assert_allclose(s.ema, [0.5, 2.0])


def test_noisy_validation_loss_does_not_stop_training(data):
    num, den = data
    raw = train_ensemble(num, den, NOISY.replace(early_stopping_smoothing=0.0))
    smooth = train_ensemble(num, den, NOISY.replace(early_stopping_smoothing=0.7))
    raw_vals, smooth_vals = val_series(raw), val_series(smooth)
    # same members, same batches: identical until the raw rule stops
    assert smooth_vals[: len(raw_vals)] == raw_vals
    assert raw_vals[-1][0] < NOISY.max_steps  # the raw rule stopped on noise ...
    assert smooth_vals[-1][0] == NOISY.max_steps  # ... the smoothed one trained on
    # and training on was worth it: a lower validation loss than anything the raw run saw
    assert min(v for _, v in smooth_vals) < min(v for _, v in raw_vals)
    # the kept parameters are still those of the lowest raw validation loss
    best_step = min(smooth_vals, key=lambda sv: sv[1])[0]
    assert smooth.ensemble.metadata["training"]["members"][0]["best_step"] == best_step
    assert smooth.ensemble.metadata["config"]["early_stopping_smoothing"] == 0.7


def _strip_smoothing(raw: bytes) -> bytes:
    """A checkpoint as written before the smoothed state existed (no payload, no config field)."""
    payload = flax.serialization.msgpack_restore(raw)
    payload.pop("smoothing", None)
    config = json.loads(payload["config"])
    config.pop("early_stopping_smoothing")
    payload["config"] = json.dumps(config, sort_keys=True)
    return flax.serialization.msgpack_serialize(payload)


@pytest.mark.parametrize("old_format", [False, True], ids=["stored", "recomputed"])
def test_resume_gives_the_same_result(data, old_format):
    num, den = data
    # member 0 stops at step 120, after the resume at 60: when depends on the moving average
    config = NOISY.replace(members=2, learning_rate=0.5, patience=2, early_stopping_smoothing=0.3)
    reference = train_ensemble(num, den, config)
    last = {r["member"]: r["step"] for r in reference.history}
    assert 60 < last[0] < config.max_steps

    ckpt = MemoryCheckpointer()
    first = train_ensemble(num, den, config, checkpointer=ckpt, callbacks=StopAfter(3))
    assert first.stopped_early and first.steps_run == 60
    step, payload = ckpt.load_latest()
    stored = flax.serialization.msgpack_restore(payload)["smoothing"]
    rebuilt = Smoother.from_history(0.3, range(2), list(first.history))
    np.testing.assert_array_equal(stored["ema"], rebuilt.ema)
    np.testing.assert_array_equal(stored["best"], rebuilt.best)
    if old_format:
        ckpt.saved[step] = _strip_smoothing(payload)
    final = train_ensemble(num, den, config, checkpointer=ckpt)
    assert final.resumed_from == 60 and not final.stopped_early
    assert final.history == reference.history
    for a, b in zip(leaves(reference.ensemble), leaves(final.ensemble)):
        np.testing.assert_array_equal(a, b)


def test_smoothing_is_validated():
    with pytest.raises(ValueError, match="early_stopping_smoothing"):
        TrainConfig(early_stopping_smoothing=1.0)
    with pytest.raises(ValueError, match="early_stopping_smoothing"):
        TrainConfig(early_stopping_smoothing=-0.1)
    assert 0.0 < TrainConfig().early_stopping_smoothing < 1.0


def test_patience_is_at_least_patience_epochs_passes(data):
    """With small batches a pass over the 2,400 training events is 3.75 evaluations: patience 2
    alone stops the member after about half a pass without a gain; patience_epochs 2 holds it
    for 8 evaluations (two passes) after its last gain, as recorded in the metadata."""
    num, den = data
    base = NOISY.replace(batch_size=32, max_steps=600, early_stopping_smoothing=0.0)
    short = train_ensemble(num, den, base.replace(patience_epochs=0.0))
    held = train_ensemble(num, den, base.replace(patience_epochs=2.0))
    assert short.ensemble.metadata["training"]["patience_evaluations"] == 2
    assert held.ensemble.metadata["training"]["patience_evaluations"] == 8

    def last_and_best(result):
        best_step = result.ensemble.metadata["training"]["members"][0]["best_step"]
        return val_series(result)[-1][0], best_step

    stop_short, best_short = last_and_best(short)
    stop_held, best_held = last_and_best(held)
    assert stop_short < 600  # the short patience did stop the member early ...
    assert stop_held > stop_short  # ... and the pass-based one let it go on
    # a member stops only after `patience` evaluations without a gain (or at the budget)
    assert stop_short - best_short >= 2 * NOISY.eval_every
    assert stop_held == 600 or stop_held - best_held >= 8 * NOISY.eval_every


def test_validation_interval_grows_with_the_validation_set(data):
    """eval_budget_share 0.01 on 600 validation events at batch 256: a pass every
    ceil(600 / (3 * 256 * 0.01)) = 79 steps instead of eval_every 20, recorded in the metadata."""
    num, den = data
    result = train_ensemble(num, den, NOISY.replace(eval_budget_share=0.01, patience=100))
    steps = [s for s, _ in val_series(result)]
    assert result.ensemble.metadata["training"]["eval_interval"] == 79
    assert steps == [79, 158, 200]  # the last interval is cut at the 200-step budget
