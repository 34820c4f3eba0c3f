"""Classification objectives: noise-aware p(y | x_σ) for guidance, and clean classifiers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.core.types import bcast
from difflab.training.densities import sample_sigma
from difflab.training.objectives.base import OBJECTIVES, Batch, Objective


class NoisedClassification(Objective):
    """−log p(y | x0 + σ·ε) per sample, σ from a noise-aware density (Dhariwal & Nichol 2021, §4)."""

    def __init__(self, model: nn.Module, density: dict[str, Any]):
        self.model, self.density = model, density

    def loss(self, batch: Batch, step: int) -> tuple[Tensor, dict]:
        x0, g = batch.x0, batch.generator  # [B, C, H, W] in [-1, 1]
        sigma = sample_sigma(self.density, len(x0), g)  # [B]
        x = x0 + bcast(sigma, x0) * torch.randn(x0.shape, generator=g)  # [B, C, H, W] σ-space
        x, sigma, labels = (batch.local(t) for t in (x, sigma, batch.labels))
        return F.cross_entropy(self.model.logits(x, sigma), labels, reduction="none"), {}


def shift(x: Tensor, g: torch.Generator) -> Tensor:
    """Random ±1 pixel translation per image, padding with the background value −1."""
    n, _, h, w = x.shape
    p = F.pad(x, (1, 1, 1, 1), value=-1.0)  # [N, C, H+2, W+2]
    dy, dx = torch.randint(0, 3, (2, n), generator=g)  # [N] offsets into the padding
    rows = (torch.arange(h)[None] + dy[:, None])[:, :, None]  # [N, H, 1]
    cols = (torch.arange(w)[None] + dx[:, None])[:, None, :]  # [N, 1, W]
    return p[torch.arange(n)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)  # [N, C, H, W]


class Classification(Objective):
    """Cross-entropy of `logits(x)` on clean images, optionally shifted by ±1 pixel."""

    def __init__(
        self, model: nn.Module, logits: Callable[[Tensor], Tensor] | None = None, augment=False
    ):
        self.model, self.logits, self.augment = model, logits or model, augment

    def loss(self, batch: Batch, step: int) -> tuple[Tensor, dict]:
        x = shift(batch.x0, batch.generator) if self.augment else batch.x0  # [B, C, H, W]
        x, labels = batch.local(x), batch.local(batch.labels)
        return F.cross_entropy(self.logits(x), labels, reduction="none"), {}


@OBJECTIVES.register("noised_classification")
def noised_classification(model: nn.Module, *, density: dict[str, Any]) -> NoisedClassification:
    """A noise-aware classifier's objective (`model.logits(x, σ)`), for classifier guidance."""
    return NoisedClassification(model, density)


@OBJECTIVES.register("classification")
def classification(
    model: nn.Module, *, logits: Callable | None = None, augment: bool = False
) -> Classification:
    """A clean classifier's objective (`logits(x)`, default the model's forward)."""
    return Classification(model, logits, augment)
