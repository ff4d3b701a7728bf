"""TrainConfig: JSON round trip, validation with clear messages."""

import json
import re

import pytest

from sbi_engine.ratio import TrainConfig


def test_defaults_are_the_small_demo_network():
    c = TrainConfig()
    assert (c.hidden_layers, c.width, c.activation, c.dtype, c.strategy) == (
        3,
        64,
        "silu",
        "float32",
        "auto",
    )


def test_round_trip_through_json():
    c = TrainConfig(
        members=5,
        optimizer="nadam",
        schedule="exponential",
        pack_size=2,
        periodic_features=("phi",),
        bootstrap=False,
    )
    d = json.loads(json.dumps(c.to_dict()))
    assert TrainConfig.from_dict(d) == c
    assert d["periodic_features"] == ["phi"]


def test_unknown_keys_are_named():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['lr', 'widht'\]"):
        TrainConfig.from_dict({"lr": 1e-3, "widht": 3})


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("activation", "swish9", "activation"),
        ("optimizer", "sgd", "optimizer"),
        ("members", 0, "members"),
        ("val_fraction", 1.0, "val_fraction"),
        ("strategy", "pmap", "strategy"),
        ("dtype", "float16", "dtype"),
        ("periodic_features", "phi", "periodic_features"),
    ],
)
def test_invalid_values_raise_naming_the_field(field, value, needle):
    with pytest.raises(ValueError, match=needle):
        TrainConfig(**{field: value})


def test_the_automatic_step_budget_covers_min_epochs_passes():
    """max_steps None: 2000 steps, or min_epochs passes over the training events if more
    (560k events at batch 1024: 10 passes are 5469 steps); an explicit max_steps is exact."""
    c = TrainConfig()
    assert c.max_steps is None and c.min_epochs == 10.0 and c.patience == 10
    assert c.step_budget(100_000) == 2000
    assert c.step_budget(560_000) == 5469
    assert c.replace(min_epochs=0.0).step_budget(10**7) == 2000
    assert c.replace(max_steps=10).step_budget(10**7) == 10  # smoke runs, spoiled networks
    assert c.replace(batch_size=4096).step_budget(560_000) == 2000


def test_patience_covers_patience_epochs_passes():
    """Patience is at least three passes over the training events (default patience_epochs 3):
    unchanged at 112k training events (100k per sample: one pass is 110 steps), 17 evaluations
    at 560k (interference at 500k per sample), 165 at 5.6M with a pass every 100 steps."""
    c = TrainConfig()
    assert c.patience_epochs == 3.0
    assert c.patience_evaluations(112_000) == 10
    assert c.patience_evaluations(560_000) == 17
    assert c.patience_evaluations(5_600_000) == 165
    assert c.replace(patience_epochs=0.0).patience_evaluations(5_600_000) == 10
    assert c.replace(patience_epochs=2.0, batch_size=512).patience_evaluations(1_024_000) == 40


def test_validation_passes_cost_at_most_their_share_of_the_training():
    """A validation pass (forward only) may cost half the arithmetic of the training steps
    between passes: eval_every (100) up to 153,600 validation events (the largest benchmark,
    interference at 500k per sample, has 140k), every 912 steps at 1.4M, where the three
    passes of patience_epochs are 18 evaluations."""
    c = TrainConfig()
    assert c.eval_budget_share == 0.5
    assert c.eval_interval(140_000) == 100
    assert c.eval_interval(153_600) == 100
    assert c.eval_interval(1_400_000) == 912
    assert c.replace(eval_budget_share=1000.0).eval_interval(1_400_000) == 100
    assert c.patience_evaluations(5_600_000, 1_400_000) == 18  # 16,416 steps, 3 passes
    assert c.replace(patience_epochs=1.0).patience_evaluations(5_600_000, 1_400_000) == 10


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"patience_epochs": -0.5}, "patience_epochs must be in [0, 1000]"),
        ({"patience_epochs": True}, "patience_epochs must be in [0, 1000]"),
        ({"eval_budget_share": 0.0}, "eval_budget_share must be in (0, 1000]"),
        ({"max_steps": 0}, "max_steps must be None (automatic) or >= 1"),
        ({"min_epochs": -1.0}, "min_epochs must be in [0, 1000]"),
        ({"min_epochs": True}, "min_epochs must be in [0, 1000]"),
        ({"warmup_steps": 2000}, "warmup_steps must be in [0, max_steps)"),
    ],
)
def test_step_budget_settings_are_checked(changes, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        TrainConfig(**changes)
