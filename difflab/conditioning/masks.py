"""Inpainting masks [1, H, W] with 1 = known (kept) pixel and 0 = pixel to generate, as
RePaint's m (Lugmayr et al. 2022, Eq. 8: x = m ⊙ x_known + (1 − m) ⊙ x_unknown).

The one implementation of mask generators, mask PNG reading (white 255 = keep, black 0 =
generate) and mask checks, shared by the trained inpainting/uncropping conditioners (GLIDE §4
inpainting model; Palette §3 inpainting and uncropping) and by sampling-time editing (RePaint,
`inference.masks`). Random masks take a torch.Generator so training batches are reproducible
and resumable; `seeded_masks` draws mask i from seed + i so a mask does not depend on its batch.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from difflab.conditioning.base import cycle
from difflab.core.errors import UsageError

SIDES = ("left", "right", "top", "bottom")


def box_mask(size: tuple[int, int], top: int, left: int, height: int, width: int) -> Tensor:
    """[1, H, W]: ones with a zero (unknown) box of `height`×`width` at (`top`, `left`)."""
    mask = torch.ones(1, *size)
    mask[:, top : top + height, left : left + width] = 0.0
    return mask


def centre_box_mask(size: tuple[int, int], fraction: float = 0.5) -> Tensor:
    """[1, H, W]: the centred box covering `fraction` of each side unknown (Palette's centre mask)."""
    h, w = size
    bh, bw = max(1, round(h * fraction)), max(1, round(w * fraction))
    return box_mask(size, (h - bh) // 2, (w - bw) // 2, bh, bw)


def half_mask(size: tuple[int, int], side: str) -> Tensor:
    """[1, H, W]: the `side` half known, the other half unknown (Palette uncropping)."""
    if side not in SIDES:
        raise UsageError(f"mask side {side!r} is unknown; choose one of: {', '.join(SIDES)}")
    h, w = size
    mask = torch.zeros(1, h, w)
    index = {"left": (slice(None), slice(0, w // 2)), "right": (slice(None), slice(w // 2, w)),
             "top": (slice(0, h // 2), slice(None)), "bottom": (slice(h // 2, h), slice(None))}
    mask[(slice(None), *index[side])] = 1.0  # fmt: skip
    return mask


def random_box_mask(size: tuple[int, int], generator: torch.Generator) -> Tensor:
    """[1, H, W]: an unknown box with sides uniform in [¼, ¾] of the image, anywhere inside."""
    h, w = size
    bh = int(torch.randint(max(1, h // 4), max(2, 3 * h // 4 + 1), (1,), generator=generator))
    bw = int(torch.randint(max(1, w // 4), max(2, 3 * w // 4 + 1), (1,), generator=generator))
    top = int(torch.randint(0, h - bh + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - bw + 1, (1,), generator=generator))
    return box_mask(size, top, left, bh, bw)


def free_form_mask(size: tuple[int, int], generator: torch.Generator, strokes: int = 3) -> Tensor:
    """[1, H, W]: thick random-walk brush strokes unknown (DeepFill v2's free-form masks, as
    Palette trains with), each of 2–4 segments, width ≈ H/8–H/4."""
    h, w = size
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")  # [H, W]
    unknown = torch.zeros(h, w, dtype=torch.bool)

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=generator))

    for _ in range(strokes):
        y, x = uniform(0, h), uniform(0, w)
        radius = uniform(h / 16, h / 8) + 0.5
        for _ in range(int(torch.randint(2, 5, (1,), generator=generator))):
            angle, length = uniform(0, 2 * math.pi), uniform(h / 8, h / 3)
            y1 = min(max(y + length * math.sin(angle), 0.0), float(h))
            x1 = min(max(x + length * math.cos(angle), 0.0), float(w))
            # distance of each pixel centre to the segment (y, x)–(y1, x1)
            dy, dx = y1 - y, x1 - x
            t = ((ys - y) * dy + (xs - x) * dx) / max(dy * dy + dx * dx, 1e-9)
            t = t.clamp(0, 1)
            dist = ((ys - y - t * dy) ** 2 + (xs - x - t * dx) ** 2).sqrt()  # [H, W]
            unknown |= dist <= radius
            y, x = y1, x1
    return (~unknown).float()[None]  # [1, H, W]


MASK_KINDS = ("centre", "half", "box", "free_form", "mixed", "uncrop")


def random_mask(size: tuple[int, int], kind: str, generator: torch.Generator) -> Tensor:
    """[1, H, W] of `kind`: "centre" (`centre_box_mask`), "half" (the left half kept), "box",
    "free_form", "mixed" (box or free-form, evenly), "uncrop" (a random side kept)."""
    if kind == "mixed":
        kind = "box" if float(torch.rand((), generator=generator)) < 0.5 else "free_form"
    if kind == "centre":
        return centre_box_mask(size)
    if kind == "half":
        return half_mask(size, "left")
    if kind == "box":
        return random_box_mask(size, generator)
    if kind == "free_form":
        return free_form_mask(size, generator)
    if kind == "uncrop":
        return half_mask(size, SIDES[int(torch.randint(0, 4, (1,), generator=generator))])
    raise UsageError(f"mask kind {kind!r} is unknown; choose one of: {', '.join(MASK_KINDS)}")


def random_masks(n: int, size: tuple[int, int], kind: str, generator: torch.Generator) -> Tensor:
    """[n, 1, H, W]: n masks of `kind` drawn in order from `generator`."""
    return torch.stack([random_mask(size, kind, generator) for _ in range(n)])


def seeded_masks(n: int, size: tuple[int, int], kind: str, seed: int = 0) -> Tensor:
    """[n, 1, H, W]: mask i of `kind` drawn from a generator seeded by seed + i."""
    return torch.stack([random_mask(size, kind, torch.Generator().manual_seed(seed + i))
                        for i in range(n)])  # fmt: skip


def read_masks(paths: list[str], n: int, name: str = "masks") -> Tensor:
    """Mask PNGs (white = known, black = to generate) cycled over n samples, [n, 1, H, W] in
    {0, 1}; a gray level other than 0 and 255 makes `check_masks` refuse them. `name` is the
    parameter the paths came in, for messages."""
    from difflab.core.imageio import load_image

    for p in paths:
        if not Path(p).is_file():
            raise UsageError(f"mask file {p} given in `{name}` does not exist; pass an existing PNG")
    loaded = [load_image(Path(p), 1, None) for p in paths]  # [1, H, W] uint8
    if len({tuple(m.shape) for m in loaded}) > 1:
        raise UsageError(f"the `{name}` files differ in size; pass masks of one size")
    return torch.stack(cycle(loaded, n)).float() / 255.0  # [n, 1, H, W]


def check_masks(masks: Tensor, n: int, size: tuple[int, int], name: str = "masks") -> Tensor:
    """`masks` [H, W], [k, H, W] or [k, 1, H, W] (k = 1 or n) with values 0/1 as float
    [k, 1, H, W]; a wrong size or a non-binary value is a UsageError naming parameter `name`."""
    h, w = size
    plural = name.endswith("s")
    m = masks[None, None] if masks.ndim == 2 else masks[:, None] if masks.ndim == 3 else masks
    if m.ndim != 4 or m.shape[1] != 1 or tuple(m.shape[-2:]) != (h, w):
        raise UsageError(
            f"`{name}` {'are' if plural else 'has shape'} {list(masks.shape)} but the images are "
            f"{h}×{w}: pass one channel per mask, [{h}, {w}] or [n, 1, {h}, {w}], 1 = known "
            "pixel, 0 = pixel to generate"
        )
    if len(m) not in (1, n):
        raise UsageError(f"{len(m)} `{name}` given for {n} images; pass one mask or one each")
    if not bool(((m == 0) | (m == 1)).all()):
        raise UsageError(
            f"`{name}` {'are' if plural else 'is'} not binary: pass masks whose pixels are 0 "
            "(generate) or 1 (keep); for PNG masks use black (0) and white (255) only"
        )
    return m.float()
