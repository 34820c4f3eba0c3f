"""The unCLIP prior's objective: predict the clean image embedding (Ramesh et al. 2022, §2.2)."""

from __future__ import annotations

from torch import Tensor

from difflab.core.precond import Precond
from difflab.core.types import Cond, bcast
from difflab.training.objectives.base import OBJECTIVES
from difflab.training.objectives.denoising import DenoisingObjective


class PriorObjective(DenoisingObjective):
    """L_prior = E_{σ,ε}‖D(z_σ; σ, y) − x0‖² with z_σ = x0 + σε (Ramesh et al. 2022, §2.2, the
    prior's loss): the mean-squared error of the denoiser itself, whatever its parameterization
    (for "x0", D = F_θ and this is the native loss). The caption condition y is dropped to ∅ with
    the conditioner's p_uncond, drawn from the run's generator (conditioning.base.drop), for CFG.
    """

    def per_sample(self, x0: Tensor, sigma: Tensor, noise: Tensor, cond: Cond) -> Tensor:
        """‖D(x0 + σε; σ, y) − x0‖² per sample [B]."""
        x = x0 + bcast(sigma, x0) * noise  # [B, D] σ-space
        return (self.model(x, sigma, cond).float() - x0).pow(2).flatten(1).mean(1)  # [B]


@OBJECTIVES.register("prior")
def prior(denoiser: Precond, *, density: str | dict = "discrete") -> PriorObjective:
    """train.loss = {name = "prior"}: the unCLIP prior's x0 loss (Ramesh et al. 2022, §2.2)."""
    return PriorObjective(denoiser, density)
