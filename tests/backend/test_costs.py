"""Price catalogue and cost arithmetic."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta

import pytest

from backend.costs import (
    DEFAULT_CATALOGUE,
    PriceError,
    accrued_cost,
    hours_between,
    load_catalogue,
    parse_catalogue,
    region_of_zone,
)


@pytest.fixture(scope="module")
def raw():
    return tomllib.loads(DEFAULT_CATALOGUE.read_text())


def _entry(raw, section, type_):
    return next(e for e in raw[section] if e["type"] == type_)


def test_shipped_catalogue_has_the_required_entries(raw):
    cat = load_catalogue()
    assert cat.date and cat.currency == "USD"
    for m in ("local", "n1-standard-8", "g2-standard-8", "a2-highgpu-1g", "a3-highgpu-8g"):
        cat.price_per_hour(m)
    assert cat.price_per_hour("local", "a100", 4) == 0.0
    for g in ("t4", "v100", "a100"):
        assert cat.canonical_gpu(g.upper()).startswith("nvidia-")
    # spot is cheaper than on-demand everywhere it is listed
    for m in raw["machine"]:
        assert m["spot"] <= m["on_demand"]


def test_attached_gpus_add_per_gpu_price(raw):
    cat = load_catalogue()
    n1 = _entry(raw, "machine", "n1-standard-8")
    t4 = _entry(raw, "gpu", "nvidia-tesla-t4")
    assert cat.price_per_hour("n1-standard-8", "T4", 2) == pytest.approx(
        n1["on_demand"] + 2 * t4["on_demand"]
    )
    assert cat.price_per_hour("n1-standard-8", "t4", 2, spot=True) == pytest.approx(
        n1["spot"] + 2 * t4["spot"]
    )


def test_bundled_gpus_are_in_the_machine_price(raw):
    cat = load_catalogue()
    a3 = _entry(raw, "machine", "a3-highgpu-8g")
    assert cat.price_per_hour("a3-highgpu-8g", "h100", 8) == pytest.approx(a3["on_demand"])
    with pytest.raises(PriceError, match="comes with 8 x nvidia-h100-80gb"):
        cat.price_per_hour("a3-highgpu-8g", "h100", 4)
    with pytest.raises(PriceError, match="cannot be attached"):
        cat.price_per_hour("n1-standard-8", "l4", 1)


def test_unknown_names_list_the_known_ones():
    cat = load_catalogue()
    with pytest.raises(PriceError, match="unknown machine type 'x1'.*n1-standard-8"):
        cat.price_per_hour("x1")
    with pytest.raises(
        PriceError, match="no price for machine type 'n1-standard-8' in region 'mars-1'"
    ):
        cat.price_per_hour("n1-standard-8", region="mars-1")
    with pytest.raises(PriceError, match="unknown GPU type 'k80'"):
        cat.price_per_hour("n1-standard-8", "k80", 1)


def test_catalogue_errors_name_section_and_key():
    with pytest.raises(PriceError, match=r"p.toml: machine\[0\]: missing key 'on_demand'"):
        parse_catalogue({"machine": [{"type": "m"}]}, source="p.toml")


def test_edited_catalogue_is_reread(tmp_path, monkeypatch):
    p = tmp_path / "prices.toml"
    p.write_text('date = "2030-01-01"\n[[machine]]\ntype = "m"\non_demand = 2.0\n')
    monkeypatch.setenv("NSBI_PRICES", str(p))
    assert load_catalogue().price_per_hour("m", region="anywhere") == 2.0
    import os

    p.write_text('date = "2030-01-02"\n[[machine]]\ntype = "m"\non_demand = 3.0\n')
    os.utime(p, (1e9, 2e9))
    assert load_catalogue().price_per_hour("m") == 3.0 and load_catalogue().date == "2030-01-02"


def test_cost_arithmetic():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    assert hours_between(t0, t0 + timedelta(minutes=90)) == 1.5
    assert accrued_cost(2.0, t0, t0 + timedelta(minutes=90)) == 3.0
    assert accrued_cost(2.0, None, t0) == 0.0 and hours_between(t0, t0 - timedelta(hours=1)) == 0.0
    assert region_of_zone("us-central1-a") == "us-central1" and region_of_zone(None) is None
