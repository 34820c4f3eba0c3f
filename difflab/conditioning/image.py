"""Image conditioning through the "channels" slot: a degraded copy of x0 concatenated to the input.

SR3 (Saharia et al. 2021, §2.3) and Palette (Saharia et al. 2022, §3) condition the denoiser on an
image by concatenating it to x_t along channels. Training makes the condition from the clean
image itself (`degrade`, random masks, noise augmentation); sampling takes user images (low
resolution ones upsampled the same way; RGB ones reduced to luma; inpainting ones with masks).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.conditioning.base import CONDITIONERS, Conditioner, ConditionRequest, cycle
from difflab.conditioning.degrade import (
    gaussian_blur,
    luminance,
    masked_condition,
    paste_back,
    upsample,
)
from difflab.conditioning.masks import MASK_KINDS, check_masks, random_masks
from difflab.core.errors import UsageError
from difflab.core.types import Cond, bcast

SOURCES = ("lowres", "gray", "masked", "uncrop")
AUG_STREAM = 0x5EED_A06  # the augmentation noise's seed stream, apart from the sampler's


@CONDITIONERS.register("image")
class ImageConditioner(Conditioner):
    """An image condition as extra channels; `source` says how it is made from x0.

    lowres  x0 average-pooled by `factor`, upsampled back (SR3 §2.3); with `aug_max` > 0,
            Gaussian noise of level s ~ U[0, aug_max] on the low-res image before upsampling,
            s given to the net in the "aug" slot (CDM §3.2 non-truncated augmentation; Imagen),
            and optionally a blur of std ~ U[0, aug_blur] low-res pixels (CDM §3.2).
    gray    the luminance of RGB x0 (Palette colourisation).
    masked  x0·m and the mask m, m a random box or free-form mask (GLIDE's inpainting model;
            Palette inpainting); sampling takes `images` and `masks` and pastes the known
            region back exactly.
    uncrop  as masked with m keeping a random half (Palette uncropping).
    """

    kind = "image"
    takes = ("images",)
    needs_user_input = True  # sampling needs the user's images (no in-loop FD)
    summary = "is conditioned on images only"

    def __init__(self, *, source: str = "lowres", factor: int = 2, channels: int = 0,
                 p_uncond: float = 0.1, mask: str = "mixed", aug_max: float = 0.0,
                 aug_blur: float = 0.0, aug_level: float = 0.0):  # fmt: skip
        super().__init__(p_uncond)
        if source not in SOURCES:
            raise UsageError(
                f"image conditioner source {source!r} is unknown; choose one of: "
                + ", ".join(SOURCES)
            )
        if not isinstance(factor, int) or factor < 2:
            raise UsageError(f"image conditioner factor must be an integer >= 2, got {factor!r}")
        if mask not in MASK_KINDS:
            raise UsageError(f"image conditioner mask {mask!r} is unknown; choose one of: "
                             + ", ".join(MASK_KINDS))  # fmt: skip
        if min(aug_max, aug_blur) < 0 or ((aug_max or aug_blur) and source != "lowres"):
            raise UsageError(
                "image conditioner aug_max and aug_blur must be >= 0 and apply to "
                f"source='lowres' only, got aug_max={aug_max}, aug_blur={aug_blur} for "
                f"source={source!r}"
            )
        self.source, self.factor, self.channels = source, factor, int(channels)
        self.mask = "uncrop" if source == "uncrop" else mask
        self.aug_max, self.aug_blur = float(aug_max), float(aug_blur)
        self.aug_level = self.check_level(aug_level)
        if source in ("masked", "uncrop"):
            self.takes = ("images", "masks")

    @classmethod
    def resolve(cls, spec: dict, dataset, dataset_name: str) -> dict:
        """The image channel count from the data; point data (and gray on 1 channel) refused."""
        if dataset.kind != "image":
            raise UsageError(
                f"cond {spec['name']!r} needs an image dataset but {dataset_name!r} holds points; "
                "use image data or drop cond"
            )
        if spec.get("source") == "gray" and dataset.shape[0] != 3:
            raise UsageError(
                f"image source 'gray' (colourisation) needs RGB data but {dataset_name!r} has "
                f"{dataset.shape[0]} channel(s); use an RGB dataset (emoji, an image folder) "
                "or another source (lowres, masked, uncrop)"
            )
        spec["channels"] = dataset.shape[0]
        return spec

    def net_options(self) -> dict[str, int]:
        extra = {"gray": 1 - self.channels, "masked": 1, "uncrop": 1}.get(self.source, 0)
        aug = {"cond_aug": 1} if self.aug_max > 0 else {}
        return {"cond_channels": self.channels + extra, **aug}

    def check_level(self, level: float) -> float:
        """The augmentation level `aug_level` if this model was trained on it, else UsageError."""
        level = float(level)
        if level and not self.aug_max:
            raise UsageError(
                f"`aug_level` {level} given but this model was trained without noise-conditioning "
                "augmentation; drop `aug_level` or train with cond.aug_max > 0"
            )
        if not 0.0 <= level <= max(self.aug_max, 0.0):
            raise UsageError(
                f"`aug_level` must be in [0, {self.aug_max}] (the model's training range "
                f"aug_max), got {level}"
            )
        return level

    def upsample(self, small: Tensor, size: tuple[int, int]) -> Tensor:
        """[B, C, h, w] → [B, C, H, W], bilinear (half-pixel centres)."""
        return upsample(small, size)

    def degrade(self, x0: Tensor, masks: Tensor | None = None) -> Tensor:
        """The unaugmented condition channels of clean x0 [B, C, H, W] (model space); masked
        and uncrop sources need `masks` [B, 1, H, W]."""
        if self.source == "gray":
            return luminance(x0)  # [B, 1, H, W]
        if self.source in ("masked", "uncrop"):
            return masked_condition(x0, masks)  # [B, C + 1, H, W]
        return self.upsample(F.avg_pool2d(x0, self.factor), x0.shape[-2:])  # [B, C, H, W]

    def augmented(self, small: Tensor, size: tuple[int, int], level: Tensor,
                  noise: Tensor | None = None, blur: Tensor | None = None) -> Cond:
        """CDM §3.2: low-res `small` [B, C, h, w] blurred by std `blur` [B], plus level [B]
        times `noise` (None: none, e.g. a truncated base sample already at that level),
        upsampled to `size`; the level rides in the "aug" slot."""
        if blur is not None:
            small = gaussian_blur(small, blur)
        if noise is not None:
            small = small + bcast(level.to(small), small) * noise.to(small)  # z_s, σ-space
        return {"channels": self.upsample(small, size), "aug": level.to(small)}

    def for_training(self, x0: Tensor, labels: Tensor | None, generator=None) -> Cond:
        B, _, H, W = x0.shape
        if self.source in ("masked", "uncrop"):
            masks = random_masks(B, (H, W), self.mask, generator)  # [B, 1, H, W]
            return {"channels": self.degrade(x0, masks)}
        if not self.aug_max:
            return {"channels": self.degrade(x0)}
        small = F.avg_pool2d(x0, self.factor)  # [B, C, h, w]
        level = torch.rand(B, generator=generator) * self.aug_max  # s ~ U[0, aug_max]
        blur = torch.rand(B, generator=generator) * self.aug_blur if self.aug_blur else None
        noise = torch.randn(small.shape, generator=generator)
        return self.augmented(small, (H, W), level, noise, blur)

    def from_images(self, images: Tensor, shape: tuple[int, ...], masks: Tensor | None = None,
                    aug_level: float = 0.0, noise: Tensor | None = None) -> Cond:  # fmt: skip
        """User images [B, C, h, w] in model space. lowres: full size `shape` is degraded,
        1/factor size is upsampled (plus `aug_level`·`noise` [B, C, h/f, w/f] when the model
        is augmented); gray: RGB is reduced to luma, 1 channel is taken as luma; masked/uncrop:
        full size with `masks` [B, 1, H, W]. Any other size is a UsageError."""
        c, h, w = shape
        if self.source == "gray":
            return {"channels": self._gray(images, shape)}
        if self.source in ("masked", "uncrop"):
            return {"channels": self._masked(images, masks, shape)}
        small = (h // self.factor, w // self.factor)
        if images.shape[1] != c or tuple(images.shape[-2:]) not in ((h, w), small):
            raise UsageError(
                f"conditioning images are {list(images.shape[1:])} but this model takes "
                f"[{c}, {h}, {w}] (degraded by {self.factor}×) or the low-resolution "
                f"[{c}, {small[0]}, {small[1]}]; resize the images"
            )
        low = F.avg_pool2d(images, self.factor) if images.shape[-1] == w else images
        if not self.aug_max:
            return {"channels": self.upsample(low, (h, w))}
        level = torch.full((len(images),), self.check_level(aug_level), device=images.device)
        return self.augmented(low, (h, w), level, noise if aug_level else None)

    def _gray(self, images: Tensor, shape: tuple[int, ...]) -> Tensor:
        c, h, w = shape
        if images.shape[1] not in (1, 3) or tuple(images.shape[-2:]) != (h, w):
            raise UsageError(
                f"conditioning images are {list(images.shape[1:])} but this colourisation model "
                f"takes RGB [3, {h}, {w}] or grayscale [1, {h}, {w}] images; resize the images"
            )
        return luminance(images) if images.shape[1] == 3 else images

    def _masked(self, images: Tensor, masks: Tensor | None, shape: tuple[int, ...]) -> Tensor:
        c, h, w = shape
        if tuple(images.shape[1:]) != (c, h, w):
            raise UsageError(
                f"conditioning images are {list(images.shape[1:])} but this inpainting model "
                f"takes [{c}, {h}, {w}]; pass images of the model's size and channels"
            )
        if masks is None:
            raise UsageError(
                "this model inpaints: pass `masks` with `images` ([n, 1, H, W], 1 = known pixel, "
                "0 = pixel to generate)"
            )
        masks = check_masks(masks, len(images), (h, w)).to(images)
        return self.degrade(images, masks.expand(len(images), 1, h, w))

    def paste(self, x: Tensor, cond: Cond) -> Tensor:
        """Samples x [B, C, H, W] with the known region of an inpainting condition pasted back
        exactly (Palette); other sources return x unchanged."""
        if self.source not in ("masked", "uncrop") or "channels" not in cond:
            return x
        return paste_back(x, cond["channels"].to(x.device))

    def build(self, request: ConditionRequest) -> tuple[Cond, dict[str, list]]:
        """The request's images [n, C, h, w] (and masks) for samples of request.image_shape."""
        if request.images is None:
            raise UsageError(
                "this model is conditioned on images: pass `images` (full size or low resolution)"
            )
        shape = tuple(request.image_shape)
        level = self.check_level(self.aug_level if request.aug_level is None
                                 else request.aug_level)  # fmt: skip
        noise = None
        if self.aug_max and level and request.aug_noise:  # sample i's noise from seed + i
            c, h, w = shape
            small = (c, h // self.factor, w // self.factor)
            noise = torch.stack([torch.randn(small, generator=torch.Generator().manual_seed(
                (request.seed + i) * 2**16 + AUG_STREAM)) for i in range(request.n)])  # fmt: skip
            noise = noise.to(request.images.device)
        cond = self.from_images(request.images, shape, request.masks, level, noise)
        return cond, {}


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


def as_batch(value, n: int, what: str) -> Tensor:
    """A tensor of images or masks [k, ...] (uint8 images become pixels in [-1, 1]) cycled to n."""
    from difflab.core.imageio import uint8_to_pixels

    if value.ndim != 4 or not len(value):
        raise UsageError(f"`{what}` is a tensor of shape {list(value.shape)}; pass [n, C, H, W]")
    if value.dtype == torch.uint8:
        value = uint8_to_pixels(value) if what == "images" else value.float() / 255.0
    return value.float()[torch.tensor(cycle(range(len(value)), n))]  # [n, ...]
