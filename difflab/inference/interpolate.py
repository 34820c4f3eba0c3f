"""Interpolation: slerp between seeded noises or inverted states, or lerp in the codec's latent.

row = interpolate_noise(pipe, seeds=(0, 1), frames=8)            # uint8 [8, C, H, W]
row = interpolate_inverted(pipe, images[:2], frames=8)           # through DDIM inversion
row = interpolate_latent(pipe, images[:2], frames=8)             # E(a)…E(b), no diffusion
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.schedules import discretize
from difflab.core.spherical import slerp
from difflab.inference.edit_base import as_pixels
from difflab.inference.generate import SeededNoise
from difflab.inference.inversion import Inversion, invert, reconstruct, with_inversion
from difflab.inference.pipeline import Pipeline


def _frames(frames: int) -> Tensor:
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise UsageError(f"`frames` must be an integer >= 2, got {frames!r}")
    return torch.linspace(0, 1, frames)


def _pair(pipe: Pipeline, images: Tensor) -> Tensor:
    pixels = as_pixels(pipe, images)
    if len(pixels) != 2:
        raise UsageError(f"interpolation takes 2 `images` (the two ends), got {len(pixels)}")
    return pixels


def interpolate_noise(pipe: Pipeline, seeds: tuple[int, int] = (0, 1), *, frames: int = 8,
                      **options) -> Tensor:  # fmt: skip
    """Slerp between the σ_max noises of two seeds, each frame sampled from σ_max·z_t with the
    same per-frame sampler noise: uint8 [frames, C, H, W]. Deterministic samplers give a
    smooth row; `options` as `Pipeline.sample` (classes, prompts, guidance, sampler, ...)."""
    t = _frames(frames)
    a, b = (SeededNoise([int(s)])(torch.empty(1, *pipe.shape))[0] for s in seeds)
    z = slerp(a, b, t)  # [T, *shape]
    sigmas = options.pop("sigmas", None)
    settings = pipe.settings(steps=options.get("steps"),
                             discretization=options.get("discretization"))  # fmt: skip
    if sigmas is None:
        sigmas = discretize(pipe.denoiser.schedule, settings.discretization, settings.steps)
    start = z * torch.as_tensor(sigmas, dtype=torch.float64)[0].float()
    return pipe(frames, start=start, sigmas=sigmas, **options)


def interpolate_inverted(pipe: Pipeline, images: Tensor, *, frames: int = 8,
                         inversion: Inversion | None = None, **options) -> Tensor:  # fmt: skip
    """Invert both images (DDIM inversion), slerp their σ_max states and reconstruct each frame:
    the ends reproduce the images up to inversion error; uint8 [frames, C, H, W]. `options` as
    `invert` (the same condition for every frame: one class or prompt)."""
    t = _frames(frames)
    inv = inversion or invert(pipe, _pair(pipe, images), **options)
    if inv.nulls is not None:
        raise UsageError("interpolate a plain DDIM inversion; null-text nulls are per image")
    xs = slerp(inv.x[0], inv.x[1], t)  # [T, *shape]
    request = dict(inv.request)
    for key in ("classes", "prompts"):
        if request.get(key):
            request[key] = list(request[key])[:1]
    return reconstruct(pipe, with_inversion(inv, x=xs, request=request))


def interpolate_latent(pipe: Pipeline, images: Tensor, *, frames: int = 8) -> Tensor:
    """Linear interpolation (1−t)·E(a) + t·E(b) in the codec's latent space, decoded: uint8
    [frames, C, H, W] (a pixel crossfade for the identity codec)."""
    t = _frames(frames)
    x0 = pipe.encode(_pair(pipe, images))  # [2, *shape]
    tt = t.reshape(-1, *([1] * (x0.ndim - 1)))
    return pipe.to_images((1 - tt) * x0[0] + tt * x0[1])
