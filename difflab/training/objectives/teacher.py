"""What the distillation objectives share: a frozen teacher, initialising the student from it,
an EMA target network kept as resumable state, and the consistency distance metrics."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from difflab.core.errors import UsageError
from difflab.core.precond import Precond
from difflab.core.registry import Registry
from difflab.core.types import bcast
from difflab.samplers.dpm import ei_step
from difflab.storage.models import load_denoiser

METRICS = Registry("consistency metric")


def frozen_teacher(teacher: str | Path | nn.Module, device: torch.device | None = None) -> Precond:
    """The teacher denoiser (a checkpoint path or a module), in eval mode without gradients."""
    if isinstance(teacher, str | Path):
        teacher = load_denoiser(teacher)[0]
    elif not isinstance(teacher, nn.Module):
        raise UsageError(
            f"`teacher` must be a model checkpoint path or a denoiser module, got {teacher!r}"
        )
    if device is not None and model_device(teacher) != device:
        teacher = teacher.to(device)
    return teacher.eval().requires_grad_(False)


def model_device(model: nn.Module) -> torch.device:
    """Where the model's weights are (CPU for a model without parameters)."""
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def init_from(student: nn.Module, teacher: nn.Module) -> None:
    """Copy the teacher's network weights into the student (Salimans & Ho 2022, Alg. 2 line 1;
    ECT's initialisation from a diffusion model, Geng et al. 2024, §3)."""
    try:
        student.net.load_state_dict(teacher.net.state_dict())
    except (RuntimeError, AttributeError) as err:
        raise UsageError(
            f"the student's network does not match the teacher's ({str(err)[:120]}); build the "
            "student from the teacher's `model` config or pass `init`=False"
        ) from None


class TargetNetwork:
    """θ⁻ ← μ·θ⁻ + (1 − μ)·θ after every optimizer step (Song et al. 2023, Alg. 2), applied
    lazily at the first loss of the next step, and saved/restored with the run as "target.*"."""

    def __init__(self, model: nn.Module, mu: float):
        if not 0 <= mu < 1:
            raise UsageError(f"target EMA `mu` must be in [0, 1), got {mu!r}")
        self.mu = float(mu)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.synced = 0  # the step whose update has been applied

    @torch.no_grad()
    def follow(self, model: nn.Module, step: int) -> nn.Module:
        """θ⁻ after the updates of steps < `step` (one update per optimizer step)."""
        if step > self.synced:
            torch._foreach_lerp_(
                list(self.model.parameters()), [p.detach() for p in model.parameters()],
                1 - self.mu,
            )  # fmt: skip
            for b_t, b in zip(self.model.buffers(), model.buffers(), strict=True):
                b_t.copy_(b)
            self.synced = step
        return self.model

    def state_dict(self) -> dict[str, Any]:
        return {"synced": torch.tensor(self.synced), **self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.synced = int(torch.as_tensor(state.pop("synced")).item())
        self.model.load_state_dict(state)


@METRICS.register("l2")
def l2(a: Tensor, b: Tensor) -> Tensor:
    """‖a − b‖² per sample [B] (Song et al. 2023, §3)."""
    return (a.float() - b.float()).pow(2).flatten(1).sum(1)


@METRICS.register("pseudo_huber")
def pseudo_huber(a: Tensor, b: Tensor, c: float | None = None) -> Tensor:
    """√(‖a − b‖² + c²) − c, c = 0.00054·√d by default (Song & Dhariwal 2023, §3.3)."""
    d = a[0].numel()
    c = 0.00054 * math.sqrt(d) if c is None else c
    return (l2(a, b) + c**2).sqrt() - c


def metric(name: str):
    """The distance d(a, b) → [B] named `name` (l2, pseudo_huber). A feature distance such as
    LPIPS needs a feature net, which lives in `difflab.evaluation` above training: not offered."""
    return METRICS.get(name)


def ddim_step(fn, x: Tensor, sigma: Tensor, sigma_next: Tensor, cond: dict | None = None) -> Tensor:
    """x' = D + (σ'/σ)·(x − D): deterministic DDIM in σ-space, i.e. an Euler step of the PF-ODE
    (Song et al. 2021a, Eq. 12; Karras et al. 2022, §3); σ, σ' [B]."""
    denoised = fn(x, sigma, cond)
    return denoised + bcast(sigma_next / sigma, x) * (x - denoised)


def heun_step(fn, x: Tensor, sigma: Tensor, sigma_next: Tensor, cond: dict | None = None) -> Tensor:
    """Heun's second-order PF-ODE step from σ to σ' > 0 (Karras et al. 2022, Alg. 1); σ, σ' [B]."""
    h = bcast(sigma_next - sigma, x)
    d = (x - fn(x, sigma, cond)) / bcast(sigma, x)
    euler = x + h * d
    d_next = (euler - fn(euler, sigma_next, cond)) / bcast(sigma_next, x)
    return x + h * (d + d_next) / 2


def dpm_solver_step(
    fn, x: Tensor, sigma: Tensor, sigma_next: Tensor, cond: dict | None = None
) -> Tensor:  # fmt: skip
    """DPM-Solver-2 with x̂0, r = ½ (= DPM-Solver++(2S)): first order to λ_mid = (λ + λ')/2, then
    x' = (σ'/σ)·x + (1 − σ'/σ)·D(x_mid, σ_mid) (Lu et al. 2022a, Alg. 1; 2022b, Eq. 9); σ' > 0."""
    s, s_next = bcast(sigma, x), bcast(sigma_next, x)
    sigma_mid = (sigma * sigma_next).sqrt()  # [B]
    x_mid = ei_step(x, s, bcast(sigma_mid, x), fn(x, sigma, cond))
    return ei_step(x, s, s_next, fn(x_mid, sigma_mid, cond))


SOLVERS = {"euler": ddim_step, "heun": heun_step, "dpm_solver": dpm_solver_step}


def solver(name: str):
    """The one-step teacher ODE solver `name` (euler, heun, dpm_solver)."""
    if name not in SOLVERS:
        raise UsageError(
            f"unknown teacher `solver` {name!r}; choose one of: {', '.join(SOLVERS)}"
        )
    return SOLVERS[name]
