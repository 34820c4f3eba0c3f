"""Image conditioning through the "channels" slot: a degraded copy of x0 concatenated to the input.

SR3 (Saharia et al. 2021, §2.3) and Palette (Saharia et al. 2022, §3) condition the denoiser on an
image by concatenating it to x_t along channels. Training makes the condition from the clean
image itself (`degrade`); sampling takes user images, either at full size (degraded the same way)
or already small (upsampled the same way).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.conditioning.base import CONDITIONERS, Conditioner, ConditionRequest, cycle
from difflab.core.errors import UsageError
from difflab.core.types import Cond

SOURCES = ("lowres",)


@CONDITIONERS.register("image")
class ImageConditioner(Conditioner):
    """x0 average-pooled by `factor` and upsampled back (bilinear), as channels (SR3 §2.3)."""

    kind = "image"
    takes = ("images",)
    needs_user_input = True  # sampling needs the user's images (no in-loop FD)
    summary = "is conditioned on images only"

    def __init__(self, *, source: str = "lowres", factor: int = 2, channels: int = 0,
                 p_uncond: float = 0.1):  # fmt: skip
        super().__init__(p_uncond)
        if source not in SOURCES:
            raise UsageError(
                f"image conditioner source {source!r} is unknown; choose one of: "
                + ", ".join(SOURCES)
            )
        if not isinstance(factor, int) or factor < 2:
            raise UsageError(f"image conditioner factor must be an integer >= 2, got {factor!r}")
        self.source, self.factor, self.channels = source, factor, int(channels)

    @classmethod
    def resolve(cls, spec: dict, dataset, dataset_name: str) -> dict:
        """The image channel count from the data; point data is refused."""
        if dataset.kind != "image":
            raise UsageError(
                f"cond {spec['name']!r} needs an image dataset but {dataset_name!r} holds points; "
                "use image data or drop cond"
            )
        spec["channels"] = dataset.shape[0]
        return spec

    def net_options(self) -> dict[str, int]:
        return {"cond_channels": self.channels}

    def upsample(self, small: Tensor, size: tuple[int, int]) -> Tensor:
        """[B, C, h, w] → [B, C, H, W], bilinear (half-pixel centres)."""
        return F.interpolate(small, size=size, mode="bilinear", align_corners=False)

    def degrade(self, x0: Tensor) -> Tensor:
        """The condition of clean images x0 [B, C, H, W] (model space): same shape, low detail."""
        small = F.avg_pool2d(x0, self.factor)  # [B, C, H/f, W/f]
        return self.upsample(small, x0.shape[-2:])

    def for_training(self, x0: Tensor, labels: Tensor | None, generator=None) -> Cond:
        return {"channels": self.degrade(x0)}

    def from_images(self, images: Tensor, shape: tuple[int, ...]) -> Cond:
        """User images [B, C, h, w] in model space: full size `shape` is degraded, 1/factor size
        is upsampled; anything else is a UsageError naming both accepted sizes."""
        c, h, w = shape
        small = (h // self.factor, w // self.factor)
        if images.shape[1] != c or tuple(images.shape[-2:]) not in ((h, w), small):
            raise UsageError(
                f"conditioning images are {list(images.shape[1:])} but this model takes "
                f"[{c}, {h}, {w}] (degraded by {self.factor}×) or the low-resolution "
                f"[{c}, {small[0]}, {small[1]}]; resize the images"
            )
        if tuple(images.shape[-2:]) == (h, w):
            return {"channels": self.degrade(images)}
        return {"channels": self.upsample(images, (h, w))}

    def build(self, request: ConditionRequest) -> tuple[Cond, dict[str, list]]:
        """The request's images [n, C, h, w] for samples of request.image_shape."""
        if request.images is None:
            raise UsageError(
                "this model is conditioned on images: pass `images` (full size or low resolution)"
            )
        return self.from_images(request.images, tuple(request.image_shape)), {}


def read_images(paths: list[str], shape: tuple[int, ...], n: int) -> Tensor:
    """Image files cycled over n samples, in model space [n, C, h, w] (one size for all)."""
    from difflab.core.imageio import load_image, uint8_to_pixels

    loaded = []
    for p in paths:
        if not Path(p).is_file():
            raise UsageError(
                f"image file {p} given in `images` does not exist; pass an existing PNG or JPEG"
            )
        loaded.append(load_image(Path(p), shape[0], None))  # [C, h, w] uint8
    if len({tuple(im.shape) for im in loaded}) > 1:
        raise UsageError("the `images` files differ in size; pass images of one size")
    batch = torch.stack(cycle(loaded, n))  # [n, C, h, w]
    return uint8_to_pixels(batch)
