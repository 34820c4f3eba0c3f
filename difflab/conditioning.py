"""Conditioning slots and their null value (the contract shared by conditioners and guidance).

A condition is a dict of batch-first tensors keyed by the U-Net's slots: "vector" [B, Dv],
"tokens" [B, L, Dt] with "tokens_mask" [B, L] (True = keep), "channels" [B, Cc, H, W].
The null ("unconditional") value of every slot is zeros, with an all-False token mask; a
model trained with condition dropout learns it as ∅ (Ho & Salimans 2022, §3.2).
A condition may also carry "labels" [B] int64 (class indices): the net never sees them
(`net_cond` drops them), classifier guidance and judged accuracy read them.
"""

from __future__ import annotations

import torch
from torch import Tensor

Cond = dict[str, Tensor]
NET_SLOTS = ("vector", "tokens", "tokens_mask", "channels")


def net_cond(cond: Cond | None) -> Cond:
    """The slots a network takes (drops "labels" and other side information)."""
    return {k: v for k, v in (cond or {}).items() if k in NET_SLOTS}


def null_cond(cond: Cond) -> Cond:
    """The unconditional counterpart of `cond`: every net slot zeroed, every token masked out."""
    out = dict(cond)
    for k in NET_SLOTS:
        if k in cond:
            out[k] = torch.zeros_like(cond[k])  # tokens_mask: all False
    return out
