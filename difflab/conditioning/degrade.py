"""Degradations that make a paired condition from a clean image (SR3, Palette, CDM, GLIDE).

Pure tensor functions on model-space images [B, C, H, W] in [-1, 1]; the image conditioner
chooses among them by its `source`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights of R, G, B


def upsample(small: Tensor, size: tuple[int, int]) -> Tensor:
    """[B, C, h, w] → [B, C, H, W], bilinear (half-pixel centres)."""
    return F.interpolate(small, size=size, mode="bilinear", align_corners=False)


def luminance(x: Tensor) -> Tensor:
    """RGB [B, 3, H, W] → luma Y [B, 1, H, W] (BT.601; affine, so [-1, 1] stays [-1, 1])."""
    w = x.new_tensor(LUMA).reshape(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)  # [B, 1, H, W]


def gaussian_blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Blur each sample of x [B, C, H, W] with its own Gaussian std sigma [B] in pixels
    (σ = 0: unchanged); reflect padding. CDM §3.2's blur augmentation of the low-res input."""
    B, C, H, W = x.shape
    radius = min(max(1, math.ceil(2 * float(sigma.max()))), (min(H, W) - 1))
    if float(sigma.max()) <= 0 or radius < 1:
        return x
    r = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)  # [K]
    s = sigma.to(x).clamp_min(1e-6)[:, None]  # [B, 1]
    k = torch.exp(-0.5 * (r[None] / s) ** 2)  # [B, K]; σ → 0 gives a delta
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(C, 0)  # [B·C, K]
    h = F.pad(x.reshape(1, B * C, H, W), (radius, radius, radius, radius), mode="reflect")
    h = F.conv2d(h, k[:, None, None, :], groups=B * C)  # along W
    h = F.conv2d(h, k[:, None, :, None], groups=B * C)  # along H
    return h.reshape(B, C, H, W)


def masked_condition(x: Tensor, masks: Tensor) -> Tensor:
    """GLIDE's inpainting condition (Nichol et al. 2021, §4): the known pixels x·m and the mask
    m as extra channels, [B, C + 1, H, W]; m [B, 1, H, W] is 1 where known."""
    return torch.cat([x * masks, masks], dim=1)


def paste_back(x: Tensor, channels: Tensor) -> Tensor:
    """Palette's output: the known region of the masked condition `channels` [B, C + 1, H, W]
    copied exactly over the sample x [B, C, H, W]; the generated region kept."""
    C = x.shape[1]
    known, masks = channels[:, :C].to(x), channels[:, C:].to(x)  # [B, C, H, W], [B, 1, H, W]
    return torch.where(masks.bool(), known, x)
