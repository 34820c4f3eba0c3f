"""Denoising score matching in F-space, the native loss of every parameterization."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from difflab.conditioning.base import drop
from difflab.core.precond import Precond
from difflab.core.types import Cond, bcast, net_cond
from difflab.training.densities import as_spec, build_density
from difflab.training.objectives.base import OBJECTIVES, Batch, Objective, Stateful


def denoising_loss(
    denoiser: Precond, x0: Tensor, sigma: Tensor, noise: Tensor, cond: dict | None = None
) -> Tensor:
    """Per-sample ‖F_θ − (x0 − c_skip·x)/c_out‖², the native loss of each parameterization.

    Since D − x0 = c_out·(F − target), this is ‖D − x0‖²/c_out² (Karras et al. 2022, Eq. 8):
    L_simple for ε (Ho et al. 2020, Eq. 14), the v-loss, flow matching and the EDM loss.
    """
    x = x0 + bcast(sigma, x0) * noise  # [B, ...] σ-space
    out, _, s = denoiser.net_output(x, sigma, cond)
    return native_loss(out, s, x, x0)


def native_loss(out: Tensor, s, x: Tensor, x0: Tensor) -> Tensor:
    """‖F − (x0 − c_skip·x)/c_out‖² per sample [B] (Karras et al. 2022, Eq. 8)."""
    target = (x0 - bcast(s.c_skip, x0) * x) / bcast(s.c_out, x0)
    return (out.float() - target).pow(2).flatten(1).mean(1)  # [B]


def training_cond(denoiser: Precond, batch: Batch) -> Cond:
    """This rank's condition slots, dropped to ∅ with p_uncond for CFG (Ho & Salimans 2022)."""
    conditioner = denoiser.conditioner
    if conditioner is None:
        return {}
    g = batch.generator
    cond = drop(conditioner.for_training(batch.x0, batch.labels, g), conditioner.p_uncond, g)
    return {k: batch.local(v) for k, v in net_cond(cond).items()}


class DenoisingObjective(Objective):
    """E_{σ,ε}‖F_θ − target‖² with σ from the objective's density; an importance density gets the
    per-sample losses back and reweights them by 1/(T·p_t) (Nichol & Dhariwal 2021, §3.3)."""

    def __init__(self, denoiser: Precond, density: str | dict = "lognormal"):
        self.model = denoiser
        self.density = build_density(density, denoiser.schedule)
        self.density_spec = as_spec(density)
        self.single_process = bool(self.density.state_dict())  # a loss history of this rank

    def per_sample(self, x0: Tensor, sigma: Tensor, noise: Tensor, cond: Cond) -> Tensor:
        """The loss of each sample [B] at its σ and noise."""
        return denoising_loss(self.model, x0, sigma, noise, cond)

    def loss(self, batch: Batch, step: int) -> tuple[Tensor, dict[str, Any]]:
        """Draw σ, ε and the condition for the whole global batch (every rank alike), then
        train on this rank's shard (Ho et al. 2020, Algorithm 1)."""
        x0, g = batch.x0, batch.generator  # [N·B, ...]
        draw = self.density.draw(len(x0), g)  # σ [N·B]
        noise = torch.randn(x0.shape, generator=g)  # [N·B, ...]
        cond = training_cond(self.model, batch)
        x0, sigma, noise = (batch.local(t) for t in (x0, draw.sigma, noise))
        per_sample = self.per_sample(x0, sigma, noise, cond)  # [B]
        self.density.observe(draw, per_sample)
        if draw.weight is not None:
            per_sample = per_sample * draw.weight.to(per_sample)
        return per_sample, {}

    def parts(self) -> dict[str, Stateful]:
        return {self.density_spec["name"]: self.density} if self.single_process else {}


@OBJECTIVES.register("denoising")
def denoising(denoiser: Precond, *, density: str | dict = "lognormal") -> DenoisingObjective:
    """train.loss = {name = "denoising"}: the native loss (Karras et al. 2022, Eq. 8)."""
    return DenoisingObjective(denoiser, density)
