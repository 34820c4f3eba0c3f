"""One UI request → one library call: `Pipeline.sample`, or an edit of `inference.remake`
(SDEdit and RePaint of `inference.edit`, images to an image-conditional model); previews of x̂0
from the callback, and a cancel that stops at the next step. No Gradio here.

The init image is fitted to the model's size here (a low-resolution input of an SR model is kept
at its size) and saved as inputs/init.png beside the results, so `difflab sample --from-png
IMG --image inputs/init.png` re-makes an edit bit for bit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.imageio import fit_image, image_grid, pixels_to_uint8, save_images, to_pil
from difflab.inference import provenance
from difflab.inference.edit import repaint_steps, sdedit_sigmas
from difflab.inference.pipeline import Samples
from difflab.inference.remake import edit_record, run_edit


class Cancelled(Exception):
    """Raised from the step callback when the user pressed cancel."""


@dataclass
class Job:
    """What the UI asked for; `given` holds the request inputs (classes, prompts, negative
    prompts)."""

    n: int
    seed: int
    sampler: dict | None = None
    steps: int | None = None
    discretization: str | None = None
    guidance: str = ""
    given: dict = field(default_factory=dict)
    image: np.ndarray | None = None  # init image [H, W, C] uint8 (edit / image condition)
    mask: np.ndarray | None = None  # [H, W] bool, True = repaint (inpainting)
    strength: float = 1.0  # SDEdit: the fraction of the σ grid re-run
    jump_length: int = 1  # RePaint's time travel: jump length and resample count
    resample: int = 1  # (1: replacement only, no time travel)
    aug_level: float | None = None  # an SR model's noise-augmentation level (None: its config's)
    preview_every: int = 1
    preview_seconds: float = 0.25  # and at most one preview per this many seconds (and the last)
    cancel: threading.Event = field(default_factory=threading.Event)


def model_image(pipe, image: np.ndarray, resample=Image.Resampling.BICUBIC,
                size: int | None = None) -> Tensor:  # fmt: skip
    """An uploaded [H, W(, C)] uint8 array → uint8 [C, H, W] at the model's image size (or
    `size`), as `core.imageio.load_image` reads a file."""
    c, h, _ = pipe.image_shape
    size = size or h
    im = Image.fromarray(np.asarray(image, dtype=np.uint8))
    im = fit_image(im.convert("L" if c == 1 else "RGB"), size, resample)
    arr = np.asarray(im, dtype=np.uint8).reshape(size, size, c)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)  # [C, H, W]


def check_mask(image: np.ndarray, mask: np.ndarray) -> None:
    """UsageError unless the mask covers the init image pixel for pixel."""
    if mask.shape[:2] != image.shape[:2]:
        raise UsageError(
            f"the mask is {mask.shape[1]}×{mask.shape[0]} but the init image is "
            f"{image.shape[1]}×{image.shape[0]}; paint or upload a mask of the image's size"
        )


def edit_kind(pipe, job: Job) -> str | None:
    """None (plain sampling), "condition" (an image-conditional model), "sdedit" or "inpaint"."""
    if job.image is None:
        if job.mask is not None:
            raise UsageError("a mask was given without an init image; upload the image to edit")
        return None
    if not pipe.is_image:
        raise UsageError("this model makes points, not images; remove the init image")
    if "images" in getattr(pipe.conditioner, "takes", ()):
        return "condition"
    return "sdedit" if job.mask is None else "inpaint"


def edit_inputs(pipe, job: Job, kind: str) -> tuple[Tensor, Tensor | None]:
    """(init uint8 [C, H, W], keep mask [1, 1, H, W] (1 = keep) or None) of an edit."""
    cond = pipe.conditioner
    takes_masks = kind != "condition" or "masks" in getattr(cond, "takes", ())
    if job.mask is not None and not takes_masks:
        raise UsageError("this model takes no inpainting mask; clear the painted mask")
    if kind == "condition" and takes_masks and job.mask is None:
        raise UsageError("this model inpaints: paint the region to fill on the image")
    c, h, w = pipe.image_shape
    factor = getattr(cond, "factor", None) if getattr(cond, "source", "") == "lowres" else None
    small = factor and job.image.shape[:2] == (h // factor, w // factor)
    init = model_image(pipe, job.image, size=h // factor if small else None)
    if job.mask is None:
        return init, None
    check_mask(job.image, job.mask)
    painted = model_image(pipe, job.mask.astype(np.uint8) * 255, Image.Resampling.NEAREST)[:1]
    return init, (painted[None] < 128).float()  # [1, 1, H, W]


def edit_steps(pipe, job: Job, kind: str | None) -> int:
    """Denoising steps the job's callback reports (per batch)."""
    steps = pipe.settings(steps=job.steps).steps
    if kind == "sdedit":
        return len(sdedit_sigmas(torch.zeros(steps + 1), job.strength)) - 1
    if kind == "inpaint":
        return repaint_steps(steps, job.jump_length, job.resample)
    return steps


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
    kind = edit_kind(pipe, job)
    init, keep = edit_inputs(pipe, job, kind) if kind else (None, None)
    total = edit_steps(pipe, job, kind)
    shown = [-float("inf")]  # when the last preview was drawn

    def callback(info: dict) -> None:
        if job.cancel.is_set():
            raise Cancelled
        done = info.get("step", info["i"]) + 1
        now = time.perf_counter()
        show = ((done - 1) % job.preview_every == 0 and now - shown[0] >= job.preview_seconds
                or done == total)  # fmt: skip
        if show:
            shown[0] = now
        if on_step is not None:
            on_step(done, total, preview(pipe, info["denoised"]) if show else None)

    options = dict(seed=job.seed, sampler=job.sampler, steps=job.steps,
                   discretization=job.discretization, batch_size=job.n, callback=callback,
                   guidance=[job.guidance] if job.guidance.strip() else [], **job.given)  # fmt: skip
    folder = next_folder(out)
    if kind is None:
        samples = pipe.sample(job.n, **options)
        images, record = pipe.to_images(samples.x), None
    else:
        opts = {"strength": job.strength} if kind == "sdedit" else (
            {"jump_length": job.jump_length, "resample": job.resample} if kind == "inpaint"
            else {"aug_level": job.aug_level})  # fmt: skip
        record = edit_record(kind, init, keep, **opts)
        images, settings, asked = run_edit(pipe, record, init, job.n, keep, **options)
        samples = Samples(images, asked, settings)
        folder.joinpath("inputs").mkdir(parents=True)
        to_pil(init.numpy()).save(folder / "inputs" / "init.png")
    base = provenance.run_settings(source, pipe, samples.asked, samples.settings, record)
    metas = provenance.image_settings(base, samples.asked, len(images), job.given)
    return save_images(images.numpy(), folder, meta=metas)


def next_folder(out: Path) -> Path:
    """out/00001, out/00002, ...: one new folder per run, so earlier results stay as they were."""
    taken = [int(p.name) for p in Path(out).glob("[0-9]" * 5) if p.name.isdigit()]
    return Path(out) / f"{max(taken, default=0) + 1:05d}"
