"""What a compression step is, and the registry that finds one by its name.

A step is one pydantic model (its options, strict: an unknown or out-of-range option is refused
when the recipe is read) that also carries the code applying it, in the style of Microsoft
Olive's passes. Defining a subclass with a ``step: Literal["name"]`` field registers it under
that name (``__pydantic_init_subclass__``), so the recipe's ``steps`` list is validated against
every registered step and a typo lists the known ones. Each step declares where it runs
(``side``: on the PyTorch module, the export itself, or the ONNX graph), which model families
and tasks it applies to, and what data it needs; the engine (``leanscore.compression.recipe``)
checks those before any work and measures, gates and records every step the same way.

Heavy imports (torch training code, ``onnxruntime.quantization``) belong inside ``apply`` so a
recipe file validates without them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

from leanscore.compression.errors import RecipeError
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from leanscore.compression.data import LabelledData
    from leanscore.compression.torch_export import TorchExport

Side = Literal["torch", "export", "onnx"]

TASKS = frozenset({"classification", "regression", "embedding"})
# The families the engine compresses: tabular and image models are torch modules fed one float
# tensor; onnx_model is an ONNX file as given; text_classifier a Hugging Face classifier
# (exported before the recipe, so ONNX-side steps only); text_embedding a Hugging Face encoder
# with mean pooling (a torch module fed token ids).
FAMILIES = frozenset({"tabular", "image", "onnx_model", "text_classifier", "text_embedding"})

_REGISTRY: dict[str, type[Step]] = {}

__all__ = [
    "FAMILIES",
    "TASKS",
    "RecipeError",
    "Step",
    "StepContext",
    "StepState",
    "registered_steps",
]


class Step(BaseModel):
    """One compression step: its options (the fields) and how it applies (``apply``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: where the step runs: on the PyTorch module, the export itself, or the ONNX graph
    side: ClassVar[Side] = "torch"
    #: the model families it applies to (see FAMILIES)
    families: ClassVar[frozenset[str]] = frozenset({"tabular", "image"})
    #: the tasks it applies to
    tasks: ClassVar[frozenset[str]] = TASKS
    #: data it needs: "train" (training rows), "labels" (labelled training rows)
    requires: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        spec = cls.model_fields.get("step")
        if spec is None:  # a shared base of several steps, not a step itself
            return
        (name,) = get_args(spec.annotation)
        known = _REGISTRY.get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise TypeError(
                f"step {name!r} is defined twice: {known.__module__}.{known.__qualname__} "
                f"and {cls.__module__}.{cls.__qualname__}"
            )
        _REGISTRY[name] = cls

    def needs(self) -> frozenset[str]:
        """The data this step, with these options, needs (default: ``requires``)."""
        return self.requires

    def check_graph(self, ops: set[str], where: str) -> None:
        """Refuse (``RecipeError``), before any work, an ONNX source graph holding ``ops`` that
        this step cannot work on; ``where`` names the step in the recipe."""

    def apply(self, state: StepState, ctx: StepContext) -> dict:
        """Change ``state`` (the torch model or the ONNX bytes); return what the step did, for
        the manifest (the engine adds the measurements)."""
        raise NotImplementedError(f"step {type(self).__name__} has no apply()")


def registered_steps() -> dict[str, type[Step]]:
    """Every registered step by name (the modules ``leanscore.compression.steps`` imports)."""
    return dict(sorted(_REGISTRY.items()))


@dataclass
class StepState:
    """The model as the recipe has left it: a torch module until ``export``, then ONNX bytes."""

    model: Any  # torch.nn.Module | None
    original: Any  # the model as given (a distillation's teacher)
    onnx_bytes: bytes | None = None
    notes: list[str] = field(default_factory=list)
    measured: bytes | None = None  # the last export of the torch model, as evaluated
    changed: bool = False  # whether a torch-side step has changed the model as given


@dataclass
class StepContext:
    """What a step may read: the data, the task and family, the baseline, the exporter."""

    example_input: Any  # torch.Tensor | None
    train: LabelledData | None
    evaluation: LabelledData
    calibration: LabelledData | None
    task: str
    say: Callable[[str], None]
    baseline: Any  # leanscore.compression.recipe.Baseline
    also_evaluate: dict[str, LabelledData] | None
    exporter: TorchExport | None = None
    recipe: Any = None  # leanscore.compression.recipe.Recipe
    result_output: str | None = None
    family: str = "tabular"

    def epochs(self, label: str, total: int) -> Callable[[int, float], None]:
        def report(epoch: int, loss: float) -> None:
            self.say(f"  {label} epoch {epoch + 1}/{total} loss {loss:.4f}")

        return report

    def torch_accuracy(self, model) -> dict:
        """Accuracy of a torch classifier on the evaluation data and each extra held-out set."""
        import numpy as np
        from leanscore.compression.models import predict_proba

        out = {}
        sets = {"evaluation": self.evaluation, **(self.also_evaluate or {})}
        for name, data in sets.items():
            if data.labels is not None:
                probs = predict_proba(model, data.features)
                out[name] = round(float(np.mean(probs.argmax(1) == data.labels)), 5)
        return out

    def text_exporter(self, step: str) -> TorchExport:
        """The exporter of a text model (it holds the tokenizer), or the error naming ``step``."""
        if self.exporter is None or self.exporter.tokenizer is None:
            raise RecipeError(
                f"'{step}' works on a Hugging Face text encoder (model.kind: huggingface with "
                f"task: embedding); this model is family {self.family!r}"
            )
        return self.exporter
