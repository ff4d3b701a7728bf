"""Ensemble training on Gaussians with an analytic ratio; checkpoints and resume; strategies."""

import jax
import numpy as np
import pytest
from scipy.stats import norm

from sbi_engine.data import Sample
from sbi_engine.ratio import (
    CheckpointMismatch,
    DirectoryCheckpointer,
    MemoryCheckpointer,
    StopAfter,
    TrainCallbacks,
    TrainConfig,
    choose_layout,
    strategy,
    train_ensemble,
)
from sbi_engine.ratio.prepare import RatioDataError
from sbi_engine.ratio.strategy import bytes_per_member

NAMES = ("a", "b")
MU_NUM, SD_NUM, SD_DEN, SD_PROPOSAL = 0.6, 1.0, 1.3, 1.6


def true_log_ratio(x):
    return (norm.logpdf(x, MU_NUM, SD_NUM) - norm.logpdf(x, 0.0, SD_DEN)).sum(axis=1)


def gaussian_samples(n, seed):
    """Numerator importance-sampled from a wide proposal (weights p/q, times a yield of 7);
    denominator drawn directly with unit weights. A trainer that ignored the weights would
    learn log q/p_den instead of log p_num/p_den."""
    rng = np.random.default_rng(seed)
    xq = rng.normal(0.0, SD_PROPOSAL, (n, 2))
    w = 7.0 * np.exp(
        (norm.logpdf(xq, MU_NUM, SD_NUM) - norm.logpdf(xq, 0.0, SD_PROPOSAL)).sum(axis=1)
    )
    num = Sample(xq, w, NAMES, f"gauss-num(seed={seed})")
    den = Sample(rng.normal(0.0, SD_DEN, (n, 2)), np.ones(n), NAMES, f"gauss-den(seed={seed})")
    return num, den


SMALL = TrainConfig(
    hidden_layers=2,
    width=32,
    members=2,
    batch_size=256,
    max_steps=60,
    eval_every=20,
    checkpoint_every=20,
    learning_rate=3e-3,
    seed=3,
    strategy="vmap",
)


def leaves(ensemble):
    return [np.asarray(a) for a in jax.tree.leaves(ensemble.params)]


@pytest.fixture(scope="module")
def small_data():
    return gaussian_samples(1500, seed=1)


def test_learns_the_analytic_ratio_from_weighted_events():
    num, den = gaussian_samples(6000, seed=0)
    config = TrainConfig(
        hidden_layers=2,
        width=32,
        members=3,
        batch_size=1024,
        max_steps=600,
        eval_every=100,
        learning_rate=5e-3,
        patience=3,
    )
    result = train_ensemble(num, den, config)
    assert result.ensemble.members == 3 and not result.stopped_early
    x = np.random.default_rng(9).normal(0.0, SD_DEN, (20000, 2))
    log_r, spread = result.ensemble.log_ratio(x)
    err = np.abs(log_r - true_log_ratio(x))
    # ~5k weighted training events per class: statistical errors of several 0.01 in the bulk.
    # The thresholds still separate a trainer that ignores the weights, which would learn
    # log q/p_den (computed exactly here) instead:
    wrong = np.abs(
        (norm.logpdf(x, 0.0, SD_PROPOSAL) - norm.logpdf(x, 0.0, SD_DEN)).sum(axis=1)
        - true_log_ratio(x)
    )
    assert np.median(wrong) > 0.5 and np.percentile(wrong, 90) > 1.0
    assert np.median(err) < 0.12
    assert np.percentile(err, 90) < 0.35
    assert np.all(spread >= 0) and 0 < np.mean(spread) < 0.3
    # normalisation E_den[r-hat] = 1 for a correct ratio
    assert abs(np.mean(np.exp(log_r)) - 1) < 0.05
    names = {r["name"] for r in result.history}
    assert names == {"train_loss", "val_loss", "best_val_loss"}


