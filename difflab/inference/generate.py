"""generate(): seeded batches of samples, shared by the CLI, the demo and the metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

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
) -> Iterator[Tensor]:
    """Yield batches [b, *shape] of model-space samples; sample i is seeded by seed + i."""
    spec = {"name": sampler} if isinstance(sampler, str) else dict(sampler)
    name = spec.pop("name")
    sigmas = discretize(denoiser.schedule, discretization, steps).to(device)
    for start in range(0, n, batch_size):
        idx = slice(start, min(n, start + batch_size))
        noise = SeededNoise(list(range(seed + idx.start, seed + idx.stop)), device)
        x = noise(torch.empty(idx.stop - idx.start, *shape, device=device)) * sigmas[0]
        batch_cond = {k: v[idx].to(device) for k, v in (cond or {}).items()}
        fn = guidance(denoiser, batch_cond)
        step_cb = (
            None if callback is None else (lambda info, s=idx.start: callback({**info, "start": s}))
        )
        yield sample(name, fn, x.float(), sigmas, noise=noise, callback=step_cb, **spec)


