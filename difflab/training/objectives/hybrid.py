"""Improved DDPM's hybrid objective: L_simple plus λ·L_vlb for the learned-variance head."""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.posterior import StepPair, log_variance, vlb_step_bits
from difflab.core.precond import Precond
from difflab.core.types import Cond, bcast
from difflab.training.densities import as_spec
from difflab.training.objectives.base import OBJECTIVES
from difflab.training.objectives.denoising import DenoisingObjective, native_loss


def hybrid_loss(
    denoiser: Precond, x0: Tensor, sigma: Tensor, noise: Tensor, cond: dict | None = None, *,
    vlb_weight: float = 0.001,
) -> Tensor:  # fmt: skip
    """L_hybrid = L_simple + λ·T·L_t (one-sample estimate of λ·L_vlb), with x̂0 stopped in the VLB
    term so it trains only the variance head (Nichol & Dhariwal 2021, §3.1, Eq. 16); [B]."""
    schedule = denoiser.schedule
    check_hybrid(denoiser)
    x = x0 + bcast(sigma, x0) * noise  # [B, ...] σ-space
    out, extra, s = denoiser.net_output(x, sigma, cond)
    simple = native_loss(out, s, x, x0)  # [B]
    denoised = (bcast(s.c_skip, x) * x + bcast(s.c_out, x) * out).detach().double()
    t = schedule.sigma_to_t(sigma.double()).round().long()  # [B] integer steps of the grid
    ac = schedule.alphas_cumprod.to(x.device)
    a_t, a_prev = ac[t], torch.where(t > 0, ac[(t - 1).clamp(min=0)], torch.ones_like(ac[t]))
    pair = StepPair(bcast(a_t, x), bcast(a_prev, x))
    clip = bcast(StepPair(ac[1:2], ac[0:1]).beta_tilde.expand_as(a_t), x)  # β̃ of t = 1
    logvar = log_variance(pair, "learned", extra.double(), clip=clip)  # [B, ...]
    x_t = pair.a_t.sqrt() * x.double()  # native VP state
    vlb = vlb_step_bits(pair, x_t, x0.double(), denoised, logvar, t == 0)  # [B]
    return simple + vlb_weight * schedule.num_timesteps * vlb.float()


def check_hybrid(denoiser: Precond, density: str | dict = "discrete") -> None:
    """UsageError unless the model has a learned-variance head on a discrete VP schedule and σ
    is drawn on the schedule's steps."""
    schedule = denoiser.schedule
    if not (denoiser.learned_variance and schedule.discrete and schedule.vp):
        raise UsageError(
            "loss 'hybrid' needs model.learned_variance = true and a discrete VP schedule "
            '(linear/cosine); use loss = {name = "denoising"} otherwise'
        )
    name = as_spec(density)["name"]
    if name not in ("discrete", "importance"):
        raise UsageError(
            f"loss 'hybrid' needs σ on the schedule's steps, not sigma density {name!r}; "
            'use sigma_density = {name = "discrete"} or {name = "importance"}'
        )


class HybridObjective(DenoisingObjective):
    """The denoising objective with hybrid_loss per sample (Nichol & Dhariwal 2021, Eq. 16)."""

    def __init__(self, denoiser: Precond, density: str | dict, vlb_weight: float):
        check_hybrid(denoiser, density)
        super().__init__(denoiser, density)
        self.vlb_weight = vlb_weight

    def per_sample(self, x0: Tensor, sigma: Tensor, noise: Tensor, cond: Cond) -> Tensor:
        return hybrid_loss(self.model, x0, sigma, noise, cond, vlb_weight=self.vlb_weight)


@OBJECTIVES.register("hybrid")
def hybrid(
    denoiser: Precond, *, density: str | dict = "discrete", vlb_weight: float = 0.001
) -> HybridObjective:
    """train.loss = {name = "hybrid", vlb_weight = 0.001} (Nichol & Dhariwal 2021, §3.1)."""
    return HybridObjective(denoiser, density, vlb_weight)
