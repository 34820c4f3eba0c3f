"""generate(): seeded batches of samples, shared by the CLI, the demo and the metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.schedules import discretize
from difflab.guidance.chain import plain as guidance_plain
from difflab.samplers.base import sample


class SeededNoise:
    """Standard normal draws where sample i uses only its own generator (seed i): batch-invariant."""

    def __init__(self, seeds: list[int], device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def __call__(self, like: Tensor) -> Tensor:
        shape = like.shape[1:]
        draws = [torch.randn(shape, generator=g) for g in self.generators]
        return torch.stack(draws).to(device=like.device, dtype=like.dtype)  # [B, ...]


def plain(denoiser, cond: dict) -> Callable[[Tensor, Tensor], Tensor]:
    """The unguided DenoiseFn: D(x; σ, cond) with cond bound, declaring the model's learned
    variance when it has one (guidance.chain.plain; read by the ddpm sampler and the VLB)."""
    return guidance_plain(denoiser, cond)


@torch.inference_mode()
def generate(
    denoiser,
    shape: tuple[int, ...],
    *,
    n: int,
    seed: int = 0,
    batch_size: int = 64,
    sampler: str | dict = "heun",
    steps: int = 18,
    discretization: str | dict = "karras",
    cond: dict[str, Tensor] | None = None,
    guidance: Callable = plain,
    callback: Callable | None = None,
    device: str | torch.device = "cpu",
    start: Tensor | None = None,
    sigmas: Tensor | None = None,
    step_hook: Callable | None = None,
) -> Iterator[Tensor]:
    """Yield batches [b, *shape] of model-space samples; sample i is seeded by seed + i.

    `start` [n, *shape] (or [1, *shape] for all) is the state x at σ = sigmas[0] instead of
    seeded noise·sigmas[0] (SDEdit, img2img); `sigmas` replaces the grid of `steps` and
    `discretization`; `step_hook(x, i, sigma_next)` is passed to the sampler (samplers.base).
    """
    spec = {"name": sampler} if isinstance(sampler, str) else dict(sampler)
    name = spec.pop("name")
    if sigmas is None:
        sigmas = discretize(denoiser.schedule, discretization, steps)
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).to(device)
    if start is not None and (start.ndim != len(shape) + 1 or len(start) not in (1, n)):
        raise UsageError(
            f"`start` has shape {list(start.shape)}; pass model-space states [{n}, "
            f"{', '.join(map(str, shape))}] (or [1, ...] for all)"
        )
    hook = {} if step_hook is None else {"step_hook": step_hook}
    for first in range(0, n, batch_size):
        idx = slice(first, min(n, first + batch_size))
        noise = SeededNoise(list(range(seed + idx.start, seed + idx.stop)), device)
        if start is None:
            x = noise(torch.empty(idx.stop - idx.start, *shape, device=device)) * sigmas[0]
        else:
            x = start[idx if len(start) > 1 else slice(0, 1)].to(device, torch.float32)
            x = x.expand(idx.stop - idx.start, *shape).clone()  # the caller's tensor stays as is
        with torch.inference_mode(False):  # gradient terms may differentiate D (and its cond)
            batch_cond = {k: v[idx].to(device).clone() for k, v in (cond or {}).items()}
            fn = guidance(denoiser, batch_cond)
        step_cb = (
            None if callback is None else (lambda info, s=idx.start: callback({**info, "start": s}))
        )
        yield sample(name, fn, x.float(), sigmas, noise=noise, callback=step_cb, **spec, **hook)
