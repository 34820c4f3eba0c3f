"""Shared types of the σ-space core: Cond (the network's condition slots) and its null."""

from __future__ import annotations

import torch
from torch import Tensor

Cond = dict[str, Tensor]


# "aug" [B]: the noise-conditioning augmentation level of an image condition (CDM §3.2)
NET_SLOTS = ("vector", "tokens", "tokens_mask", "channels", "aug")
NULL_PREFIX = "null."  # cond["null.vector"] overrides the null of slot "vector" (null-text)


def net_cond(cond: Cond | None) -> Cond:
    """The slots a network takes (drops "labels" and other side information)."""
    return {k: v for k, v in (cond or {}).items() if k in NET_SLOTS}


def null_cond(cond: Cond) -> Cond:
    """The unconditional counterpart of `cond`: every net slot zeroed, every token masked out,
    unless cond carries its own null for a slot as cond["null.<slot>"] (an optimised null
    embedding, Mokady et al. 2023)."""
    out = dict(cond)
    for k in NET_SLOTS:
        if NULL_PREFIX + k in cond:
            out[k] = cond[NULL_PREFIX + k]
        elif k in cond:
            out[k] = torch.zeros_like(cond[k])  # tokens_mask: all False
    return out


def bcast(c: Tensor, x: Tensor) -> Tensor:
    """[B] → [B, 1, ..., 1] to broadcast against x."""
    return c.reshape(-1, *([1] * (x.ndim - 1)))
