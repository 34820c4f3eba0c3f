"""Building blocks shared by the networks: noise embedding, normalisation, attention, zero-init."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.errors import UsageError


def positional_embedding(c_noise: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding [cos | sin] of a float noise label (Vaswani 2017 §3.5; ADM/EDM)."""
    half = dim // 2
    freqs = torch.exp(
        torch.arange(half, device=c_noise.device, dtype=torch.float32) * (-math.log(max_period) / half)
    )  # [half]
    args = c_noise.float()[:, None] * freqs[None]  # [B, half]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # [B, 2 * half]
    if dim % 2:
        emb = F.pad(emb, (0, 1))  # [B, dim]
    return emb


def check_c_noise(c_noise: Tensor, batch: int) -> Tensor:
    """Return c_noise as a float [B] tensor; a 0-dim tensor is broadcast over the batch."""
    if not isinstance(c_noise, Tensor):
        raise UsageError(f"c_noise must be a tensor of shape [B], got {type(c_noise).__name__}")
    if c_noise.ndim == 0:
        return c_noise.float().expand(batch)
    if c_noise.shape != (batch,):
        raise UsageError(f"c_noise must have shape [{batch}] (one value per sample), got {tuple(c_noise.shape)}")
    return c_noise


class NoiseEmbedding(nn.Module):
    """Noise-level embedding: positional features then Linear–SiLU–Linear (ADM `time_embed`)."""

    def __init__(self, freq_dim: int, emb_dim: int, max_period: float = 10000.0):
        super().__init__()
        self.freq_dim = freq_dim
        self.max_period = max_period
        self.fc1 = nn.Linear(freq_dim, emb_dim)
        self.fc2 = nn.Linear(emb_dim, emb_dim)

    def forward(self, c_noise: Tensor) -> Tensor:
        emb = positional_embedding(c_noise, self.freq_dim, self.max_period)  # [B, F]
        dtype = self.fc1.weight.dtype
        return self.fc2(F.silu(self.fc1(emb.to(dtype))))  # [B, E]


def num_groups(channels: int, max_groups: int = 32, min_group_channels: int = 4) -> int:
    """Largest group count ≤ `max_groups` dividing `channels` with ≥ `min_group_channels` per group."""
    g = max(1, min(max_groups, channels // min_group_channels))
    while channels % g:
        g -= 1
    return g


def group_norm(channels: int, eps: float = 1e-5, affine: bool = True) -> nn.GroupNorm:
    """GroupNorm (Wu & He 2018) with a valid group count for small widths (32 groups in ADM)."""
    return nn.GroupNorm(num_groups(channels), channels, eps=eps, affine=affine)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero all parameters of `module` so a residual branch starts as the identity (ADM, DiT)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def key_padding_mask(tokens_mask: Tensor, num_queries: int) -> Tensor:
    """Boolean SDPA mask [B, 1, 1, L + N] letting every query see all kept tokens and all pixels."""
    keep_pixels = tokens_mask.new_ones(tokens_mask.shape[0], num_queries)  # [B, N]
    return torch.cat([tokens_mask.bool(), keep_pixels], dim=1)[:, None, None, :]  # [B, 1, 1, L+N]


class AttentionBlock(nn.Module):
    """Multi-head self-attention over pixels, optionally also attending to conditioning tokens.

    ADM (Dhariwal & Nichol 2021) `AttentionBlock`; tokens enter as GLIDE does (Nichol et al. 2022):
    each block projects the tokens to extra keys/values that are prepended to the pixels' own, so
    self- and cross-attention are one `scaled_dot_product_attention` call. Works on channels-last
    tensors without copies: [B, C, H, W] in channels-last memory is [B, H·W, C] contiguous.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 4,
        head_channels: int = -1,
        token_dim: int = 0,
        skip_scale: float = 1.0,
    ):
        super().__init__()
        if head_channels > 0:
            if channels % head_channels:
                raise UsageError(
                    f"head_channels={head_channels} must divide the attention width {channels}"
                )
            num_heads = channels // head_channels
        if num_heads < 1 or channels % num_heads:
            raise UsageError(f"num_heads={num_heads} must divide the attention width {channels}")
        self.num_heads = num_heads
        self.skip_scale = skip_scale
        self.norm = group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.token_kv = nn.Linear(token_dim, 2 * channels) if token_dim else None
        self.proj = zero_init(nn.Linear(channels, channels))

    def forward(self, x: Tensor, tokens: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        B, C, H, W = x.shape
        heads = self.num_heads
        h = self.norm(x).permute(0, 2, 3, 1).reshape(B, H * W, C)  # [B, N, C] (a view if NHWC)
        qkv = self.qkv(h).view(B, H * W, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B, heads, N, d]
        if tokens is not None and self.token_kv is not None:
            L = tokens.shape[1]
            kv = self.token_kv(tokens).view(B, L, 2, heads, C // heads).permute(2, 0, 3, 1, 4)
            k = torch.cat([kv[0].to(k.dtype), k], dim=2)  # [B, heads, L + N, d]
            v = torch.cat([kv[1].to(v.dtype), v], dim=2)  # [B, heads, L + N, d]
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, heads, N, d]
        h = self.proj(h.transpose(1, 2).reshape(B, H * W, C))  # [B, N, C]
        h = h.view(B, H, W, C).permute(0, 3, 1, 2)  # [B, C, H, W] (channels-last view)
        if self.skip_scale == 1.0:
            return x + h
        return torch.add(x, h).mul_(self.skip_scale)
