"""Denoising score-matching losses in F-space and the σ training densities."""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.posterior import StepPair, log_variance, vlb_step_bits
from difflab.core.precond import Precond
from difflab.core.registry import Registry
from difflab.core.schedules import Schedule
from difflab.core.types import bcast

SIGMA_DENSITIES = Registry("sigma density")
LOSSES = Registry("loss")


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


@LOSSES.register("denoising")
def denoising_loss(
    denoiser: Precond, x0: Tensor, sigma: Tensor, noise: Tensor, cond: dict | None = None
) -> Tensor:
    """Per-sample ‖F_θ − (x0 − c_skip·x)/c_out‖², the native loss of each parameterization.

    Since D − x0 = c_out·(F − target), this is ‖D − x0‖²/c_out² (Karras et al. 2022, Eq. 8):
    L_simple for ε (Ho et al. 2020, Eq. 14), the v-loss, flow matching and the EDM loss.
    """
    x = x0 + bcast(sigma, x0) * noise  # [B, ...] σ-space
    out, _, s = denoiser.net_output(x, sigma, cond)
    return _native_loss(out, s, x, x0)


def _native_loss(out: Tensor, s, x: Tensor, x0: Tensor) -> Tensor:
    """‖F − (x0 − c_skip·x)/c_out‖² per sample [B] (Karras et al. 2022, Eq. 8)."""
    target = (x0 - bcast(s.c_skip, x0) * x) / bcast(s.c_out, x0)
    return (out.float() - target).pow(2).flatten(1).mean(1)  # [B]


@LOSSES.register("hybrid")
def hybrid_loss(
    denoiser: Precond, x0: Tensor, sigma: Tensor, noise: Tensor, cond: dict | None = None, *,
    vlb_weight: float = 0.001,
) -> Tensor:  # fmt: skip
    """L_hybrid = L_simple + λ·T·L_t (one-sample estimate of λ·L_vlb), with x̂0 stopped in the VLB
    term so it trains only the variance head (Nichol & Dhariwal 2021, §3.1, Eq. 16); [B]."""
    schedule = denoiser.schedule
    _check_hybrid(denoiser)
    x = x0 + bcast(sigma, x0) * noise  # [B, ...] σ-space
    out, extra, s = denoiser.net_output(x, sigma, cond)
    simple = _native_loss(out, s, x, x0)  # [B]
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


def _check_hybrid(denoiser: Precond) -> None:
    schedule = denoiser.schedule
    if not (denoiser.learned_variance and schedule.discrete and schedule.vp):
        raise UsageError(
            "loss 'hybrid' needs model.learned_variance = true and a discrete VP schedule "
            '(linear/cosine); use loss = {name = "denoising"} otherwise'
        )


def check_loss(spec: str | dict, denoiser: Precond, density: str | dict = "discrete") -> None:
    """UsageError for an unknown loss, a bad option, or a model/σ density it cannot train."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    if "name" not in spec:
        raise UsageError(f"loss spec {spec!r} has no 'name'; add name = \"...\"")
    name = spec.pop("name")
    LOSSES.check_options(name, spec, skip=5)
    if name == "hybrid":
        _check_hybrid(denoiser)
        density = density if isinstance(density, str) else density.get("name")
        if density not in ("discrete", "importance"):
            raise UsageError(
                f"loss 'hybrid' needs σ on the schedule's steps, not sigma density {density!r}; "
                'use sigma_density = {name = "discrete"} or {name = "importance"}'
            )


def compute_loss(spec: str | dict, denoiser: Precond, x0, sigma, noise, cond=None) -> Tensor:
    """Per-sample loss [B] of the loss named in `spec` (train.loss)."""
    return LOSSES.build(spec, denoiser, x0, sigma, noise, cond=cond)
