"""Pricing files: a missing or negative price fails naming the field; the shipped files load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from leanscore.jobs.config import ConfigError
from leanscore.jobs.pricing import cost, cost_model_text, load_pricing, savings

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
    from leanscore.jobs.bench import BenchConfig
    from leanscore.jobs.config import load_config

    load_pricing(CONF / "pricing.yaml")
    config = load_config(BenchConfig, CONF / "bench.yaml")
    assert config.prepare is not None and config.prepare.rows >= 2_000_000
    assert config.torch_model is not None and len(config.prepare.recipes) == len(config.artifacts)


def test_savings_and_plain_words():
    pricing = load_pricing(CONF / "pricing.yaml")
    base = cost(pricing, rows=1_000_000, wall_s=20.0, cores=2)
    fast = cost(pricing, rows=1_000_000, wall_s=5.0, cores=2)
    got = savings(base, fast)
    assert got["savings_pct"] == pytest.approx(75.0)
    assert got["monthly_savings_usd"] == pytest.approx(0.75 * base["monthly_usd"])
    text = cost_model_text(pricing)
    assert pricing.instance.name in text and f"{pricing.nightly_rows:,}" in text
