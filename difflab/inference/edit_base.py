"""What every editing method shares: a Pipeline request resolved once, then seeded batches.

`prepare(pipe, n, **options)` resolves the sampling settings (the config's defaults under the
caller's `seed`, `classes`, `prompts`, `negative_prompts`, `sampler`, `steps`, `discretization`, `guidance`,
`batch_size`, `device`) into an `EditRun`; `EditRun.batches()` yields, per batch, the sample
indices, the guided DenoiseFn and the per-sample seeded noise, exactly as `generate` draws them,
so an edit that changes nothing equals `Pipeline.sample` with the same seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.imageio import uint8_to_pixels
from difflab.core.schedules import discretize
from difflab.core.types import Cond
from difflab.inference.generate import SeededNoise
from difflab.inference.pipeline import Pipeline, Settings
from difflab.samplers.base import sample

OPTIONS = ("seed", "classes", "prompts", "negative_prompts", "sampler", "steps", "discretization",
           "guidance", "batch_size", "device", "callback")  # fmt: skip
SECOND_STREAM = 2**40  # seed offset of a second per-sample noise stream (RePaint's known region)


@dataclass
class EditRun:
    """A resolved editing request for n samples: settings, condition, guidance chain, device."""

    pipe: Pipeline
    n: int
    settings: Settings
    cond: Cond
    chain: Callable
    asked: dict
    device: torch.device
    callback: Callable | None = None

    @property
    def sampler(self) -> tuple[str, dict]:
        """(sampler name, its options)."""
        spec = dict(self.settings.sampler)
        return spec.pop("name"), spec

    def grid(self, steps: int | None = None) -> Tensor:
        """The model's decreasing σ grid of `steps` (default: the settings') [steps + 1]."""
        spec, steps = self.settings.discretization, steps or self.settings.steps
        sigmas = discretize(self.pipe.denoiser.schedule, spec, steps)
        return sigmas.to(self.device)

    def batches(self, cond: Cond | None = None) -> Iterator[tuple[slice, Callable, SeededNoise]]:
        """(indices, fn, noise) per batch; sample i's noise is seeded by seed + i."""
        s, cond = self.settings, self.cond if cond is None else cond
        for first in range(0, self.n, s.batch_size):
            idx = slice(first, min(self.n, first + s.batch_size))
            noise = SeededNoise(list(range(s.seed + idx.start, s.seed + idx.stop)), self.device)
            yield idx, self.fn(idx, cond), noise

    def fn(self, idx: slice, cond: Cond | None = None) -> Callable:
        """The guided DenoiseFn of the samples `idx` (cond: the run's, or one given)."""
        cond = self.cond if cond is None else cond
        return self.chain(self.pipe.denoiser, {k: v[idx].to(self.device) for k, v in cond.items()})

    def second_noise(self, idx: slice) -> SeededNoise:
        """A second per-sample stream (seed + i + 2⁴⁰), independent of the sampler's noise."""
        first = self.settings.seed + SECOND_STREAM
        return SeededNoise(list(range(first + idx.start, first + idx.stop)), self.device)

    def step_callback(self, idx: slice, offset: int = 0, on_step: Callable | None = None):
        """`on_step(info)`, then the caller's callback with the batch start and a running step
        number added; None when there is neither."""
        if self.callback is None and on_step is None:
            return None

        def callback(info: dict) -> None:
            if on_step is not None:
                on_step(info)
            if self.callback is not None:
                self.callback({**info, "start": idx.start, "step": offset + info["i"]})

        return callback

    def sample(self, fn, x: Tensor, sigmas: Tensor, noise, idx: slice, offset: int = 0,
               step_hook=None, on_step=None) -> Tensor:  # fmt: skip
        """Run the chosen sampler from x at sigmas[0] (samplers.base contract); `on_step(info)`
        sees every step before the caller's callback."""
        name, opts = self.sampler
        hook = {} if step_hook is None else {"step_hook": step_hook}
        callback = self.step_callback(idx, offset, on_step)
        return sample(name, fn, x, sigmas, noise=noise, callback=callback, **opts, **hook)


def prepare(pipe: Pipeline, n: int, **options) -> EditRun:
    """The EditRun of n samples under `options` (see OPTIONS; None takes the config's default)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UsageError(
            f"unknown editing option `{unknown[0]}`; the options are: {', '.join(OPTIONS)}"
        )
    o = {k: options.get(k) for k in OPTIONS}
    s = pipe.settings(sampler=o["sampler"], steps=o["steps"], discretization=o["discretization"],
                      guidance=o["guidance"], batch_size=o["batch_size"], seed=o["seed"])  # fmt: skip
    cond, chain, asked = pipe.conditions(
        n, s, o["device"], classes=o["classes"] or (), prompts=o["prompts"] or (),
        negative_prompts=o["negative_prompts"] or (),
    )  # fmt: skip
    return EditRun(pipe, n, s, cond, chain, asked, pipe.device, o["callback"])


def as_pixels(pipe: Pipeline, images: Tensor) -> Tensor:
    """uint8 images or float pixels [n, C, H, W] → float pixels in [-1, 1], shape-checked."""
    if not isinstance(images, Tensor) or images.ndim != 4:
        got = list(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise UsageError(
            f"`images` must be a tensor [n, C, H, W] (uint8 or pixels in [-1, 1]), got {got}"
        )
    c, h, w = pipe.image_shape
    if images.shape[1] != c:
        raise UsageError(
            f"`images` have {images.shape[1]} channels but this model makes {c}; convert them "
            f"to {'grayscale' if c == 1 else 'RGB'}"
        )
    pixels = uint8_to_pixels(images) if images.dtype == torch.uint8 else images.float()
    if tuple(pixels.shape[2:]) != (h, w):
        raise UsageError(
            f"`images` are {pixels.shape[2]}×{pixels.shape[3]} but this model makes {h}×{w}; "
            "resize them to the model's image size"
        )
    return pixels
