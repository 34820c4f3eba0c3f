"""Heun's second-order sampler with optional stochastic churn (Karras et al. 2022, Algorithm 2)."""

from __future__ import annotations

import math

from torch import Tensor

from difflab.samplers.base import SAMPLERS, denoise, report, slope


@SAMPLERS.register("heun", order=2, stochastic=False, reversible=True)  # with s_churn = 0
def heun(
    fn,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise,
    callback=None,
    step_hook=None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> Tensor:
    """EDM Algorithm 2: churn to σ̂ = σ(1+γ), Euler step, trapezoidal correction unless σ_next = 0."""
    n = len(sigmas) - 1
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            x = x + (sigma_hat**2 - sigma**2).sqrt() * s_noise * noise(x)
        denoised = denoise(fn, x, sigma_hat)
        d = (x - denoised) / sigma_hat
        x_next = x + (sigma_next - sigma_hat) * d
        if sigma_next > 0:
            d_next = slope(fn, x_next, sigma_next)
            x_next = x + (sigma_next - sigma_hat) * (d + d_next) / 2
        x = x_next
        x = report(callback, step_hook, i, x, sigmas, denoised)
    return x
