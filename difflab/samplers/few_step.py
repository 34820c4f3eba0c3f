"""Few-step generation: consistency sampling (one step or multistep `ts`) and the σ grids of
consistency models and of progressive distillation.

A consistency model f(x, σ) maps any x at σ to x0 in one call, so it is a DenoiseFn and the
`consistency` sampler follows the sampler contract: `sigmas` = [σ_max, τ_1, ..., τ_{n−1}, 0] means
f at σ_max, then for each τ re-noise x0 + √(τ² − σ_min²)·z and apply f at τ (Song et al. 2023,
Algorithm 1). Its `fn` is a consistency function (registered meta fn="consistency"), not a
posterior-mean denoiser: given one, it would denoise and re-noise. The `few_step` grid builds that list from `steps` or from the paper's `ts`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.schedules import DISCRETIZATIONS, Schedule
from difflab.samplers.base import SAMPLERS, denoise, report


@SAMPLERS.register("consistency", order=1, stochastic=True, fn="consistency")
def consistency(
    fn, x: Tensor, sigmas: Tensor, *, noise, callback=None, step_hook=None,
    sigma_min: float = 0.0,
) -> Tensor:  # fmt: skip
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1): x0 = f(x, σ_i), then
    x = x0 + √(σ_{i+1}² − σ_min²)·z while σ_{i+1} > 0; a one-step grid [σ_max, 0] is one call.
    `step_hook` may replace the re-noised x (zero-shot editing, Song et al. 2023, Algorithm 4)."""
    for i in range(len(sigmas) - 1):
        denoised = denoise(fn, x, sigmas[i])
        x = denoised
        if sigmas[i + 1] > 0:
            std = (sigmas[i + 1] ** 2 - sigma_min**2).clamp(min=0).sqrt()
            x = denoised + std.to(x.dtype) * noise(x)
        x = report(callback, step_hook, i, x, sigmas, denoised)
    return x


def karras_ramp(lo: float, hi: float, u: Tensor, rho: float = 7.0) -> Tensor:
    """σ(u) = (σ_max^{1/ρ} + u·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, u ∈ [0, 1] (Karras et al. 2022, Eq. 5)."""
    return (hi ** (1 / rho) + u * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho


def _range(schedule: Schedule, sigma_min, sigma_max) -> tuple[float, float]:
    lo = schedule.sigma_min if sigma_min is None else float(sigma_min)
    hi = schedule.sigma_max if sigma_max is None else float(sigma_max)
    if not 0 < lo < hi:
        raise UsageError(f"discretization needs 0 < sigma_min < sigma_max, got {lo} and {hi}")
    return lo, hi


def _zero_ended(sigmas: Tensor) -> Tensor:
    return torch.cat([sigmas.double(), sigmas.new_zeros(1, dtype=torch.float64)])


@DISCRETIZATIONS.register("few_step")
def few_step(
    schedule: Schedule, steps: int, *, ts: list | None = None, N: int | None = None,
    sigma_min: float | None = None, sigma_max: float | None = None, rho: float = 7.0,
) -> Tensor:  # fmt: skip
    """σ(i/steps) on the Karras ramp for i < steps, then 0. The grid of 2N steps holds the grid of
    N steps at its even points, so progressive distillation halves it (Salimans & Ho 2022, §3);
    for the `consistency` sampler it is [σ_max, τ_1, ..., τ_{steps−1}, 0] and σ_min, where
    f(x, σ_min) = x, is never evaluated. With `ts` (decreasing, first = σ_max): σ values, or, with `N`, indices into
    the N-point Karras grid as in the consistency_models repo (e.g. ts = [0, 22], N = 40)."""
    lo, hi = _range(schedule, sigma_min, sigma_max)
    if ts is None:
        u = torch.arange(steps, dtype=torch.float64) / steps
        return _zero_ended(karras_ramp(lo, hi, u, rho))
    if len(ts) != steps:
        raise UsageError(f"discretization `ts` has {len(ts)} entries; set `steps`={len(ts)}")
    values = torch.tensor([float(t) for t in ts], dtype=torch.float64)
    if N is not None:
        if not ((values >= 0) & (values <= N - 1) & (values == values.round())).all():
            raise UsageError(f"`ts` indices must be integers in 0..{N - 1} for `N`={N}")
        values = karras_ramp(lo, hi, values / (N - 1), rho)
    if not (values[1:] < values[:-1]).all() or not (values > 0).all():
        raise UsageError(f"`ts` must be strictly decreasing noise levels above 0, got {list(ts)}")
    return _zero_ended(values)


def karras_sigmas(lo: float, hi: float, n: int, rho: float = 7.0) -> Tensor:
    """The increasing n-point Karras grid σ_1 = σ_min < ... < σ_n = σ_max (float64) used by
    consistency distillation and training (Song et al. 2023, §5; Song & Dhariwal 2023, §3)."""
    u = torch.arange(n, dtype=torch.float64) / max(n - 1, 1)
    return karras_ramp(lo, hi, u, rho).flip(0)
