"""Inpainting masks: 1 = keep (known pixel), 0 = fill (unknown), as RePaint's m (Lugmayr et al.
2022, Eq. 8: x = m ⊙ x_known + (1 − m) ⊙ x_unknown).

A mask is a float tensor [n, 1, H, W] of exact 0s and 1s at the image's size, broadcast over
channels. PNG masks follow the same convention: white (255) = keep, black (0) = fill. The
generators draw per-sample masks from seed + i, so mask i does not depend on the batch.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.core.errors import UsageError

MASK_KINDS = ("centre", "box", "half", "strokes")


def centre_mask(h: int, w: int) -> Tensor:
    """Keep everything but the centre box of half the side: [1, H, W]."""
    m = torch.ones(1, h, w)
    m[:, h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2] = 0
    return m


def half_mask(h: int, w: int) -> Tensor:
    """Keep the left half, fill the right half: [1, H, W]."""
    m = torch.ones(1, h, w)
    m[:, :, w // 2 :] = 0
    return m


def box_mask(h: int, w: int, g: torch.Generator) -> Tensor:
    """Fill one random box with sides in [H/4, H/2] × [W/4, W/2]: [1, H, W]."""
    bh = int(torch.randint(max(1, h // 4), max(2, h // 2 + 1), (1,), generator=g))
    bw = int(torch.randint(max(1, w // 4), max(2, w // 2 + 1), (1,), generator=g))
    top = int(torch.randint(0, h - bh + 1, (1,), generator=g))
    left = int(torch.randint(0, w - bw + 1, (1,), generator=g))
    m = torch.ones(1, h, w)
    m[:, top : top + bh, left : left + bw] = 0
    return m


def strokes_mask(h: int, w: int, g: torch.Generator, strokes: int = 4) -> Tensor:
    """Fill free-form brush strokes: random walks of thick line segments (the free-form masks of
    Yu et al. 2019, DeepFill v2, §3.3, used by RePaint's "thick"/"thin" masks): [1, H, W]."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    fill = torch.zeros(h, w, dtype=torch.bool)
    width = max(1.0, min(h, w) / 10)
    for _ in range(strokes):
        y, x = float(torch.rand(1, generator=g)) * h, float(torch.rand(1, generator=g)) * w
        for _ in range(int(torch.randint(2, 5, (1,), generator=g))):
            angle = float(torch.rand(1, generator=g)) * 2 * math.pi
            length = (0.15 + 0.25 * float(torch.rand(1, generator=g))) * max(h, w)
            y2 = min(max(y + length * math.sin(angle), 0.0), h - 1.0)
            x2 = min(max(x + length * math.cos(angle), 0.0), w - 1.0)
            fill |= _segment_distance(ys, xs, (y, x), (y2, x2)) <= width / 2
            y, x = y2, x2
    return (~fill).float()[None]


def _segment_distance(ys: Tensor, xs: Tensor, a: tuple, b: tuple) -> Tensor:
    """Distance of each pixel centre to the segment a–b: [H, W]."""
    (ay, ax), (by, bx) = a, b
    dy, dx = by - ay, bx - ax
    t = (((ys - ay) * dy + (xs - ax) * dx) / max(dy * dy + dx * dx, 1e-9)).clamp(0, 1)
    return ((ys - ay - t * dy) ** 2 + (xs - ax - t * dx) ** 2).sqrt()


def make_mask(kind: str, n: int, h: int, w: int, seed: int = 0) -> Tensor:
    """n masks [n, 1, H, W] of a generator in MASK_KINDS; mask i is drawn from seed + i."""
    if kind not in MASK_KINDS:
        raise UsageError(f"mask kind {kind!r} is unknown; choose one of: {', '.join(MASK_KINDS)}")
    masks = []
    for i in range(n):
        g = torch.Generator().manual_seed(seed + i)
        if kind == "centre":
            masks.append(centre_mask(h, w))
        elif kind == "half":
            masks.append(half_mask(h, w))
        elif kind == "box":
            masks.append(box_mask(h, w, g))
        else:
            masks.append(strokes_mask(h, w, g))
    return torch.stack(masks)


def read_mask(path: str | Path) -> Tensor:
    """A PNG mask as [1, H, W] (white 255 = keep, black 0 = fill; other grey levels are refused)."""
    from difflab.core.imageio import load_image

    if not Path(path).is_file():
        raise UsageError(f"mask file {path} given in `mask` does not exist; pass a PNG or a kind")
    m = load_image(Path(path), 1, None)  # uint8 [1, H, W]
    if not ((m == 0) | (m == 255)).all():
        raise UsageError(
            f"mask {path} is not binary (grey levels other than 0 and 255); save it with black "
            "(fill) and white (keep) only"
        )
    return (m == 255).float()


def resolve_mask(
    mask: Tensor | str | Path, n: int, image_shape: tuple[int, ...], seed: int = 0
) -> Tensor:
    """A mask as float [n, 1, H, W] of 0/1 from a tensor, a PNG path or a MASK_KINDS name;
    a mask of the wrong size or with values other than 0 and 1 is a UsageError."""
    _, h, w = image_shape
    if isinstance(mask, str) and mask in MASK_KINDS:
        return make_mask(mask, n, h, w, seed)
    if isinstance(mask, (str, Path)):
        mask = read_mask(mask)
    if not isinstance(mask, Tensor):
        raise UsageError(
            f"`mask` must be a tensor, a PNG file or one of {', '.join(MASK_KINDS)}; "
            f"got {type(mask).__name__}"
        )
    m = mask.detach().float().cpu()
    m = m.reshape(1, 1, *m.shape) if m.ndim == 2 else m.reshape(1, *m.shape) if m.ndim == 3 else m
    if m.ndim != 4 or m.shape[1] != 1 or tuple(m.shape[2:]) != (h, w) or len(m) not in (1, n):
        raise UsageError(
            f"`mask` has shape {list(mask.shape)} but the images are {h}×{w}; pass a mask "
            f"[{h}, {w}], [1, {h}, {w}] or [{n}, 1, {h}, {w}] (or a {w}×{h} PNG)"
        )
    if not ((m == 0) | (m == 1)).all():
        raise UsageError("`mask` is not binary; pass 1 (keep) and 0 (fill) only")
    return m.expand(n, 1, h, w).clone()


def latent_mask(mask: Tensor, shape: tuple[int, ...]) -> Tensor:
    """A pixel mask [n, 1, H, W] at the model's latent size [n, 1, h, w]: a latent cell is kept
    only where every pixel it covers is kept (min-pooling; identity at equal sizes)."""
    if tuple(mask.shape[2:]) == tuple(shape[1:]):
        return mask
    return -F.adaptive_max_pool2d(-mask, tuple(shape[1:]))
