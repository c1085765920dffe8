"""Pricing files: a missing or negative price fails naming the field; the shipped files load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from leanscore.bench.pricing import Pricing, cost, cost_model_text, load_pricing, savings
from leanscore.jobs.config import ConfigError

CONF = Path(__file__).resolve().parents[1] / "conf"
GOOD = {
    "instance": {"name": "n", "usd_per_hour": 1.0, "cores": 4, "dbu_per_hour": 1, "usd_per_dbu": 1},
    "workers": 2,
    "nightly_rows": 1_000_000,
}


def _without(data: dict, dotted: str) -> dict:
    data = yaml.safe_load(yaml.safe_dump(data))
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node[key]
    del node[last]
    return data


def _with(data: dict, dotted: str, value) -> dict:
    data = yaml.safe_load(yaml.safe_dump(data))
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    return data


@pytest.mark.parametrize("field", ["instance.usd_per_hour", "instance.cores", "nightly_rows"])
def test_missing_price_names_the_field(tmp_path, field):
    path = tmp_path / "pricing.yaml"
    path.write_text(yaml.safe_dump(_without(GOOD, field)))
    with pytest.raises(ConfigError, match=rf"{field}: Field required"):
        load_pricing(path)


@pytest.mark.parametrize(
    "field", ["instance.usd_per_hour", "instance.usd_per_dbu", "instance.dbu_per_hour"]
)
def test_negative_price_names_the_field_and_value(tmp_path, field):
    path = tmp_path / "pricing.yaml"
    path.write_text(yaml.safe_dump(_with(GOOD, field, -0.5)))
    with pytest.raises(ConfigError, match=rf"{field}: .*\(got -0.5\)"):
        load_pricing(path)


def test_shipped_pricing_and_bench_configs_load():
    from leanscore.bench.compare import BenchConfig
    from leanscore.jobs.config import load_config

    load_pricing(CONF / "pricing.yaml")
    config = load_config(BenchConfig, CONF / "bench.yaml")
    assert config.prepare is not None and config.prepare.rows >= 2_000_000
    assert config.torch_model is not None and len(config.prepare.recipes) == len(config.artifacts)


def test_savings_and_plain_words():
    no_fixed = Pricing.model_validate(GOOD)  # without fixed costs the bill follows the speed
    base = cost(no_fixed, rows=1_000_000, wall_s=20.0, cores=2)
    fast = cost(no_fixed, rows=1_000_000, wall_s=5.0, cores=2)
    got = savings(base, fast)
    assert got["savings_pct"] == pytest.approx(75.0)
    assert got["monthly_savings_usd"] == pytest.approx(0.75 * base["monthly_usd"])
    pricing = load_pricing(CONF / "pricing.yaml")
    text = cost_model_text(pricing)
    assert pricing.instance.name in text and f"{pricing.nightly_rows:,}" in text


def test_fixed_costs_per_night_make_the_bill_fall_less_than_the_speed_ratio():
    data = {
        **GOOD,
        "driver": {"name": "d", "usd_per_hour": 0.5, "cores": 4},
        "startup_minutes": 6,
        "nights_per_month": 30,
    }
    pricing = Pricing.model_validate(data)
    # per core-second: (1 $/h + 1 DBU/h x 1 $/DBU) / 3600 / 4 cores
    per_core_s = 2.0 / 3600 / 4
    slow = cost(pricing, rows=1_000_000, wall_s=100.0, cores=2)
    fast = cost(pricing, rows=1_000_000, wall_s=10.0, cores=2)
    for got, wall in ((slow, 100.0), (fast, 10.0)):
        scoring = 2 * wall * per_core_s  # 1 M nightly rows, as measured
        hours = 2 * wall / (2 * 4) / 3600  # the cluster's 8 cores score them
        fixed = 0.1 * (2 * 2.0 + 0.5)  # 6 minutes on 2 workers and the driver
        assert got["scoring_usd_per_night"] == pytest.approx(scoring)
        assert got["fixed_usd_per_night"] == pytest.approx(fixed)
        assert got["driver_scoring_usd_per_night"] == pytest.approx(0.5 * hours)
        assert got["monthly_usd"] == pytest.approx(30 * (scoring + fixed + 0.5 * hours))
    # 10x faster, but the bill is not a tenth: the fixed part stays
    assert fast["monthly_usd"] / slow["monthly_usd"] > 0.1 + 1e-3
    text = cost_model_text(pricing)
    assert "6 start-up minutes" in text and "driver (d" in text


def test_shipped_pricing_prices_start_up_and_driver():
    pricing = load_pricing(CONF / "pricing.yaml")
    assert pricing.startup_minutes > 0 and pricing.driver is not None


WINDOWED = {
    **GOOD,
    "workers": 8,
    "window_hours": 1.0,
    "driver": {"name": "d", "usd_per_hour": 0.5, "cores": 4},
    "startup_minutes": 6,
    "nightly_rows": 100_000_000,
}


def test_a_window_prices_each_variant_on_the_fewest_workers_that_finish_in_it():
    pricing = Pricing.model_validate(WINDOWED)
    node_hour_core_s = 4 * 3600  # one 4-core node for the 1-hour window
    # 2 cores for 100 s per million rows: 20,000 core-s a night, 2 nodes' worth of the hour
    slow = cost(pricing, rows=1_000_000, wall_s=100.0, cores=2)
    fast = cost(pricing, rows=1_000_000, wall_s=10.0, cores=2)  # 2,000 core-s: one node
    assert 1 < 20_000 / node_hour_core_s <= 2
    assert (slow["workers"], fast["workers"]) == (2, 1)
    assert slow["within_window"] is True and fast["within_window"] is True
    assert slow["nightly_hours"] == pytest.approx(20_000 / (2 * 4) / 3600)
    assert slow["fixed_usd_per_night"] == pytest.approx(0.1 * (2 * 2.0 + 0.5))
    assert fast["fixed_usd_per_night"] == pytest.approx(0.1 * (1 * 2.0 + 0.5))
    # the per-row part is the cores' time whatever the cluster's size
    fixed_size = Pricing.model_validate({**WINDOWED, "window_hours": None})
    assert cost(fixed_size, rows=1_000_000, wall_s=100.0, cores=2)["workers"] == 8
    assert slow["scoring_usd_per_night"] == pytest.approx(
        cost(fixed_size, rows=1_000_000, wall_s=100.0, cores=2)["scoring_usd_per_night"]
    )
    assert "within 1 hours on the fewest such nodes, at most 8" in cost_model_text(pricing)


def test_a_night_too_long_for_the_window_takes_every_worker_and_says_so():
    pricing = Pricing.model_validate(WINDOWED)
    # 2 cores for 1,000 s per million rows: 200,000 core-s, 14 nodes' worth of the hour
    late = cost(pricing, rows=1_000_000, wall_s=1_000.0, cores=2)
    assert late["workers"] == 8 and late["within_window"] is False
    assert late["nightly_hours"] == pytest.approx(200_000 / (8 * 4) / 3600)
    assert cost(Pricing.model_validate(GOOD), rows=1, wall_s=1.0, cores=1)["within_window"] is None


def test_a_window_must_be_positive():
    with pytest.raises(ValueError, match="window_hours"):
        Pricing.model_validate({**WINDOWED, "window_hours": 0})
