"""The step registry and the engine's checks of a recipe against the model's family, task and
data, before any work; and the one parity check, fed by name."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest
import torch
from leanscore.compression.data import LabelledData
from leanscore.compression.recipe import Recipe, RecipeError, check_plan
from leanscore.compression.steps import registered_steps
from leanscore.compression.steps.base import FAMILIES, TASKS, Step
from leanscore.jobs.config import ConfigError, validate
from torch import nn

TEXT_STEPS = ("distill_embeddings", "drop_layers", "prune_ffn")


def test_every_step_module_is_registered_with_its_declarations():
    steps = registered_steps()
    assert set(steps) == {
        "distill",
        "distill_embeddings",
        "drop_layers",
        "export",
        "factorize",
        "prune",
        "prune_ffn",
        "quantize",
        "sparsify",
        "truncate_trees",
    }
    for name, cls in steps.items():
        assert cls.side in ("torch", "export", "onnx"), name
        assert cls.families and cls.families <= FAMILIES, name
        assert cls.tasks and cls.tasks <= TASKS, name
        assert cls.__module__ == f"leanscore.compression.steps.{name}", name
    assert steps["quantize"].families == FAMILIES  # every family quantizes
    for name in TEXT_STEPS:
        assert steps[name].families == {"text_embedding"} and steps[name].side == "torch"


def test_a_typo_lists_the_known_steps_and_an_option_typo_is_named():
    steps = [{"step": "prune_fnn", "keep_ratio": 0.5}]
    with pytest.raises(ConfigError, match="does not match any of the expected tags") as err:
        validate(Recipe, {"name": "r", "min_fidelity": 0.9, "steps": steps}, source="r.yaml")
    for name in registered_steps():
        assert f"'{name}'" in str(err.value)
    steps = [{"step": "prune_ffn", "keep_ratio": 0.5, "refitt": False}]
    with pytest.raises(ConfigError, match="refitt"):
        validate(Recipe, {"name": "r", "min_fidelity": 0.9, "steps": steps}, source="r.yaml")


def test_a_subclass_registers_by_its_step_name_and_a_second_one_is_refused():
    from leanscore.compression.steps import base

    try:

        class Identity(Step):
            step: Literal["identity_for_test"]

            def apply(self, state, ctx) -> dict:
                return {}

        assert registered_steps()["identity_for_test"] is Identity
        with pytest.raises(TypeError, match="'identity_for_test' is defined twice"):

            class Other(Step):
                step: Literal["identity_for_test"]

    finally:
        base._REGISTRY.pop("identity_for_test", None)
    assert "identity_for_test" not in registered_steps()


def _plan(steps: list[dict], *, family: str, task: str, onnx_source=False, train=None, **budget):
    recipe = Recipe.model_validate(
        {"name": "r", "steps": steps, **(budget or {"min_fidelity": 0.5})}
    )
    check_plan(recipe, onnx_source=onnx_source, train=train, task=task, labels=False, family=family)


def test_steps_are_checked_against_family_task_and_data_before_any_work():
    texts = LabelledData(np.array(["a text", "another text"], dtype=object), None)
    with pytest.raises(RecipeError, match=r"\('drop_layers'\) applies to text_embedding models; "):
        _plan([{"step": "drop_layers", "keep": [0]}], family="tabular", task="classification")
    with pytest.raises(RecipeError, match=r"this model is text_embedding \(its steps: .*prune_ffn"):
        _plan(
            [{"step": "prune", "kind": "structured", "ratio": 0.5}],
            family="text_embedding",
            task="embedding",
        )
    with pytest.raises(
        RecipeError, match=r"applies to task classification; the task here is 'embedding'"
    ):
        _plan([{"step": "distill"}], family="tabular", task="embedding")
    with pytest.raises(RecipeError, match=r"\('prune_ffn'\) needs training data"):
        _plan([{"step": "prune_ffn", "keep_ratio": 0.5}], family="text_embedding", task="embedding")
    # without the refit it ranks by weights and needs no text
    _plan(
        [{"step": "prune_ffn", "keep_ratio": 0.5, "refit": False}],
        family="text_embedding",
        task="embedding",
    )
    _plan([{"step": "distill_embeddings"}], family="text_embedding", task="embedding", train=texts)
    with pytest.raises(RecipeError, match=r"\('drop_layers'\) needs a PyTorch model, but the"):
        _plan(
            [{"step": "drop_layers", "keep": [0]}],
            family="text_classifier",
            task="classification",
            onnx_source=True,
        )
    with pytest.raises(RecipeError, match="min_cosine_p1 gates embeddings; the task here is"):
        _plan(
            [{"step": "export"}],
            family="tabular",
            task="classification",
            min_fidelity=0.5,
            min_cosine_p1=0.5,
        )
    with pytest.raises(ValueError, match="'drop_layers' works on the PyTorch model and must come"):
        Recipe.model_validate(
            {
                "name": "r",
                "min_fidelity": 0.5,
                "steps": [{"step": "export"}, {"step": "drop_layers", "keep": [0]}],
            }
        )


class _Difference(nn.Module):
    def __init__(self, sign: float):
        super().__init__()
        self.sign = sign

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        return left + self.sign * right


def test_one_parity_check_takes_feeds_by_name():
    """Tabular (one array) and text (token ids and mask) exports share one check: the feeds go
    to ONNX Runtime by name and to the torch module in order."""
    from leanscore.compression.torch_export import ExportParityError, check_parity
    from onnx import TensorProto, helper

    left = helper.make_tensor_value_info("left", TensorProto.FLOAT, [None, 3])
    right = helper.make_tensor_value_info("right", TensorProto.FLOAT, [None, 3])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 3])
    graph = helper.make_graph(
        [helper.make_node("Sub", ["left", "right"], ["out"])], "g", [left, right], [out]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx_bytes = model.SerializeToString()
    rng = np.random.default_rng(0)
    feeds = {
        "left": rng.normal(size=(4, 3)).astype(np.float32),
        "right": rng.normal(size=(4, 3)).astype(np.float32),
    }
    assert check_parity(_Difference(-1.0), onnx_bytes, feeds, atol=1e-6) < 1e-6
    with pytest.raises(ExportParityError, match=r"differs from torch by .* on 4 texts"):
        check_parity(_Difference(1.0), onnx_bytes, feeds, atol=1e-6, what="texts")
