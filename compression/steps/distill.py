"""``distill``: teacher (the model as it stands) -> a smaller student, trained on
temperature-softened teacher outputs plus hard labels (Hinton et al. 2015). For class logits of
tabular and image models; a text encoder's distillation is ``distill_embeddings`` (another
loss, other options)."""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Literal

from leanscore.compression.steps.base import Step, StepContext, StepState
from pydantic import Field


class DistillStep(Step):
    """Teacher (the model as it stands) -> a smaller student, trained on temperature-softened
    teacher outputs plus hard labels."""

    tasks: ClassVar[frozenset[str]] = frozenset({"classification"})
    requires: ClassVar[frozenset[str]] = frozenset({"train"})

    step: Literal["distill"]
    width: float = Field(default=0.5, gt=0.0, le=1.0, description="student width / teacher's")
    depth: int | None = Field(default=None, ge=1, description="hidden layers the student keeps")
    student_factory: str | None = Field(default=None, pattern=r"^[\w.]+:\w+$")
    student_kwargs: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(default=20, ge=1)
    temperature: float = Field(default=4.0, gt=0.0)
    alpha: float = Field(default=0.7, ge=0.0, le=1.0, description="weight of the soft term")
    lr: float = Field(default=2e-3, gt=0)
    schedule: Literal["constant", "one_cycle"] = Field(
        default="constant",
        description="one_cycle: warm up to lr, then anneal to near zero (a student from scratch)",
    )
    batch_size: int = Field(default=256, ge=1, description="rows per training step")
    seed: int = 0
    compare_hard_labels: bool = Field(
        default=True, description="also train the same student on hard labels alone and report"
    )

    def apply(self, state: StepState, ctx: StepContext) -> dict:
        import torch
        from leanscore.compression.distillation import distill
        from leanscore.compression.models import count_params, shrink, train_classifier

        teacher = state.model
        torch.manual_seed(self.seed)
        if self.student_factory:
            from leanscore.compression.sources import import_factory

            student = import_factory(self.student_factory)(**self.student_kwargs)
        else:
            student = shrink(teacher, width=self.width, depth=self.depth)
        untrained = copy.deepcopy(student)
        train = ctx.train
        distill(
            student,
            teacher,
            train.features,
            train.labels,
            epochs=self.epochs,
            temperature=self.temperature,
            alpha=self.alpha,
            lr=self.lr,
            seed=self.seed,
            progress=ctx.epochs("distill", self.epochs),
            schedule=self.schedule,
            batch_size=self.batch_size,
        )
        detail = {
            "teacher_params": count_params(teacher),
            "student_params": count_params(student),
            "student_fraction_of_teacher": round(count_params(student) / count_params(teacher), 4),
            "temperature": self.temperature,
            "alpha": self.alpha,
            "epochs": self.epochs,
            "schedule": self.schedule,
            "teacher_accuracy": ctx.torch_accuracy(teacher),
            "distilled_student_accuracy": ctx.torch_accuracy(student),
        }
        if self.compare_hard_labels and train.labels is not None:
            ctx.say("  the same student on hard labels alone, for comparison")
            train_classifier(
                untrained,
                train.features,
                train.labels,
                epochs=self.epochs,
                lr=self.lr,
                seed=self.seed,
                progress=ctx.epochs("hard-label student", self.epochs),
                schedule=self.schedule,
                batch_size=self.batch_size,
            )
            detail["hard_label_student_accuracy"] = ctx.torch_accuracy(untrained)
            detail["distillation_gain_points"] = {
                name: round(100 * (acc - detail["hard_label_student_accuracy"][name]), 3)
                for name, acc in detail["distilled_student_accuracy"].items()
            }
        state.model = student
        return detail