class WriteOnceCheckpointer(DirectoryCheckpointer):
    """Like an immutable object store: saving the same step twice is an error."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = []

    def save(self, step, payload):
        assert step not in self.seen, f"checkpoint step {step} written twice"
        self.seen.append(step)
        super().save(step, payload)


def test_resume_ends_with_bitwise_identical_parameters(small_data, tmp_path):
    num, den = small_data
    config = SMALL.replace(
        strategy="packs", pack_size=1
    )  # two packs: the resume crosses a pack boundary too
    reference = train_ensemble(num, den, config)

    ckpt = WriteOnceCheckpointer(tmp_path / "ckpt", keep=2)
    first = train_ensemble(num, den, config, checkpointer=ckpt, callbacks=StopAfter(2))
    assert first.stopped_early and first.steps_run == 40 and first.resumed_from is None
    second = train_ensemble(num, den, config, checkpointer=ckpt, callbacks=StopAfter(2))
    assert second.stopped_early and second.resumed_from == 40 and second.steps_run == 80
    final = train_ensemble(num, den, config, checkpointer=ckpt)
    assert not final.stopped_early and final.resumed_from == 80 and final.steps_run == 120
    for a, b in zip(leaves(reference.ensemble), leaves(final.ensemble)):
        np.testing.assert_array_equal(a, b)
    assert final.history == reference.history
    assert len(list((tmp_path / "ckpt").glob("*.ckpt"))) == 2  # keep=2 prunes older ones
    assert ckpt.seen == [
        20,
        40,
        60,
        80,
        100,
        120,
    ]  # every checkpoint_every=20 steps, pack ends included

    again = train_ensemble(num, den, config, checkpointer=ckpt)  # finished: nothing left to run
    assert again.steps_run == 120
    for a, b in zip(leaves(reference.ensemble), leaves(again.ensemble)):
        np.testing.assert_array_equal(a, b)


def test_vmap_and_packs_give_the_same_members(small_data):
    num, den = small_data
    vmapped = train_ensemble(num, den, SMALL.replace(strategy="vmap"))
    packed = train_ensemble(num, den, SMALL.replace(strategy="packs", pack_size=1))
    assert vmapped.layout.strategy == "vmap" and packed.layout.pack_size == 1
    for a, b in zip(leaves(vmapped.ensemble), leaves(packed.ensemble)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_members_differ_by_seed_and_bootstrap(small_data):
    num, den = small_data
    ens = train_ensemble(num, den, SMALL).ensemble
    kernel = np.asarray(ens.params["hidden_0"]["kernel"])
    assert not np.allclose(kernel[0], kernel[1])


def test_checkpoint_from_other_config_is_refused(small_data):
    num, den = small_data
    ckpt = MemoryCheckpointer()
    train_ensemble(num, den, SMALL, checkpointer=ckpt, callbacks=StopAfter(1))
    with pytest.raises(CheckpointMismatch, match="learning_rate"):
        train_ensemble(num, den, SMALL.replace(learning_rate=1e-2), checkpointer=ckpt)
    other = Sample(num.features[::-1], num.weights[::-1], NAMES, "reversed")
    with pytest.raises(CheckpointMismatch, match="other data"):
        train_ensemble(other, den, SMALL, checkpointer=ckpt)


def test_should_stop_checkpoints_and_returns_promptly(small_data):
    num, den = small_data

    class Sigterm(TrainCallbacks):
        def __init__(self):
            self.steps = []

        def on_metrics(self, step, records):
            self.steps.append(step)
            assert all(set(r) == {"member", "step", "epoch", "name", "value"} for r in records)

        def should_stop(self):
            return True

    ckpt, cb = MemoryCheckpointer(), Sigterm()
    result = train_ensemble(
        num, den, SMALL.replace(checkpoint_every=1000), checkpointer=ckpt, callbacks=cb
    )
    assert result.stopped_early and cb.steps == [20] and list(ckpt.saved) == [20]
    assert result.ensemble.members == 2  # best-so-far parameters are still usable


def test_early_stopping_keeps_the_best_validation_step(small_data):
    num, den = small_data
    config = SMALL.replace(
        members=1,
        learning_rate=0.3,
        max_steps=200,
        patience=2,
        bootstrap=False,
        early_stopping_smoothing=0.0,
    )  # the raw rule: stops on the noise of this absurd rate
    result = train_ensemble(num, den, config)
    vals = [(r["step"], r["value"]) for r in result.history if r["name"] == "val_loss"]
    best_step = min(vals, key=lambda sv: sv[1])[0]
    assert result.ensemble.metadata["training"]["members"][0]["best_step"] == best_step
    assert vals[-1][0] < 200  # patience ran out before max_steps with this absurd learning rate


def test_bad_inputs_are_reported_with_the_sample_source():
    num, den = gaussian_samples(50, seed=2)
    with pytest.raises(RatioDataError, match="feature names differ"):
        train_ensemble(num, Sample(den.features, den.weights, ("x", "y"), "other"), SMALL)
    with pytest.raises(RatioDataError, match=r"gauss-den\(seed=2\).*non-finite"):
        bad = den.features.copy()
        bad[3, 1] = np.nan
        train_ensemble(num, Sample(bad, den.weights, NAMES, den.source), SMALL)
    with pytest.raises(RatioDataError, match="periodic_features"):
        train_ensemble(num, den, SMALL.replace(periodic_features=("phi",)))


def test_auto_layout_packs_when_memory_is_short(monkeypatch):
    mid = TrainConfig(hidden_layers=2, width=256, members=64)
    monkeypatch.setattr(
        strategy, "device_memory_bytes", lambda device=None: 8 << 30
    )  # a fixed 8 GiB device
    assert choose_layout(TrainConfig(members=8), 4, 10_000).strategy == "vmap"
    assert choose_layout(mid, 4, 10_000).strategy == "vmap"
    per_member = bytes_per_member(mid, 4, 10_000)
    layout = choose_layout(mid, 4, 10_000, memory_fraction=10.5 * per_member / (8 << 30))
    assert layout.strategy == "packs" and layout.pack_size == 10
    assert [len(p) for p in layout.packs(64)] == [10] * 6 + [4]


def test_auto_layout_honours_the_users_choice():
    big = TrainConfig(hidden_layers=7, width=1500, members=64)
    assert choose_layout(big.replace(strategy="vmap"), 4, 10).pack_size == 64
    assert choose_layout(big.replace(strategy="packs"), 4, 10).pack_size == 1
    assert choose_layout(big.replace(pack_size=4), 4, 10).pack_size == 4
