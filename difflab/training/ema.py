"""Exponential moving average of weights (Ho et al. 2020 §4 use decay 0.9999)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """θ_ema ← θ_ema + (1 − β_k)(θ − θ_ema), β_k = min(decay, (1 + k)/(10 + k)) warm-up."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        beta = min(self.decay, (1 + step) / (10 + step))
        ema = list(self.model.parameters())
        live = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema, live, 1 - beta)
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)
