"""VP posterior q(x_{t−1} | x_t, x0) for any (respaced) step pair, from ᾱ alone, and the learned
reverse variance of improved DDPM. Shared by the ddpm sampler, the hybrid loss and the VLB."""

from __future__ import annotations

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
