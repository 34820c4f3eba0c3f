"""Progressive distillation (Salimans & Ho 2022, Alg. 2): a student learns two teacher DDIM steps
in one, on a grid that halves each round."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from difflab.core.errors import UsageError
from difflab.core.precond import Precond
from difflab.core.schedules import discretize
from difflab.core.types import bcast
from difflab.training.objectives.base import OBJECTIVES, Batch, Objective
from difflab.training.objectives.denoising import native_loss, training_cond
from difflab.training.objectives.teacher import ddim_step, frozen_teacher, init_from, model_device

UNSTABLE = ("eps",)  # x̂0 = (x − σε̂) blows up at σ_max (Salimans & Ho 2022, §4)


def progressive_target(
    teacher, z: Tensor, sigma: Tensor, sigma_mid: Tensor, sigma_next: Tensor,
    cond: dict | None = None,
) -> Tensor:  # fmt: skip
    """x̃ such that one DDIM step σ → σ'' from z lands where two teacher DDIM steps σ → σ' → σ''
    land: x̃ = (z'' − (σ''/σ)·z)/(1 − σ''/σ) (Salimans & Ho 2022, Alg. 2, in σ-space where
    α = 1); σ, σ', σ'' [B]."""
    z_mid = ddim_step(teacher, z, sigma, sigma_mid, cond)
    z_next = ddim_step(teacher, z_mid, sigma_mid, sigma_next, cond)
    ratio = bcast(sigma_next / sigma, z)
    return (z_next - ratio * z) / (1 - ratio)


class ProgressiveDistillation(Objective):
    """The student (initialised from the teacher) regresses x̃ with its native loss, which for
    v-prediction is the 'SNR+1' weighting of the paper (§4)."""

    def __init__(self, model: Precond, teacher, *, teacher_steps: int,
                 discretization: dict | None = None, init: bool = True):  # fmt: skip
        if not isinstance(teacher_steps, int) or teacher_steps < 2 or teacher_steps % 2:
            raise UsageError(
                f"`teacher_steps` must be an even integer >= 2, got {teacher_steps!r}; the student "
                "takes half as many"
            )
        if model.parameterization in UNSTABLE:
            raise UsageError(
                f"progressive distillation needs a model that predicts x0 stably at high noise; "
                f"parameterization {model.parameterization!r} does not: train the teacher with "
                'parameterization = "v" (or "edm", "x0", "flow")'
            )
        self.model = model
        self.teacher = frozen_teacher(teacher, model_device(model))
        if init:
            init_from(model, self.teacher)
        spec = dict(discretization or {"name": "few_step"})
        self.sigmas = discretize(model.schedule, spec, teacher_steps)  # [2N + 1], ends in 0
        self.student_steps = teacher_steps // 2

    def loss(self, batch: Batch, step: int) -> tuple[Tensor, dict[str, Any]]:
        x0, g = batch.x0, batch.generator  # [N·B, ...]
        i = torch.randint(0, self.student_steps, (len(x0),), generator=g)  # student step
        eps = torch.randn(x0.shape, generator=g)
        cond = training_cond(self.model, batch)
        x0, eps, i = (batch.local(t) for t in (x0, eps, i))
        sig = self.sigmas.to(x0.device)
        sigma, mid, nxt = (sig[2 * i + k].to(x0.dtype) for k in range(3))
        z = x0 + bcast(sigma, x0) * eps
        with torch.no_grad():
            target = progressive_target(self.teacher, z, sigma, mid, nxt, cond)
        out, _, s = self.model.net_output(z, sigma, cond)
        return native_loss(out, s, z, target), {}


@OBJECTIVES.register("progressive", teacher=True)
def progressive(
    model: Precond, *, teacher: str | Path | nn.Module, teacher_steps: int,
    discretization: dict | None = None, init: bool = True, density: Any = None,
) -> ProgressiveDistillation:  # fmt: skip
    """train.loss = {name = "progressive", teacher = PATH, teacher_steps = 2N}: one round of
    progressive distillation onto the `few_step` grid (or `discretization`, which must nest);
    `density` (train.sigma_density) is unused."""
    return ProgressiveDistillation(
        model, teacher, teacher_steps=teacher_steps, discretization=discretization, init=init
    )
