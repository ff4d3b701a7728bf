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


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"max_steps": 0}, "max_steps must be None (automatic) or >= 1"),
        ({"min_epochs": -1.0}, "min_epochs must be in [0, 1000]"),
        ({"min_epochs": True}, "min_epochs must be in [0, 1000]"),
        ({"warmup_steps": 2000}, "warmup_steps must be in [0, max_steps)"),
    ],
)
def test_step_budget_settings_are_checked(changes, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        TrainConfig(**changes)
