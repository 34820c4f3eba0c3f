"""VP posterior q(x_{t−1} | x_t, x0) for any (respaced) step pair, from ᾱ alone, and the learned
reverse variance of improved DDPM. Shared by the ddpm sampler, the hybrid loss and the VLB."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def alpha_bar(sigma: Tensor) -> Tensor:
    """ᾱ of a VP process at σ-space level σ: ᾱ = 1/(1+σ²) (ARCHITECTURE §1)."""
    return 1 / (1 + sigma**2)


@dataclass
class StepPair:
    """β, β̃ and the posterior-mean coefficients of the step t → t−1 (Ho et al. 2020, Eq. 7).

    `a_t`, `a_prev` are ᾱ_t, ᾱ_{t−1} (ᾱ_{t−1} = 1 for the last step to the data); respacing
    recomputes β = 1 − ᾱ_t/ᾱ_{t−1} from the ᾱ subset (Nichol & Dhariwal 2021, §4).
    """

    a_t: Tensor
    a_prev: Tensor

    @property
    def beta(self) -> Tensor:
        return 1 - self.a_t / self.a_prev

    @property
    def beta_tilde(self) -> Tensor:
        """β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t)·β_t (Ho et al. 2020, Eq. 7)."""
        return (1 - self.a_prev) / (1 - self.a_t) * self.beta

    def mean(self, x_t: Tensor, x0: Tensor) -> Tensor:
        """μ̃_t(x_t, x0) in native VP coordinates (Ho et al. 2020, Eq. 7)."""
        c0 = self.a_prev.sqrt() * self.beta / (1 - self.a_t)
        ct = (1 - self.beta).sqrt() * (1 - self.a_prev) / (1 - self.a_t)
        return c0 * x0 + ct * x_t


def log_variance(
    pair: StepPair, kind: str, extra: Tensor | None = None, clip: Tensor | None = None
) -> Tensor:
    """log of the reverse variance: β̃ ("small"), β ("large") or exp(v·log β + (1−v)·log β̃)
    with v = (r + 1)/2 from the raw head r ("learned"; Nichol & Dhariwal 2021, Eq. 15 and
    improved-diffusion's mapping). β̃ is replaced by `clip` (β̃ of the next pair) where it is 0."""
    log_beta = pair.beta.log()
    tilde = pair.beta_tilde
    if clip is not None:
        tilde = torch.where(tilde > 0, tilde, clip)
    log_tilde = tilde.clamp(min=1e-20).log()
    if kind == "small":
        return log_tilde
    if kind == "large":
        return log_beta
    v = (extra + 1) / 2
    return v * log_beta + (1 - v) * log_tilde


LN2 = math.log(2.0)


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(μ₁, e^{v₁}) ‖ N(μ₂, e^{v₂})) elementwise in nats (Kingma & Welling 2014, App. B)."""
    return 0.5 * (logvar2 - logvar1 - 1 + (logvar1 - logvar2).exp()
                  + (mean1 - mean2) ** 2 * (-logvar2).exp())  # fmt: skip


def discretized_gaussian_log_likelihood(x0: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """log P(x0) for x0 on the 256-level grid k/127.5 − 1 under N(mean, e^{logvar}) integrated
    over the pixel's bin of width 2/255, edge bins open to ±∞ (Ho et al. 2020, Eq. 13)."""
    inv_std = (-0.5 * logvar).exp()
    upper = (x0 - mean + 1 / 255) * inv_std  # [B, ...]
    lower = (x0 - mean - 1 / 255) * inv_std
    log_cdf_upper = torch.special.log_ndtr(upper)
    log_sf_lower = torch.special.log_ndtr(-lower)
    mass = (torch.special.ndtr(upper) - torch.special.ndtr(lower)).clamp(min=1e-12)
    return torch.where(
        x0 < -0.999, log_cdf_upper, torch.where(x0 > 0.999, log_sf_lower, mass.log())
    )


def _per_dim_bits(t: Tensor) -> Tensor:
    """Mean over all but the batch dimension, nats → bits: [B, ...] → [B]."""
    return t.flatten(1).mean(1) / LN2


def vlb_step_bits(
    pair: StepPair, x_t: Tensor, x0: Tensor, denoised: Tensor, logvar: Tensor, decoder: Tensor
) -> Tensor:
    """L_{t−1} = KL(q(x_{t−1} | x_t, x0) ‖ p_θ(x_{t−1} | x_t)) or, where `decoder` [B] is true,
    L_0 = −log p_θ(x0 | x_1) (Ho et al. 2020, Eq. 5, 13), in bits/dim [B]; p_θ has mean
    μ̃(x_t, x̂0) and log-variance `logvar` (native VP coordinates, x_t [B, ...])."""
    mean = pair.mean(x_t, denoised)  # [B, ...]
    tilde = pair.beta_tilde
    true_logvar = torch.where(tilde > 0, tilde, torch.ones_like(tilde)).log()  # 0 only at L_0
    kl = _per_dim_bits(normal_kl(pair.mean(x_t, x0), true_logvar, mean, logvar))
    nll = -_per_dim_bits(discretized_gaussian_log_likelihood(x0, mean, logvar))
    return torch.where(decoder, nll, kl)  # [B]
