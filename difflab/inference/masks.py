"""Masks for sampling-time editing (RePaint): 1 = keep (known pixel), 0 = fill, as everywhere.

The generators, PNG reading and checks are `conditioning.masks`'; this module adds what editing
needs on top: one `mask` argument that may be a tensor, a PNG path or a generator kind, and the
pooling of a pixel mask to a latent codec's grid.
"""

from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F
from torch import Tensor

from difflab.conditioning.masks import MASK_KINDS, check_masks, read_masks, seeded_masks
from difflab.core.errors import UsageError


def resolve_mask(
    mask: Tensor | str | Path, n: int, image_shape: tuple[int, ...], seed: int = 0
) -> Tensor:
    """A mask as float [n, 1, H, W] of 0/1 from a tensor, a PNG path (white = keep) or a
    `MASK_KINDS` name (mask i drawn from seed + i); a wrong size or a value other than 0 and 1
    is a UsageError."""
    _, h, w = image_shape
    if isinstance(mask, str) and mask in MASK_KINDS:
        return seeded_masks(n, (h, w), mask, seed)
    if isinstance(mask, (str, Path)):
        if not Path(mask).is_file():
            raise UsageError(
                f"mask file {mask} given in `mask` does not exist; pass an existing PNG or a "
                f"mask kind ({', '.join(MASK_KINDS)})"
            )
        mask = read_masks([str(mask)], 1, "mask")[0]  # [1, H, W]
    if not isinstance(mask, Tensor):
        raise UsageError(
            f"`mask` must be a tensor, a PNG file or one of {', '.join(MASK_KINDS)}; "
            f"got {type(mask).__name__}"
        )
    m = check_masks(mask.detach().float().cpu(), n, (h, w), "mask")  # [1 or n, 1, H, W]
    return m.expand(n, 1, h, w).clone()


def latent_mask(mask: Tensor, shape: tuple[int, ...]) -> Tensor:
    """A pixel mask [n, 1, H, W] at the model's latent size [n, 1, h, w]: a latent cell is kept
    only where every pixel it covers is kept (min-pooling; identity at equal sizes)."""
    if tuple(mask.shape[2:]) == tuple(shape[1:]):
        return mask
    return -F.adaptive_max_pool2d(-mask, tuple(shape[1:]))
