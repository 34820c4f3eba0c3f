"""SimCLR's image augmentations in plain torch (Chen et al. 2020, §3 and Appendix A).

Every function maps a batch in model space [-1, 1] to an augmented batch of the same shape,
drawing its randomness from the given generator, so a run is repeatable from its seed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.core.types import bcast


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)  # [n]


def resized_crop_flip(
    x: Tensor, g: torch.Generator, scale: tuple[float, float] = (0.25, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Tensor:  # fmt: skip
    """Random crop of `scale` × the area at aspect `ratio`, resized back, flipped with p = ½
    (SimCLR's "random crop and resize" with horizontal flip), as one bilinear affine resample."""
    n = len(x)
    area = _uniform(n, *scale, g)  # [N] fraction of the image area
    log_r = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), g).exp()  # [N] width / height
    w = (area * log_r).sqrt().clamp(max=1.0)  # [N] crop width as a fraction
    h = (area / log_r).sqrt().clamp(max=1.0)  # [N] crop height as a fraction
    cx = (1 - w) * (2 * torch.rand(n, generator=g) - 1)  # [N] centre in [-1+w, 1-w]
    cy = (1 - h) * (2 * torch.rand(n, generator=g) - 1)  # [N]
    flip = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)  # [N]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)  # [N, H, W, 2]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def colour_jitter(
    x: Tensor, g: torch.Generator, strength: float = 0.5, p: float = 0.8, p_gray: float = 0.2
) -> Tensor:
    """Brightness, contrast and (colour images) saturation jitter with probability `p`, then
    grayscale with probability `p_gray` (SimCLR's colour distortion, Appendix A, strength s)."""
    n = len(x)
    on = bcast((torch.rand(n, generator=g) < p).float(), x)  # [N, 1, 1, 1]
    bright = bcast(_uniform(n, -0.8 * strength, 0.8 * strength, g), x)  # shift of [-1, 1] pixels
    contrast = bcast(_uniform(n, 1 - 0.8 * strength, 1 + 0.8 * strength, g), x)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # [N, 1, 1, 1]
    y = (x - mean) * contrast + mean + bright  # [N, C, H, W]
    if x.shape[1] == 3:
        gray = y.mean(dim=1, keepdim=True)  # [N, 1, H, W]
        sat = bcast(_uniform(n, 1 - 0.8 * strength, 1 + 0.8 * strength, g), x)
        y = gray + (y - gray) * sat
        to_gray = bcast((torch.rand(n, generator=g) < p_gray).float(), x)
        y = torch.lerp(y, y.mean(dim=1, keepdim=True).expand_as(y), to_gray)
    return torch.lerp(x, y, on).clamp(-1.0, 1.0)


def blur_noise(x: Tensor, g: torch.Generator, p: float = 0.5, noise: float = 0.05) -> Tensor:
    """Gaussian blur σ ∈ [0.1, 1] px with probability `p` (SimCLR's blur, scaled to small images),
    then additive N(0, noise²) pixel noise."""
    n, c, h, w = x.shape
    sigma = _uniform(n, 0.1, 1.0, g)  # [N]
    taps = torch.arange(-2, 3, dtype=x.dtype)  # [5]
    k = torch.exp(-(taps[None] ** 2) / (2 * sigma[:, None] ** 2))  # [N, 5]
    k = (k / k.sum(1, keepdim=True)).to(x.device)
    k = k.repeat_interleave(c, 0)  # [N·C, 5] one kernel per image and channel
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (2, 2, 0, 0), mode="replicate"), k[:, None, None, :], groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, 2, 2), mode="replicate"), k[:, None, :, None], groups=n * c)
    on = bcast((torch.rand(n, generator=g) < p).float(), x)  # [N, 1, 1, 1]
    y = torch.lerp(x, y.reshape(n, c, h, w), on)
    return (y + noise * torch.randn(x.shape, generator=g).to(x)).clamp(-1.0, 1.0)


def simclr_view(x: Tensor, g: torch.Generator) -> Tensor:
    """One random view of images [N, C, H, W]: crop+flip → colour jitter → blur and noise."""
    return blur_noise(colour_jitter(resized_crop_flip(x, g), g), g)
