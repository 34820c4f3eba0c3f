"""Contrastive image–caption objective of the noise-aware encoder (Liu et al. 2023)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.core.types import bcast
from difflab.nets.noise_aware import MAX_LOGIT_SCALE
from difflab.training.densities import sample_sigma
from difflab.training.objectives.base import OBJECTIVES, Batch, Objective, Stateful


class GeneratorState:
    """A torch.Generator as a stateful part."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def state_dict(self) -> dict[str, Tensor]:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["state"])


class Contrastive(Objective):
    """Symmetric InfoNCE (Radford et al. 2021, Fig. 3) of noised images x0 + σ·ε against one
    random caption of their class; σ from a noise-aware density.

    Labels repeat within a batch, so each row's target spreads uniformly over the captions (and
    images) of the same class instead of CLIP's one-hot diagonal. Per sample: the mean of its
    image→text row and text→image column cross-entropies.
    """

    def __init__(
        self, model: nn.Module, density: dict[str, Any], pooled: Tensor, owner: Tensor, seed: int
    ):
        self.model, self.density = model, density
        self.pooled, self.owner = pooled, owner  # [T, D] unit caption embeddings, [T] their class
        self.counts = torch.bincount(owner)  # [K]
        self.starts = torch.cumsum(self.counts, 0) - self.counts  # [K]; captions grouped by class
        self.captions = torch.Generator().manual_seed(seed)  # which caption each image meets

    def loss(self, batch: Batch, step: int) -> tuple[Tensor, dict]:
        x0, g = batch.x0, batch.generator  # [B, C, H, W] in [-1, 1]
        sigma = sample_sigma(self.density, len(x0), g)  # [B]
        x = x0 + bcast(sigma, x0) * torch.randn(x0.shape, generator=g)  # [B, C, H, W] σ-space
        x, sigma, labels = (batch.local(t) for t in (x, sigma, batch.labels))
        k = labels.cpu()  # [B]
        u = torch.rand(len(k), generator=self.captions)  # [B]
        pick = self.starts[k] + (u * self.counts[k]).long().clamp(max=self.counts[k] - 1)  # [B]
        text = self.pooled[pick].to(x.device)  # [B, D]
        image = self.model.embed(x, sigma)  # [B, D]
        scale = self.model.logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()
        logits = scale * image @ text.T  # [B, B]
        same = (labels[:, None] == labels[None, :]).float()  # [B, B], symmetric
        target = same / same.sum(1, keepdim=True)  # [B, B]
        rows = F.cross_entropy(logits, target, reduction="none")  # [B] image → text
        cols = F.cross_entropy(logits.T, target, reduction="none")  # [B] text → image
        return (rows + cols) / 2, {}

    def parts(self) -> dict[str, Stateful]:
        return {"captions": GeneratorState(self.captions)}


@OBJECTIVES.register("contrastive")
def contrastive(
    model: nn.Module, *, density: dict[str, Any], pooled: Tensor, owner: Tensor, seed: int = 1
) -> Contrastive:
    """The noise-aware encoder's objective against a caption table (`pooled`, `owner`)."""
    return Contrastive(model, density, pooled, owner, seed)
