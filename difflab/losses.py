"""Denoising score-matching losses in F-space and the σ training densities."""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.errors import UsageError
from difflab.precond import Precond, _bcast
from difflab.registry import Registry
from difflab.schedules import Schedule

SIGMA_DENSITIES = Registry("sigma density")


@SIGMA_DENSITIES.register("discrete")
def discrete(schedule: Schedule, n: int, generator: torch.Generator) -> Tensor:
    """t ~ Uniform{0..T−1}, σ = σ_t (Ho et al. 2020, Algorithm 1)."""
    if not schedule.discrete:
        raise UsageError(
            f"sigma density 'discrete' needs a discrete schedule, not {schedule.name!r}; "
            'use sigma_density = {name = "lognormal"}'
        )
    t = torch.randint(0, schedule.num_timesteps, (n,), generator=generator)
    return schedule.sigmas[t].float()  # [n]


@SIGMA_DENSITIES.register("lognormal")
def lognormal(
    schedule: Schedule, n: int, generator: torch.Generator, *, p_mean: float = -1.2,
    p_std: float = 1.2,
) -> Tensor:  # fmt: skip
    """ln σ ~ N(P_mean, P_std²) (Karras et al. 2022, Table 1, training row)."""
    return (p_mean + p_std * torch.randn(n, generator=generator)).exp()  # [n]


@SIGMA_DENSITIES.register("uniform_t")
def uniform_t(schedule: Schedule, n: int, generator: torch.Generator) -> Tensor:
    """t ~ U(t(σ_min), t(σ_max)) for continuous schedules (Song et al. 2021, Eq. 7)."""
    lo = schedule.sigma_to_t(torch.tensor(schedule.sigma_min, dtype=torch.float64))
    hi = schedule.sigma_to_t(torch.tensor(schedule.sigma_max, dtype=torch.float64))
    t = lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)
    return schedule.t_to_sigma(t).float()  # [n]


def sample_sigmas(spec: str | dict, schedule: Schedule, n: int, generator: torch.Generator):
    """σ [n] drawn from the density named in `spec`."""
    return SIGMA_DENSITIES.build(spec, schedule, n, generator)


def denoising_loss(
    denoiser: Precond, x0: Tensor, sigma: Tensor, noise: Tensor, cond: dict | None = None
) -> Tensor:
    """Per-sample ‖F_θ − (x0 − c_skip·x)/c_out‖², the native loss of each parameterization.

    Since D − x0 = c_out·(F − target), this is ‖D − x0‖²/c_out² (Karras et al. 2022, Eq. 8):
    L_simple for ε (Ho et al. 2020, Eq. 14), the v-loss, flow matching and the EDM loss.
    """
    x = x0 + _bcast(sigma, x0) * noise  # [B, ...] σ-space
    out, _, s = denoiser.net_output(x, sigma, cond)
    target = (x0 - _bcast(s.c_skip, x0) * x) / _bcast(s.c_out, x0)
    return (out.float() - target).pow(2).flatten(1).mean(1)  # [B]
