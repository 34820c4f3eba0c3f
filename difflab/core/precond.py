"""Parameterizations as EDM scalings and the denoiser D(x; σ, cond) = c_skip·x + c_out·F_θ(...)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from difflab.core.registry import Registry
from difflab.core.schedules import Schedule
from difflab.core.types import bcast, net_cond

PARAMETERIZATIONS = Registry("parameterization")


@dataclass
class Scalings:
    """The four preconditioning coefficients, each [B] (Karras et al. 2022, Eq. 7)."""

    c_skip: Tensor
    c_out: Tensor
    c_in: Tensor
    c_noise: Tensor


@PARAMETERIZATIONS.register("eps")
def eps(sigma: Tensor, schedule: Schedule, sigma_data: float) -> Scalings:
    """ε-prediction: D = x − σ·F (Ho et al. 2020, Eq. 11 in σ-space)."""
    one = torch.ones_like(sigma)
    return Scalings(one, -sigma, schedule.scale(sigma), schedule.c_noise(sigma))


@PARAMETERIZATIONS.register("x0")
def x0(sigma: Tensor, schedule: Schedule, sigma_data: float) -> Scalings:
    """x0-prediction: D = F (Ramesh et al. 2022, decoder/prior)."""
    return Scalings(
        torch.zeros_like(sigma), torch.ones_like(sigma), schedule.scale(sigma),
        schedule.c_noise(sigma),
    )  # fmt: skip


@PARAMETERIZATIONS.register("v")
def v(sigma: Tensor, schedule: Schedule, sigma_data: float) -> Scalings:
    """v-prediction v = α_t·ε − σ_t·x0 (Salimans & Ho 2022, §4) with σ_data = 1."""
    return Scalings(
        1 / (1 + sigma**2), -sigma * (1 + sigma**2).rsqrt(), schedule.scale(sigma),
        schedule.c_noise(sigma),
    )  # fmt: skip


@PARAMETERIZATIONS.register("flow")
def flow(sigma: Tensor, schedule: Schedule, sigma_data: float) -> Scalings:
    """Velocity u = ε − x0 of rectified flow (Liu et al. 2023; Lipman et al. 2023)."""
    return Scalings(1 / (1 + sigma), -sigma / (1 + sigma), 1 / (1 + sigma), schedule.c_noise(sigma))


@PARAMETERIZATIONS.register("edm")
def edm(sigma: Tensor, schedule: Schedule, sigma_data: float) -> Scalings:
    """EDM preconditioning (Karras et al. 2022, Table 1, Eq. 7)."""
    total = sigma**2 + sigma_data**2
    return Scalings(
        sigma_data**2 / total, sigma * sigma_data * total.rsqrt(), total.rsqrt(),
        0.25 * sigma.log(),
    )  # fmt: skip


@PARAMETERIZATIONS.register("consistency")
def consistency(sigma: Tensor, schedule: Schedule, sigma_data: float) -> Scalings:
    """Consistency-model boundary: c_skip = σ_d²/((σ−σ_min)² + σ_d²), c_out = σ_d(σ−σ_min)/√(σ_d² + σ²),
    so f(x, σ_min) = x for any F (Song et al. 2023, App. C; σ_min = the schedule's); c_in as EDM."""
    shifted = sigma - schedule.sigma_min
    total = sigma**2 + sigma_data**2
    return Scalings(
        sigma_data**2 / (shifted**2 + sigma_data**2), sigma_data * shifted * total.rsqrt(),
        total.rsqrt(), schedule.c_noise(sigma),
    )  # fmt: skip


class Precond(nn.Module):
    """D(x; σ, cond) = c_skip(σ)·x + c_out(σ)·F_θ(c_in(σ)·x, c_noise(σ), cond) (Karras et al. 2022, Eq. 7).

    With `learned_variance`, F_θ has twice the output channels; the second half is the
    interpolation weight v of Nichol & Dhariwal (2021, Eq. 15), returned by `forward_with_extra`.
    """

    conditioner = None  # set by train.build_denoiser for conditional models (conditioning.py)

    def __init__(
        self,
        net: nn.Module,
        schedule: Schedule,
        parameterization: str = "eps",
        sigma_data: float = 0.5,
        learned_variance: bool = False,
    ):
        super().__init__()
        PARAMETERIZATIONS.get(parameterization)
        self.net = net
        self.schedule = schedule
        self.parameterization = parameterization
        self.sigma_data = float(sigma_data)
        self.learned_variance = learned_variance

    def scalings(self, sigma: Tensor) -> Scalings:
        return PARAMETERIZATIONS.get(self.parameterization)(sigma, self.schedule, self.sigma_data)

    def net_output(self, x: Tensor, sigma: Tensor, cond: dict | None = None):
        """(F_θ output [B, ...], extra head or None, scalings) for σ-space input x."""
        s = self.scalings(sigma)
        out = self.net(bcast(s.c_in, x).to(x.dtype) * x, s.c_noise.to(x.dtype), net_cond(cond))
        if self.learned_variance:
            out, extra = out.chunk(2, dim=1)
            return out, extra, s
        return out, None, s

    def forward_with_extra(self, x: Tensor, sigma: Tensor, cond: dict | None = None):
        """(x̂0, extra head or None) in one network call."""
        out, extra, s = self.net_output(x, sigma, cond)
        denoised = bcast(s.c_skip, x) * x + bcast(s.c_out, x) * out.to(x.dtype)
        return denoised.to(x.dtype), extra

    def forward(self, x: Tensor, sigma: Tensor, cond: dict | None = None) -> Tensor:
        """x̂0 = D(x; σ, cond); x [B, ...] in σ-space (x0 + σε), σ [B]."""
        return self.forward_with_extra(x, sigma, cond)[0]
