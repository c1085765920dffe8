"""Pure functions: batch building, configs, pricing, recipes and the accuracy gate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from leanscore.bench.pricing import Pricing, cost, load_pricing
from leanscore.compression.recipe import AccuracyGateError, LabelledData, Recipe, run_recipe
from leanscore.compression.tabular_inputs import from_array, from_columns
from leanscore.jobs.config import ConfigError, apply_overrides, load_config, validate


def test_from_columns_casts_and_flags_nulls():
    cols = [pd.Series([1, 2, 3], dtype="int64"), pd.Series([0.5, None, 2.0])]
    batch = from_columns(cols, ["a", "b"])
    assert batch.matrix.dtype == np.float32 and batch.matrix.flags["C_CONTIGUOUS"]
    assert batch.bad.tolist() == [False, True, False]
    assert batch.reasons[1] == "column 'b' is NaN (or null)"
    np.testing.assert_array_equal(batch.matrix[2], [3.0, 2.0])


def test_from_columns_rejects_strings_naming_the_column():
    with pytest.raises(TypeError, match="feature column 'name' has dtype object"):
        from_columns([pd.Series(["x", "y"])], ["name"])


def test_from_array_handles_doubles_and_wrong_lengths():
    series = pd.Series([np.array([1.0, 2.0]), np.array([1.0]), None])
    batch = from_array(series, "v", 2)
    assert batch.bad.tolist() == [False, True, True]
    assert batch.reasons[1:] == [
        "column 'v' has 1 elements, the model expects 2",
        "column 'v' is null",
    ]
    np.testing.assert_array_equal(batch.matrix[0], [1.0, 2.0])


def test_overrides_parse_yaml_values():
    data = apply_overrides({"a": {"b": 1}}, ["a.b=8192", "c=true", "d=[x, y]"])
    assert data == {"a": {"b": 8192}, "c": True, "d": ["x", "y"]}
    with pytest.raises(ConfigError, match="override 'nokey' must look like key=value"):
        apply_overrides({}, ["nokey"])


def test_invalid_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=f"{bad} is not valid YAML"):
        load_config(Pricing, bad)


PRICING = {
    "instance": {
        "name": "t",
        "usd_per_hour": 0.36,
        "cores": 4,
        "dbu_per_hour": 1.0,
        "usd_per_dbu": 0.36,
    },
    "workers": 2,
    "nightly_rows": 10_000_000,
    "nights_per_month": 30,
}


def test_cost_matches_hand_computation():
    pricing = Pricing.model_validate(PRICING)
    # (0.36 + 1.0 * 0.36) $/h / 3600 / 4 cores = 0.00005 $ per core-second
    got = cost(pricing, rows=2_000_000, wall_s=10.0, cores=2)
    assert got["core_seconds_per_million_rows"] == pytest.approx(10.0)  # 2 cores * 10 s / 2 M
    assert got["usd_per_million_rows"] == pytest.approx(0.0005)
    assert got["nightly_usd"] == pytest.approx(0.005)
    assert got["monthly_usd"] == pytest.approx(0.15)
    assert got["nightly_hours"] == pytest.approx(100.0 / 8 / 3600)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"instance": {**PRICING["instance"], "usd_per_hour": -1}}, "instance.usd_per_hour"),
        ({"workers": None}, "workers"),
    ],
)
def test_bad_pricing_names_the_field(tmp_path, change, message):
    import yaml

    data = {**PRICING, **change}
    data = {k: v for k, v in data.items() if v is not None}
    path = tmp_path / "pricing.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message):
        load_pricing(path)


def test_shipped_configs_are_valid():
    from pathlib import Path

    from leanscore.bench.compare import BenchConfig
    from leanscore.jobs.compress import CompressConfig
    from leanscore.jobs.score import ScoreConfig

    conf = Path(__file__).resolve().parents[1] / "conf"
    load_pricing(conf / "pricing.yaml")
    load_config(ScoreConfig, conf / "nightly.yaml")
    load_config(BenchConfig, conf / "bench.yaml")
    load_config(CompressConfig, conf / "compress-digits-mlp.yaml")
    recipes = sorted((conf / "recipes").glob("*.yaml"))
    names = [load_config(Recipe, recipe).name for recipe in recipes]
    assert "minilm-dynamic-int8" in names  # text recipes are recipes like any other


def test_unknown_recipe_step_is_named():
    with pytest.raises(ConfigError, match="steps.0: Input tag 'shrink' found using 'step'"):
        validate(
            Recipe, {"name": "r", "max_accuracy_drop": 1, "steps": [{"step": "shrink"}]}, source="r"
        )


def test_impossible_prune_ratio_is_named():
    steps = [{"step": "prune", "kind": "structured", "ratio": 1.5}]
    with pytest.raises(ConfigError, match="steps.0.prune.ratio: Input should be less than 1"):
        validate(Recipe, {"name": "r", "max_accuracy_drop": 1, "steps": steps}, source="r")


def test_gate_rejects_an_over_budget_recipe(small_model, digits):
    train, held_out = digits
    recipe = Recipe.model_validate(
        {
            "name": "too-much",
            "max_accuracy_drop": 0.5,
            "steps": [
                {"step": "prune", "kind": "unstructured", "ratio": 0.99, "finetune_epochs": 0}
            ],
        }
    )
    with pytest.raises(
        AccuracyGateError, match=r"recipe 'too-much' loses \d+\.\d\d accuracy points"
    ):
        run_recipe(
            recipe,
            small_model,
            example_input=torch.from_numpy(held_out.features[:4]),
            train=LabelledData(train.features, train.labels),
            evaluation=LabelledData(held_out.features, held_out.labels),
        )
