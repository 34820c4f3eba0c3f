"""Class conditioning: a label as a one-hot vector in the "vector" slot (ADM, Dhariwal & Nichol
2021, §3; classifier-free guidance drops it to zeros, Ho & Salimans 2022)."""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.conditioning.base import (
    CONDITIONERS,
    Conditioner,
    ConditionRequest,
    class_labels,
    require_labels,
)
from difflab.core.errors import UsageError
from difflab.core.types import Cond


@CONDITIONERS.register("class")
class ClassConditioner(Conditioner):
    """A class label as a one-hot vector, projected and added to the noise embedding (ADM §3)."""

    kind = "class"
    takes = ("classes",)
    summary = "is conditioned on classes"

    def __init__(self, *, num_classes: int, p_uncond: float = 0.1):
        super().__init__(p_uncond)
        if not isinstance(num_classes, int) or num_classes < 2:
            raise UsageError(
                f"class conditioner num_classes must be an integer >= 2, got {num_classes!r}"
            )
        self.num_classes = num_classes

    @classmethod
    def resolve(cls, spec: dict, dataset, dataset_name: str) -> dict:
        """num_classes from the data (a larger given value is kept, a smaller one refused)."""
        require_labels(spec, dataset, dataset_name)
        spec.setdefault("num_classes", dataset.num_classes)
        if spec["num_classes"] < dataset.num_classes:
            raise UsageError(
                f"cond num_classes={spec['num_classes']} but the data has {dataset.num_classes} "
                "classes; raise num_classes or leave it out"
            )
        return spec

    def net_options(self) -> dict[str, int]:
        return {"cond_vector_dim": self.num_classes}

    def from_classes(self, labels: Tensor) -> Cond:
        """{"vector": one-hot [B, K], "labels": [B]}; a class outside 0..K−1 is a UsageError."""
        labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            bad = labels[(labels < 0) | (labels >= self.num_classes)][0].item()
            raise UsageError(
                f"class {bad} is outside this model's classes 0..{self.num_classes - 1}; "
                "pass a class in that range"
            )
        vector = torch.nn.functional.one_hot(labels, self.num_classes).float()  # [B, K]
        return {"vector": vector, "labels": labels}

    def from_labels(self, labels: Tensor, generator: torch.Generator | None = None) -> Cond:
        return self.from_classes(labels)

    def build(self, request: ConditionRequest) -> tuple[Cond, dict[str, list]]:
        """The request's classes cycled (or every class in turn), one-hot."""
        labels = class_labels(request, self.num_classes)  # [n]
        return self.from_classes(labels), {"classes": labels.tolist()}
