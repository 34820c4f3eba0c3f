"""Conditioning slots and their null value (the contract shared by conditioners and guidance).

A condition is a dict of batch-first tensors keyed by the U-Net's slots: "vector" [B, Dv],
"tokens" [B, L, Dt] with "tokens_mask" [B, L] (True = keep), "channels" [B, Cc, H, W].
The null ("unconditional") value of every slot is zeros, with an all-False token mask; a
model trained with condition dropout learns it as ∅ (Ho & Salimans 2022, §3.2).
"""

from __future__ import annotations

import torch
from torch import Tensor

Cond = dict[str, Tensor]


def null_cond(cond: Cond) -> Cond:
    """The unconditional counterpart of `cond`: every slot zeroed, every token masked out."""
    return {
        k: torch.zeros_like(v) if k != "tokens_mask" else torch.zeros_like(v, dtype=torch.bool)
        for k, v in cond.items()
    }
