"""Spherical paths: slerp, and unCLIP's text diffs of CLIP embeddings (Ramesh et al. 2022 §3).

    path = slerp(z_a, z_b, torch.linspace(0, 1, 8))        # [8, D] unit vectors for unit ends
    path = text_diff(z_i, z_t0, z_t, torch.linspace(0, 0.5, 6))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.core.errors import UsageError


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """sin((1−t)θ)/sin θ·a + sin(tθ)/sin θ·b, θ the angle between a and b (Shoemake 1985; the
    noise interpolation of Song et al. 2021a, §5.3; unCLIP's embedding interpolation z_θ,
    Ramesh et al. 2022 §3.2); lerp when a ∥ b. a, b [*S]; t [T] → [T, *S]."""
    fa, fb = a.flatten().double(), b.flatten().double()
    cos = (fa @ fb / (fa.norm() * fb.norm()).clamp(min=1e-12)).clamp(-1, 1)
    theta = torch.arccos(cos)
    t = t.double().reshape(-1, *([1] * a.ndim))  # [T, 1, ...]
    if theta.abs() < 1e-6:
        out = (1 - t) * a.double() + t * b.double()
    else:
        out = torch.sin((1 - t) * theta) * a.double() + torch.sin(t * theta) * b.double()
        out = out / torch.sin(theta)
    return out.to(a.dtype)


def unit(z: Tensor) -> Tensor:
    """z / ‖z‖ along the last dimension (CLIP embeddings live on the unit sphere)."""
    return F.normalize(z, dim=-1)


def text_diff_direction(z_t0: Tensor, z_t: Tensor) -> Tensor:
    """z_d = norm(z_t − z_t0) [D]: the normalised difference of the target caption's text
    embedding z_t and the current caption's z_t0 (Ramesh et al. 2022 §3.3, "text diffs")."""
    d = z_t.float() - z_t0.float()
    if d.norm() < 1e-8:
        raise UsageError("the two texts embed to the same vector; give different `source` and "
                         "`target` texts")  # fmt: skip
    return unit(d)


def text_diff(z_i: Tensor, z_t0: Tensor, z_t: Tensor, strengths: Tensor) -> Tensor:
    """The image embedding z_i [D] rotated toward z_d = norm(z_t − z_t0) by slerp(z_i, z_d, θ)
    for each θ in `strengths` [T] (the paper rotates by up to θ = 0.5) → unit vectors [T, D]."""
    return unit(slerp(unit(z_i.float()), text_diff_direction(z_t0, z_t), strengths))
