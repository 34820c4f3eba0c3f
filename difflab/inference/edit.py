"""Sampling-time editing on any Pipeline, with any sampler and any guidance: SDEdit and RePaint.

    out = sdedit(pipe, images, strength=0.5, sampler="euler", steps=50)       # uint8 [n, C, H, W]
    out = repaint(pipe, images, "centre", jump_length=10, resample=10)       # 1 = keep, 0 = fill

Inputs are encoded by the Pipeline's codec and results decoded by it: pixel and latent models
alike. Inversion and interpolation live in `inference.inversion` and `inference.interpolate`.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.imageio import pixels_to_uint8
from difflab.inference.edit_base import EditRun, as_pixels, prepare
from difflab.inference.masks import latent_mask, resolve_mask
from difflab.inference.pipeline import Pipeline


def sdedit_sigmas(grid: Tensor, strength: float) -> Tensor:
    """The last ⌈strength·N⌉ steps of a decreasing grid of N steps: SDEdit's t₀ = strength
    (Meng et al. 2021, §3: perturb to t₀, then solve the reverse SDE/ODE from t₀)."""
    if (
        isinstance(strength, bool)
        or not isinstance(strength, (int, float))
        or not (0 < strength <= 1)
    ):
        raise UsageError(
            f"`strength` must be in (0, 1] (the fraction of the sampling grid to run), got "
            f"{strength!r}; at 0 nothing changes, so return the input instead"
        )
    steps = len(grid) - 1
    k = max(1, math.ceil(strength * steps - 1e-9))
    return grid[steps - k :]


@torch.inference_mode()
def sdedit(pipe: Pipeline, images: Tensor, *, strength: float, **options) -> Tensor:
    """SDEdit (Meng et al. 2021, Alg. 1): x = E(image) + σ₀·z at σ₀ = the grid's σ at
    `strength`, then the chosen sampler down to the end of the grid; uint8 images [n, C, H, W].

    `images` uint8 (or pixels in [-1, 1]) [n, C, H, W]; `options` as `edit_base.prepare`
    (seed, classes, prompts, negative_prompts, sampler, steps, discretization, guidance,
    batch_size, device, callback). Sample i uses seed + i for σ₀·z and its sampler noise.
    """
    pixels = as_pixels(pipe, images)
    return sdedit_run(prepare(pipe, len(pixels), **options), pixels, strength)


@torch.inference_mode()
def sdedit_run(run: EditRun, pixels: Tensor, strength: float) -> Tensor:
    """`sdedit` of pixels [n, C, H, W] in [-1, 1] under a prepared request `run` (its
    settings and what each sample asked for stay readable on `run`): uint8 [n, C, H, W]."""
    pipe = run.pipe
    sigmas = sdedit_sigmas(run.grid(), strength)
    x0 = pipe.encode(pixels)  # [n, *shape] model space
    out = []
    for idx, fn, noise in run.batches():
        x = x0[idx].to(run.device)
        out.append(run.sample(fn, x + sigmas[0] * noise(x), sigmas, noise, idx).cpu())
    return pipe.to_images(torch.cat(out))


def repaint_path(steps: int, jump_length: int, resample: int) -> list[int]:
    """Grid positions visited by RePaint's time travel (Lugmayr et al. 2022, Alg. 1 and §4.2's
    jump schedule, their `get_schedule_jump`): from 0 (σ_max) to `steps` (the grid's end), every
    `jump_length` steps back up `jump_length` positions, `resample` − 1 times each."""
    for name, value in (("steps", steps), ("jump_length", jump_length), ("resample", resample)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"`{name}` must be an integer >= 1, got {value!r}")
    jumps = {t: resample - 1 for t in range(0, steps - jump_length, jump_length)}
    t, ts = steps, []  # the paper's time index t: T − 1 is the start, −1 the end
    while t >= 1:
        t -= 1
        ts.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump_length):
                t += 1
                ts.append(t)
    return [steps - 1 - t for t in ts] + [steps]  # grid position of t


def monotone_runs(path: list[int]) -> list[list[int]]:
    """Split a path of grid positions into maximal strictly monotone runs sharing end points."""
    runs, run = [], [path[0]]
    for p in path[1:]:
        if len(run) > 1 and (p - run[-1]) * (run[-1] - run[-2]) < 0:
            runs.append(run)
            run = [run[-1]]
        run.append(p)
    return runs + [run]


@torch.inference_mode()
def repaint(
    pipe: Pipeline,
    images: Tensor,
    mask: Tensor | str | Path,
    *,
    jump_length: int = 10,
    resample: int = 10,
    **options,
) -> Tensor:
    """RePaint (Lugmayr et al. 2022, Alg. 1): after every step to σ' the known region is replaced
    by the input noised to σ' (m ⊙ (x0 + σ'·z) + (1 − m) ⊙ x, Eq. 8), with time travel back up the
    grid (`repaint_path`); finally the known pixels are pasted exactly: uint8 [n, C, H, W].

    `mask` (1 = keep, 0 = fill) is a tensor [H, W] / [n, 1, H, W], a PNG (white = keep) or a
    generator name of `masks.MASK_KINDS` drawn from seed + i. With `resample`=1 (or a
    `jump_length` >= the grid's steps) there is no time travel: one sampler call runs the grid.
    `options` as `sdedit`; the known region's noise is a second per-sample stream, so an
    all-fill mask without time travel equals `Pipeline.sample` with the same seed.
    """
    pixels = as_pixels(pipe, images)
    run = prepare(pipe, len(pixels), **options)
    return repaint_run(run, pixels, mask, jump_length=jump_length, resample=resample)


@torch.inference_mode()
def repaint_run(run: EditRun, pixels: Tensor, mask: Tensor | str | Path, *,
                jump_length: int = 10, resample: int = 10) -> Tensor:  # fmt: skip
    """`repaint` of pixels [n, C, H, W] in [-1, 1] under a prepared request `run`: uint8."""
    pipe, n = run.pipe, len(pixels)
    m_pix = resolve_mask(mask, n, pipe.image_shape, run.settings.seed)  # [n, 1, H, W]
    m = latent_mask(m_pix, pipe.shape).to(run.device)  # [n, 1, h, w] model space
    sigmas = run.grid()
    runs = monotone_runs(repaint_path(len(sigmas) - 1, jump_length, resample))
    x0 = pipe.encode(pixels)  # [n, *shape]
    out = []
    for idx, fn, noise in run.batches():
        known, m_b, known_noise = x0[idx].to(run.device), m[idx], run.second_noise(idx)

        def paste(x: Tensor, i: int, sigma_next: Tensor) -> Tensor:
            return m_b * (known + sigma_next * known_noise(x)) + (1 - m_b) * x

        x, done = noise(known) * sigmas[0], 0
        for seg in runs:
            lo, hi = sigmas[seg[0]], sigmas[seg[-1]]
            if seg[-1] > seg[0]:  # denoise down the grid, pasting after every step
                x = run.sample(fn, x, sigmas[seg[0] : seg[-1] + 1], noise, idx, done, paste)
                done += len(seg) - 1
            else:  # time travel: q(x_σhi | x_σlo) = N(x, (σhi² − σlo²)·I) in σ-space
                x = x + (hi**2 - lo**2).sqrt() * noise(x)
        out.append(x.cpu())
    result = pipe.decode(torch.cat(out))  # [n, C, H, W] pixels
    return pixels_to_uint8(m_pix * pixels + (1 - m_pix) * result)


def repaint_steps(steps: int, jump_length: int, resample: int) -> int:
    """Denoising steps (network calls of a first-order sampler) one RePaint sample takes."""
    path = repaint_path(steps, jump_length, resample)
    return sum(1 for a, b in zip(path, path[1:]) if b > a)
