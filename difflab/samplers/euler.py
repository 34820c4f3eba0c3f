"""First-order samplers: Euler, Euler-ancestral, DDIM (η) and DDPM ancestral sampling."""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.posterior import StepPair, alpha_bar, log_variance
from difflab.samplers.base import SAMPLERS, denoise, report, require_variance, variance_head


def ancestral_sigmas(sigma: Tensor, sigma_next: Tensor, eta: float) -> tuple[Tensor, Tensor]:
    """(σ_down, σ_up) with σ_down² + σ_up² = σ_next² (Song et al. 2021a, Eq. 16 in σ-space)."""
    up = eta * (sigma_next**2 * (sigma**2 - sigma_next**2).clamp(min=0) / sigma**2).sqrt()
    up = torch.minimum(up, sigma_next)
    return (sigma_next**2 - up**2).sqrt(), up


@SAMPLERS.register("euler", order=1, stochastic=False, reversible=True)
def euler(fn, x: Tensor, sigmas: Tensor, *, noise, callback=None, step_hook=None) -> Tensor:
    """Euler on the probability-flow ODE dx/dσ = (x − D(x;σ))/σ (Karras et al. 2022, Eq. 4)."""
    for i in range(len(sigmas) - 1):
        denoised = denoise(fn, x, sigmas[i])
        x = x + (sigmas[i + 1] - sigmas[i]) * (x - denoised) / sigmas[i]
        x = report(callback, step_hook, i, x, sigmas, denoised)
    return x


@SAMPLERS.register("euler_ancestral", order=1, stochastic=True)
def euler_ancestral(
    fn, x: Tensor, sigmas: Tensor, *, noise, callback=None, step_hook=None, eta: float = 1.0,
    s_noise: float = 1.0,
) -> Tensor:  # fmt: skip
    """Euler step to σ_down, then fresh noise of std σ_up (k-diffusion's ancestral sampler)."""
    for i in range(len(sigmas) - 1):
        denoised = denoise(fn, x, sigmas[i])
        down, up = ancestral_sigmas(sigmas[i], sigmas[i + 1], eta)
        x = x + (down - sigmas[i]) * (x - denoised) / sigmas[i]
        if sigmas[i + 1] > 0:
            x = x + noise(x) * s_noise * up
        x = report(callback, step_hook, i, x, sigmas, denoised)
    return x


@SAMPLERS.register("ddim", order=1, stochastic=True, reversible=True)  # reversible with eta = 0
def ddim(
    fn, x: Tensor, sigmas: Tensor, *, noise, callback=None, step_hook=None, eta: float = 0.0
) -> Tensor:
    """x_{t−1} = √ᾱ_{t−1}·x̂0 + √(1−ᾱ_{t−1}−σ_t²)·ε̂ + σ_t·z (Song et al. 2021a, Eq. 12, 16)."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        a_t, a_prev = alpha_bar(sigma), alpha_bar(sigma_next)
        x_t = x * a_t.sqrt()  # native VP state
        denoised = denoise(fn, x, sigma)
        eps = (x_t - a_t.sqrt() * denoised) / (1 - a_t).sqrt()
        std = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev).clamp(min=0)).sqrt()
        x_prev = a_prev.sqrt() * denoised + (1 - a_prev - std**2).clamp(min=0).sqrt() * eps
        if sigma_next > 0 and eta > 0:
            x_prev = x_prev + std * noise(x)
        x = x_prev / a_prev.sqrt()  # back to σ-space
        x = report(callback, step_hook, i, x, sigmas, denoised)
    return x


@SAMPLERS.register("ddpm", order=1, stochastic=True)
def ddpm(
    fn, x: Tensor, sigmas: Tensor, *, noise, callback=None, step_hook=None,
    variance: str | None = None,
) -> Tensor:  # fmt: skip
    """Ancestral sampling from q(x_{t−1} | x_t, x̂0) (Ho et al. 2020, Eq. 6–7; Nichol & Dhariwal
    2021 §4 for respaced steps): variance β̃ ("small"), β ("large") or the learned interpolation
    ("learned", Nichol & Dhariwal 2021, Eq. 15; the default when fn declares a LearnedVariance)."""
    variance = variance or ("learned" if variance_head(fn) is not None else "small")
    if variance not in ("small", "large", "learned"):
        raise UsageError(
            f"unknown ddpm variance {variance!r}; choose one of: large, learned, small"
        )
    head = require_variance(fn) if variance == "learned" else None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        pair = StepPair(alpha_bar(sigma), alpha_bar(sigma_next))
        x_t = x * pair.a_t.sqrt()  # native VP state
        if head is not None:
            denoised, extra = head(x, sigma.to(x.dtype) * x.new_ones(x.shape[0]))
        else:
            denoised, extra = denoise(fn, x, sigma), None
        mean = pair.mean(x_t, denoised)  # [B, ...]
        if sigma_next > 0:
            std = (0.5 * log_variance(pair, variance, extra)).exp()
            x_prev = mean + std * noise(x)
        else:
            x_prev = mean
        x = x_prev / pair.a_prev.sqrt()  # back to σ-space
        x = report(callback, step_hook, i, x, sigmas, denoised)
    return x
