"""One UI request → one `Pipeline.sample` call: edits as `start`/`sigmas`/`step_hook`, previews
of x̂0 from the callback, and a cancel that stops at the next step. No Gradio here.

SDEdit (Meng et al. 2022, §3): x(σ_s) = x0 + σ_s·ε on the grid's tail that starts at the
strength's σ. Inpainting (replacement method; Lugmayr et al. 2022, Eq. 8 without resampling):
after each step the known region is re-noised to σ_{i+1} and pasted over x.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.imageio import fit_image, image_grid, pixels_to_uint8, save_images
from difflab.core.schedules import discretize
from difflab.inference import provenance
from difflab.inference.generate import SeededNoise

EDIT_SEED = 1 << 32  # edit noise of sample i draws from seed + i + EDIT_SEED (not the sampler's)


class Cancelled(Exception):
    """Raised from the step callback when the user pressed cancel."""


@dataclass
class Job:
    """What the UI asked for; `given` holds the request inputs (classes, prompts, images)."""

    n: int
    seed: int
    sampler: dict | None = None
    steps: int | None = None
    discretization: str | None = None
    guidance: str = ""
    given: dict = field(default_factory=dict)
    image: np.ndarray | None = None  # init image [H, W, C] uint8 (SDEdit / inpainting)
    mask: np.ndarray | None = None  # [H, W] bool, True = repaint (inpainting)
    strength: float = 1.0  # SDEdit: the fraction of the σ grid re-run
    preview_every: int = 1
    preview_seconds: float = 0.25  # and at most one preview per this many seconds (and the last)
    cancel: threading.Event = field(default_factory=threading.Event)


def model_image(pipe, image: np.ndarray, resample=Image.Resampling.BICUBIC) -> Tensor:
    """An uploaded [H, W(, C)] uint8 array → uint8 [C, H, W] at the model's image shape."""
    c, h, w = pipe.image_shape
    im = Image.fromarray(np.asarray(image, dtype=np.uint8))
    im = fit_image(im.convert("L" if c == 1 else "RGB"), h, resample)
    arr = np.asarray(im, dtype=np.uint8).reshape(h, w, c)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)  # [C, H, W]


def check_mask(image: np.ndarray, mask: np.ndarray) -> None:
    """UsageError unless the mask covers the init image pixel for pixel."""
    if mask.shape[:2] != image.shape[:2]:
        raise UsageError(
            f"the mask is {mask.shape[1]}×{mask.shape[0]} but the init image is "
            f"{image.shape[1]}×{image.shape[0]}; paint or upload a mask of the image's size"
        )


def edit_noise(seed: int, n: int) -> SeededNoise:
    """Per-sample seeded noise for edits, apart from the sampler's stream of the same seed."""
    return SeededNoise(list(range(seed + EDIT_SEED, seed + EDIT_SEED + n)))


def edit_arguments(pipe, job: Job) -> tuple[dict, dict | None]:
    """(`start`/`sigmas`/`step_hook` for `Pipeline.sample`, the edit recorded in the PNG)."""
    if job.image is None:
        if job.mask is not None:
            raise UsageError("a mask was given without an init image; upload the image to edit")
        return {}, None
    if not pipe.is_image:
        raise UsageError("this model makes points, not images; remove the init image")
    x0 = pipe.encode(model_image(pipe, job.image)[None])  # [1, *shape] model space
    s = pipe.settings(steps=job.steps, discretization=job.discretization)
    sigmas = discretize(pipe.denoiser.schedule, s.discretization, s.steps)  # [steps + 1]
    noise = edit_noise(job.seed, job.n)
    if job.mask is None:
        if not 0.0 < job.strength <= 1.0:
            raise UsageError(f"strength must be in (0, 1], got {job.strength}")
        first = min(s.steps - 1, s.steps - round(s.steps * job.strength))
        tail = sigmas[first:]
        start = x0 + tail[0].float() * noise(x0.expand(job.n, *x0.shape[1:]))  # [n, *shape]
        return {"start": start, "sigmas": tail}, {"kind": "sdedit", "strength": job.strength}
    check_mask(job.image, job.mask)
    m = model_image(pipe, job.mask.astype(np.uint8) * 255, Image.Resampling.NEAREST)[:1]
    m = F.interpolate(m[None].float() / 255, size=pipe.shape[-2:], mode="nearest")  # [1,1,h,w]

    def paste(x: Tensor, i: int, sigma_next: Tensor) -> Tensor:
        """Known region re-noised to σ_{i+1}, the masked region as sampled."""
        known = x0.to(x.device) + sigma_next.to(x.dtype) * noise(x)
        return m.to(x.device) * x + (1 - m.to(x.device)) * known

    return {"step_hook": paste}, {"kind": "inpaint", "mask_pixels": int(job.mask.sum())}


def preview(pipe, denoised: Tensor) -> np.ndarray:
    """x̂0 of a batch [b, *shape] → one uint8 grid image [H, W(, C)] for display."""
    images = pixels_to_uint8(pipe.decode(denoised.float())).numpy()
    up = max(1, 128 // images.shape[-1])
    return np.asarray(image_grid(images, upscale=up))


def run(
    pipe, source: str | Path, job: Job, out: Path,
    on_step: Callable[[int, int, np.ndarray | None], None] | None = None,
) -> list[Path]:  # fmt: skip
    """Sample `job` with `pipe` (loaded from `source`), write its PNGs with their settings into
    `out`, and return their paths; `on_step(done, total, preview or None)` after every step."""
    edit, record = edit_arguments(pipe, job)
    s = pipe.settings(sampler=job.sampler, steps=job.steps, discretization=job.discretization,
                      batch_size=job.n, seed=job.seed)  # fmt: skip
    total = len(edit["sigmas"]) - 1 if "sigmas" in edit else s.steps
    batches = -(-job.n // s.batch_size)

    shown = [-float("inf")]  # when the last preview was drawn

    def callback(info: dict) -> None:
        if job.cancel.is_set():
            raise Cancelled
        done = info["i"] + 1 + total * (info["start"] // s.batch_size)
        now = time.perf_counter()
        show = (info["i"] % job.preview_every == 0 and now - shown[0] >= job.preview_seconds
                or info["i"] == total - 1)  # fmt: skip
        if show:
            shown[0] = now
        if on_step is not None:
            on_step(done, total * batches, preview(pipe, info["denoised"]) if show else None)

    guidance = [job.guidance] if job.guidance.strip() else []
    samples = pipe.sample(job.n, seed=job.seed, sampler=job.sampler, steps=job.steps,
                          discretization=job.discretization, guidance=guidance,
                          batch_size=job.n, callback=callback, **job.given, **edit)  # fmt: skip
    base = provenance.run_settings(source, pipe, samples, record)
    metas = provenance.image_settings(base, samples, job.given)
    images = pipe.to_images(samples.x).numpy()
    return save_images(images, next_folder(out), meta=metas)


def next_folder(out: Path) -> Path:
    """out/00001, out/00002, ...: one new folder per run, so earlier results stay as they were."""
    taken = [int(p.name) for p in Path(out).glob("[0-9]" * 5) if p.name.isdigit()]
    return Path(out) / f"{max(taken, default=0) + 1:05d}"
