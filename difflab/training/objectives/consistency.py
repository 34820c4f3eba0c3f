"""Consistency distillation (Song et al. 2023, Alg. 2) and improved consistency training without a
teacher (Song & Dhariwal 2023), as objectives of the one training loop.

Both train f_θ(x, σ) = c_skip(σ)·x + c_out(σ)·F_θ with the "consistency" parameterization
(f(x, σ_min) = x), on the Karras grid σ_1 = σ_min < ... < σ_N = σ_max, to agree across adjacent
grid points: loss = λ(σ_i)·d(f_θ(x_{i+1}, σ_{i+1}), f_θ⁻(x̂_i, σ_i)).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from difflab.core.errors import UsageError
from difflab.core.precond import Precond
from difflab.core.types import bcast
from difflab.samplers.few_step import karras_sigmas
from difflab.training.objectives.base import OBJECTIVES, Batch, Objective, Stateful
from difflab.training.objectives.denoising import training_cond
from difflab.training.objectives.teacher import (
    TargetNetwork,
    frozen_teacher,
    init_from,
    metric,
    model_device,
    solver,
)

WEIGHTINGS = ("uniform", "icm")  # λ = 1 (Song et al. 2023) or 1/(σ_{i+1} − σ_i) (iCT, §3.1)


def ict_discretization(k: int, K: int, s0: int = 10, s1: int = 1280) -> int:
    """N(k) = min(s0·2^⌊k/K'⌋, s1) + 1, K' = ⌊K/(log2⌊s1/s0⌋ + 1)⌋ (Song & Dhariwal 2023, Eq. 5)."""
    k_prime = max(1, math.floor(K / (math.log2(math.floor(s1 / s0)) + 1)))
    return min(s0 * 2 ** (k // k_prime), s1) + 1


def lognormal_index_probs(sigmas: Tensor, p_mean: float, p_std: float) -> Tensor:
    """p(i) ∝ erf((ln σ_{i+1} − P_mean)/(√2·P_std)) − erf((ln σ_i − P_mean)/(√2·P_std)) over the
    N − 1 intervals of an increasing grid (Song & Dhariwal 2023, §3.5)."""
    cdf = torch.erf((sigmas.log() - p_mean) / (math.sqrt(2) * p_std))  # [N]
    p = (cdf[1:] - cdf[:-1]).clamp(min=0)
    return p / p.sum()  # [N − 1]


def check_consistency_model(model: nn.Module) -> Precond:
    """The model, which must be a Precond with the boundary parameterization."""
    if getattr(model, "parameterization", None) != "consistency":
        raise UsageError(
            f"consistency objectives train a model with parameterization 'consistency' (the "
            f"boundary f(x, sigma_min) = x), not {getattr(model, 'parameterization', None)!r}; "
            'set model.parameterization = "consistency"'
        )
    return model


class _Consistency(Objective):
    """The shared part: grid, index draw, weighting and metric."""

    def __init__(self, model: Precond, *, metric_name: str, weighting: str, sigma_max: float | None,
                 rho: float):  # fmt: skip
        self.model = check_consistency_model(model)
        if weighting not in WEIGHTINGS:
            raise UsageError(f"unknown `weighting` {weighting!r}; choose one of: uniform, icm")
        self.metric, self.weighting, self.rho = metric(metric_name), weighting, float(rho)
        self.sigma_min = model.schedule.sigma_min
        self.sigma_max = model.schedule.sigma_max if sigma_max is None else float(sigma_max)
        if not self.sigma_min < self.sigma_max:
            raise UsageError(
                f"`sigma_max` {self.sigma_max} must exceed the schedule's sigma_min {self.sigma_min}"
            )

    def grid(self, n: int) -> Tensor:
        """σ_1 < ... < σ_n, float64."""
        return karras_sigmas(self.sigma_min, self.sigma_max, n, self.rho)

    def pair_loss(
        self, online: Tensor, target: Tensor, sigma: Tensor, sigma_next: Tensor
    ) -> Tensor:
        """λ(σ_i)·d(f_θ(x_{i+1}), f_θ⁻(x̂_i)) per sample [B]."""
        loss = self.metric(online, target)
        if self.weighting == "icm":
            loss = loss / (sigma_next - sigma).to(loss)
        return loss

    def draw(self, batch: Batch, probs: Tensor, sigmas: Tensor):
        """(x0, z, σ_i, σ_{i+1}, cond) of this rank, i drawn for the whole global batch."""
        x0, g = batch.x0, batch.generator  # [N·B, ...]
        i = torch.multinomial(probs.float(), len(x0), replacement=True, generator=g)  # [N·B]
        z = torch.randn(x0.shape, generator=g)
        cond = training_cond(self.model, batch)
        x0, z, i = (batch.local(t) for t in (x0, z, i))
        sigmas = sigmas.to(x0.device)
        return x0, z, sigmas[i].to(x0.dtype), sigmas[i + 1].to(x0.dtype), cond


class ConsistencyDistillation(_Consistency):
    """CD: x̂_i is one teacher ODE step from x_{i+1} = x0 + σ_{i+1}z; the target is the EMA network
    θ⁻ (Song et al. 2023, Alg. 2)."""

    def __init__(self, model: Precond, teacher, *, solver_name: str = "heun", N: int = 18,
                 mu: float = 0.95, metric_name: str = "l2", weighting: str = "uniform",
                 sigma_max: float | None = None, rho: float = 7.0, init: bool = True):  # fmt: skip
        super().__init__(model, metric_name=metric_name, weighting=weighting,
                         sigma_max=sigma_max, rho=rho)  # fmt: skip
        if not isinstance(N, int) or N < 2:
            raise UsageError(f"`N` must be an integer >= 2, got {N!r}")
        device = model_device(model)
        self.teacher = frozen_teacher(teacher, device)
        self.solve, self.N = solver(solver_name), N
        if init:
            init_from(model, self.teacher)
        self.target = TargetNetwork(model, mu)

    def loss(self, batch: Batch, step: int) -> tuple[Tensor, dict[str, Any]]:
        sigmas = self.grid(self.N)
        probs = torch.ones(self.N - 1, dtype=torch.float64)
        x0, z, sigma, sigma_next, cond = self.draw(batch, probs, sigmas)
        target = self.target.follow(self.model, step)
        x_next = x0 + bcast(sigma_next, x0) * z
        with torch.no_grad():
            x_hat = self.solve(self.teacher, x_next, sigma_next, sigma, cond)
            want = target(x_hat, sigma, cond)
        return self.pair_loss(self.model(x_next, sigma_next, cond), want, sigma, sigma_next), {}

    def parts(self) -> dict[str, Stateful]:
        return {"target": self.target}


class ConsistencyTraining(_Consistency):
    """iCT: x_i = x0 + σ_i z shares z with x_{i+1}; the target is stopgrad(θ) itself, i drawn
    log-normally over a grid that doubles on the curriculum N(k) (Song & Dhariwal 2023)."""

    def __init__(self, model: Precond, *, K: int | None = None, s0: int = 10, s1: int = 1280,
                 p_mean: float = -1.1, p_std: float = 2.0, metric_name: str = "pseudo_huber",
                 weighting: str = "icm", sigma_max: float | None = None, rho: float = 7.0,
                 teacher=None):  # fmt: skip
        super().__init__(model, metric_name=metric_name, weighting=weighting,
                         sigma_max=sigma_max, rho=rho)  # fmt: skip
        if not isinstance(K, int) or K < 1:
            raise UsageError(
                f"consistency training needs `K` = the total training steps, got {K!r}"
            )
        if not 1 <= s0 <= s1:
            raise UsageError(f"the curriculum needs 1 <= `s0` <= `s1`, got {s0} and {s1}")
        self.K, self.s0, self.s1, self.p_mean, self.p_std = K, s0, s1, p_mean, p_std
        if teacher is not None:  # ECT: start from a diffusion model (Geng et al. 2024)
            init_from(model, frozen_teacher(teacher))

    def loss(self, batch: Batch, step: int) -> tuple[Tensor, dict[str, Any]]:
        n = ict_discretization(step, self.K, self.s0, self.s1)
        sigmas = self.grid(n)
        x0, z, sigma, sigma_next, cond = self.draw(
            batch, lognormal_index_probs(sigmas, self.p_mean, self.p_std), sigmas
        )
        with torch.no_grad():
            want = self.model(x0 + bcast(sigma, x0) * z, sigma, cond)
        online = self.model(x0 + bcast(sigma_next, x0) * z, sigma_next, cond)
        return self.pair_loss(online, want, sigma, sigma_next), {"N": n}


@OBJECTIVES.register("consistency_distillation", teacher=True)
def consistency_distillation(
    model: Precond, *, teacher: str | Path | nn.Module, solver: str = "heun", N: int = 18,
    mu: float = 0.95, metric: str = "l2", weighting: str = "uniform",
    sigma_max: float | None = None, rho: float = 7.0, init: bool = True,
    density: Any = None,
) -> ConsistencyDistillation:  # fmt: skip
    """train.loss = {name = "consistency_distillation", teacher = PATH}: CD (Song et al. 2023);
    `density` (train.sigma_density) is unused: σ is drawn on the grid."""
    return ConsistencyDistillation(
        model, teacher, solver_name=solver, N=N, mu=mu, metric_name=metric, weighting=weighting,
        sigma_max=sigma_max, rho=rho, init=init,
    )  # fmt: skip


@OBJECTIVES.register("consistency_training", teacher=False)
def consistency_training(
    model: Precond, *, K: int | None = None, s0: int = 10, s1: int = 1280, p_mean: float = -1.1,
    p_std: float = 2.0, metric: str = "pseudo_huber", weighting: str = "icm",
    sigma_max: float | None = None, rho: float = 7.0, teacher: str | Path | None = None,
    density: Any = None,
) -> ConsistencyTraining:  # fmt: skip
    """train.loss = {name = "consistency_training", K = train.steps}: iCT (Song & Dhariwal 2023);
    `teacher` only initialises the model (ECT, Geng et al. 2024); `density` is unused."""
    return ConsistencyTraining(
        model, K=K, s0=s0, s1=s1, p_mean=p_mean, p_std=p_std, metric_name=metric,
        weighting=weighting, sigma_max=sigma_max, rho=rho, teacher=teacher,
    )  # fmt: skip
