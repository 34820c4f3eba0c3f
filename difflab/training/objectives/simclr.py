"""Self-supervised objective for unlabelled images: SimCLR's NT-Xent (Chen et al. 2020)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.training.augment import simclr_view
from difflab.training.objectives.base import OBJECTIVES, Batch, Objective


def nt_xent(z: Tensor, tau: float) -> Tensor:
    """Per-item NT-Xent loss [2B] of projections z [2B, P] whose rows i and i + B are two views
    of one image (Chen et al. 2020, Eq. 1): cross-entropy of cosine / τ against the partner."""
    n = len(z) // 2
    z = F.normalize(z.float(), dim=1)
    sim = z @ z.T / tau  # [2B, 2B]
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)  # [2B]
    return F.cross_entropy(sim, partner, reduction="none")


class SimCLR(Objective):
    """NT-Xent of `project(features(view))` over two random views of each image (SimCLR, §2.1);
    per sample: the mean of its two views' losses. `model` holds the encoder and the projection."""

    def __init__(self, model: nn.Module, project: Callable[[Tensor], Tensor], tau: float = 0.5):
        self.model, self.project, self.tau = model, project, tau

    def loss(self, batch: Batch, step: int) -> tuple[Tensor, dict]:
        x0, g = batch.x0, batch.generator  # [B, C, H, W] in [-1, 1]
        views = torch.cat([simclr_view(x0, g), simclr_view(x0, g)])  # [2B, C, H, W]
        views = torch.cat([batch.local(v) for v in views.chunk(2)])  # this rank's shard, both views
        per_view = nt_xent(self.project(views), self.tau)  # [2B]
        return per_view.view(2, -1).mean(0), {}  # [B]


@OBJECTIVES.register("simclr")
def simclr(model: nn.Module, *, project: Callable, tau: float = 0.5) -> SimCLR:
    """Contrastive self-supervision of `project(x)` (encoder + projection head inside `model`)."""
    return SimCLR(model, project, tau)
