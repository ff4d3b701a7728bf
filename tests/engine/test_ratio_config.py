"""TrainConfig: JSON round trip, validation with clear messages."""

import json

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
