"""The step every difflab trainer shares: micro-batches → objective → clip → non-finite guard →
AdamW → LR schedule → EMA. The diffusion loop, the noise-aware nets and the metric feature net all
train through it."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP

from difflab.core.errors import TrainingError, UsageError
from difflab.training.dist import World
from difflab.training.ema import EMA
from difflab.training.objectives.base import Batch, Objective


@dataclass
class StepResult:
    """Mean loss over the step's micro-batches (and ranks), gradient norm, whether it applied."""

    loss: float
    grad_norm: float
    applied: bool
    logs: dict = field(default_factory=dict)


class _Forward(nn.Module):
    """The objective's loss as a module's forward, so DistributedDataParallel can wrap the step."""

    def __init__(self, objective: Objective):
        super().__init__()
        self.model = objective.model
        self.objective = objective

    def forward(self, batch: Batch, step: int) -> tuple[Tensor, dict]:
        return self.objective.loss(batch, step)


def adamw(params, impl: str = "foreach", **options) -> torch.optim.AdamW:
    """AdamW (Loshchilov & Hutter 2019, Alg. 2) with the kernels `impl` names: "foreach"
    (multi-tensor ops, the same numbers as "loop"), "fused" (one kernel per step) or "loop"."""
    if impl not in ("foreach", "fused", "loop"):
        raise UsageError(f"`impl` must be 'foreach', 'fused' or 'loop', got {impl!r}")
    kernels = {"foreach": {"foreach": True}, "fused": {"fused": True}, "loop": {"foreach": False}}
    return torch.optim.AdamW(params, **options, **kernels[impl])


def warmup(
    opt: torch.optim.Optimizer, steps: int, total: int = 0, decay: str = "none"
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear learning-rate warm-up over `steps` optimizer steps (0: none), then constant or, with
    decay="cosine", a half-cosine to 0 at step `total` (Loshchilov & Hutter 2017, Eq. 5)."""

    def factor(k: int) -> float:
        ramp = min(1.0, (k + 1) / steps) if steps else 1.0
        if decay == "none" or k < steps:
            return ramp
        progress = min(1.0, (k - steps) / max(1, total - steps))
        return ramp * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


class Engine:
    """One optimizer step of `objective` over `accumulate` micro-batches.

    `opt` trains objective.model; `ema` (optional) follows it after every applied step;
    `scheduler` (optional) steps after every step, applied or skipped. A non-finite loss or
    gradient norm raises a TrainingError ending in `advice` (on_nonfinite="stop") or skips the
    update ("skip"). Under DDP every rank draws the same global batch and keeps its own shard.
    """

    def __init__(
        self,
        objective: Objective,
        opt: torch.optim.Optimizer,
        *,
        generator: torch.Generator,
        world: World | None = None,
        ema: EMA | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        accumulate: int = 1,
        grad_clip: float = 0.0,  # max global grad norm; 0: no clipping
        bf16: bool = False,
        on_nonfinite: str = "stop",
        advice: str = "lower `lr`",
    ):
        if on_nonfinite not in ("stop", "skip"):
            raise UsageError(f"`on_nonfinite` must be 'stop' or 'skip', got {on_nonfinite!r}")
        self.world = world or World()
        if objective.single_process and self.world.size > 1:
            raise UsageError(
                "this objective keeps state from its own per-sample losses and runs in one "
                'process; use sigma_density = {name = "discrete"} with torchrun'
            )
        self.objective, self.opt, self.generator = objective, opt, generator
        self.ema, self.scheduler = ema, scheduler
        self.accumulate, self.grad_clip, self.bf16 = accumulate, grad_clip, bf16
        self.on_nonfinite, self.advice = on_nonfinite, advice
        forward = _Forward(objective)
        self.forward = DDP(forward) if self.world.size > 1 else forward

    def step(self, step: int, loader: Iterator) -> StepResult:
        """One optimizer step (0-based `step`) over `accumulate` micro-batches from `loader`."""
        opt, world = self.opt, self.world
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=world.device)
        logs: dict = {}
        for micro in range(self.accumulate):
            batch = Batch(*next(loader), self.generator, world)  # [N·B, ...] all ranks
            last = micro == self.accumulate - 1
            sync = contextlib.nullcontext() if world.size == 1 or last else self.forward.no_sync()
            with sync:
                with torch.autocast(world.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    per_sample, logs = self.forward(batch, step)  # [B]
                    loss = per_sample.mean() / self.accumulate
                loss.backward()
            total += loss.detach()
        if world.size > 1:
            torch.distributed.all_reduce(total)
            total /= world.size
        clip = self.grad_clip if self.grad_clip > 0 else math.inf
        params = self.objective.model.parameters()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip).item()
        total = total.item()
        applied = math.isfinite(total) and math.isfinite(grad_norm)
        if applied:
            opt.step()
        elif self.on_nonfinite == "skip":
            opt.zero_grad(set_to_none=True)
        else:
            raise TrainingError(
                f"non-finite loss ({total}) or gradient norm ({grad_norm}) at step {step + 1}; "
                f"{self.advice}"
            )
        if self.scheduler is not None:
            self.scheduler.step()
        if applied and self.ema is not None:
            self.ema.update(self.objective.model, step)
        return StepResult(total, grad_norm, applied, logs)

    @property
    def model(self) -> nn.Module:
        """What is trained: the EMA copy when there is one, else the raw model."""
        return self.ema.model if self.ema is not None else self.objective.model


def fit(
    engine: Engine,
    loader: Iterator,
    steps: int,
    callback: Callable[[dict], None] | None = None,
    max_seconds: float | None = None,
) -> tuple[nn.Module, dict[str, float]]:
    """Run `steps` engine steps, or fewer (at least one) once `max_seconds` have passed; callback
    ({"step", "loss"}) after each; (the trained net, frozen; {"steps", "seconds"} done)."""
    engine.objective.model.train()
    start, step = time.perf_counter(), 0
    while step < steps and not (
        step and max_seconds and time.perf_counter() - start >= max_seconds
    ):
        result = engine.step(step, loader)
        step += 1
        if callback is not None:
            callback({"step": step, "loss": result.loss})
    done = {"steps": step, "seconds": round(time.perf_counter() - start, 3)}
    return engine.model.eval().requires_grad_(False), done
