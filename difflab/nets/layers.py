"""Building blocks shared by the networks: noise embedding, normalisation, attention, zero-init."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.core.errors import UsageError


def positional_embedding(c_noise: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding [cos | sin] of a float noise label (Vaswani 2017 §3.5; ADM/EDM)."""
    half = dim // 2
    freqs = torch.exp(
        torch.arange(half, device=c_noise.device, dtype=torch.float32)
        * (-math.log(max_period) / half)
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
        raise UsageError(
            f"c_noise must have shape [{batch}] (one value per sample), got {tuple(c_noise.shape)}"
        )
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


def num_groups(channels: int, max_groups: int = 32, min_group_channels: int = 2) -> int:
    """Largest group count ≤ `max_groups` dividing `channels` with ≥ `min_group_channels` each."""
    g = max(1, min(max_groups, channels // min_group_channels))
    while channels % g:
        g -= 1
    return g


def _is_channels_last(x: Tensor) -> bool:
    return x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last)


def _gn_forward(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    scale: Tensor | None,
    shift: Tensor | None,
    groups: int,
    eps: float,
    reuse: bool = False,
) -> tuple[Tensor, ...]:
    """GroupNorm(x)·γ(1+scale) + β(1+scale) + shift for channels-last x, with backward state."""
    B, C, H, W = x.shape
    N, cg, acc = H * W, C // groups, torch.promote_types(x.dtype, torch.float32)
    d, d3 = x, x.permute(0, 2, 3, 1).view(B, N, C)  # [B, N, C] view of channels-last memory
    if x.dtype != acc:
        # Low precision: centre by the approximate group mean so E[d²] − E[d]² does not cancel
        mu = d3.sum(1).view(B, groups, cg).sum(-1, keepdim=True, dtype=acc) / (N * cg)
        d = x - mu.to(x.dtype).expand(B, groups, cg).reshape(B, C, 1, 1)  # [B, C, H, W]
        d3 = d.permute(0, 2, 3, 1).view(B, N, C)
    sums = torch.stack([d3.sum(1), (d3 * d3).sum(1)], dim=-1)  # [B, C, 2] Σd, Σd² per channel
    mean, msq = (sums.view(B, groups, cg, 2).sum(2, dtype=acc) / (N * cg)).unbind(-1)  # [B, G]
    rstd = (msq - mean * mean).clamp_(min=0.0).add_(eps).rsqrt_()[:, :, None]  # [B, G, 1]
    mean = mean[:, :, None]  # [B, G, 1]
    # Per-(sample, channel) affine a·x̂ + b, a = γ(1+scale), b = β(1+scale) + shift
    a, b = weight.to(acc).view(1, groups, cg), bias.to(acc).view(1, groups, cg)
    if scale is not None:
        scale = scale.to(acc).view(B, groups, cg) + 1
        a, b = a * scale, torch.addcmul(shift.to(acc).view(B, groups, cg), b, scale)
    coef = a * rstd  # [B, G, Cg]
    cs = torch.stack([coef, torch.addcmul(b, mean, coef, value=-1)]).to(x.dtype)  # [2, B, G, Cg]
    cs = cs.view(2, B, C, 1, 1)
    out = d if reuse and d is not x else None  # write y over the centred copy
    return torch.addcmul(cs[1], d, cs[0], out=out), d, mean, rstd, a, scale  # y channels-last


class _AdaGroupNorm(torch.autograd.Function):
    """AdaGN for channels-last x with a hand-written backward (Wu & He 2018; ADM §3).

    Statistics are per-channel sums over pixels ([B, H·W, C] is a view of channels-last memory)
    reduced per group in fp32. Low-precision x is first centred by its approximate mean, so
    E[d²] − E[d]² does not cancel and the bf16 affine pass and backward stay accurate.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, scale, shift, groups: int, eps: float) -> Tensor:
        y, d, mean, rstd, a, scale1 = _gn_forward(x, weight, bias, scale, shift, groups, eps)
        ctx.save_for_backward(d, weight, bias, mean, rstd, a, scale1)
        ctx.groups = groups
        ctx.dtypes = (scale.dtype, shift.dtype) if scale is not None else None
        return y

    @staticmethod
    def backward(ctx, gy: Tensor) -> tuple[Tensor | None, ...]:
        d, weight, bias, mean, rstd, a, scale1 = ctx.saved_tensors  # mean, rstd: [B, G, 1]
        B, C, H, W = d.shape
        N, G = H * W, ctx.groups
        cg, acc = C // G, mean.dtype
        gy = gy.to(d.dtype).contiguous(memory_format=torch.channels_last)
        gy3, d3 = gy.permute(0, 2, 3, 1).view(B, N, C), d.permute(0, 2, 3, 1).view(B, N, C)
        sums = torch.stack([gy3.sum(1), (gy3 * d3).sum(1)]).to(acc).view(2, B, G, cg)
        g1, gd = sums.unbind(0)  # Σ gy, Σ gy·d   [B, G, Cg]
        gxh = torch.addcmul(gd, mean, g1, value=-1).mul_(rstd)  # Σ gy·x̂   [B, G, Cg]
        # gx = r·(gx̂ − E_g[gx̂] − x̂·E_g[gx̂·x̂]) with gx̂ = gy·a and x̂ = (d − mean)·r
        m1, m2 = (
            torch.stack(torch.broadcast_tensors(a * g1, a * gxh)).sum(-1, keepdim=True) / (N * cg)
        ).unbind(0)
        q = -rstd * rstd * m2  # coefficient of d   [B, G, 1]
        r = rstd * (rstd * mean * m2 - m1)  # constant   [B, G, 1]
        pqr = torch.stack(torch.broadcast_tensors(rstd * a, q, r)).to(d.dtype).view(3, B, C, 1, 1)
        gx = torch.addcmul(pqr[2], d, pqr[1]).addcmul_(gy, pqr[0])  # [B, C, H, W]
        # Parameters: y = x̂·γ(1+s) + β(1+s) + shift
        gxh, g1 = gxh.view(B, C), g1.view(B, C)
        gw = gb = gs = gsh = None
        if scale1 is None:
            gw, gb = gxh.sum(0), g1.sum(0)
        else:
            s1 = scale1.view(B, C)
            gw, gb = (gxh * s1).sum(0), (g1 * s1).sum(0)
            gs = (gxh * weight.to(acc) + g1 * bias.to(acc)).to(ctx.dtypes[0])
            gsh = g1.to(ctx.dtypes[1])
        return gx, gw.to(weight.dtype), gb.to(bias.dtype), gs, gsh, None, None


# Below these pixel counts PyTorch's kernel beats the fused path (fewer small ops; measured, 2 CPU
# threads): full precision up to 8×8, low precision only for tiny maps
_FUSED_MIN_PIXELS = {torch.float32: 65, torch.float64: 65}


def ada_group_norm(
    x: Tensor,
    norm: nn.GroupNorm,
    scale: Tensor | None = None,
    shift: Tensor | None = None,
) -> Tensor:
    """AdaGN: GroupNorm(x)·(1 + scale) + shift (ADM §3; Wu & He 2018); scale, shift [B, C].

    Channels-last inputs take a fused path (fp32 statistics, one affine pass, hand-written
    backward); PyTorch's own channels-last GroupNorm kernel is several times slower on CPU,
    worst in bf16. Other layouts use F.group_norm.
    """
    if not _is_channels_last(x) or x.shape[2] * x.shape[3] < _FUSED_MIN_PIXELS.get(x.dtype, 5):
        h = F.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps)
        if scale is None:
            return h
        scale, shift = (1 + scale).to(h.dtype), shift.to(h.dtype)
        return torch.addcmul(shift[:, :, None, None], h, scale[:, :, None, None])
    args = (x, norm.weight, norm.bias, scale, shift, norm.num_groups, norm.eps)
    if torch.is_grad_enabled():
        return _AdaGroupNorm.apply(*args)
    return _gn_forward(*args, reuse=True)[0]


def group_norm(channels: int, eps: float = 1e-5) -> nn.GroupNorm:
    """GroupNorm (Wu & He 2018) with a valid group count for small widths (32 groups in ADM)."""
    return nn.GroupNorm(num_groups(channels), channels, eps=eps)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero all parameters of `module` so a residual branch starts as the identity (ADM, DiT)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def key_padding_mask(tokens_mask: Tensor, num_queries: int) -> Tensor:
    """Boolean SDPA mask [B, 1, 1, L + N] letting every query see all kept tokens and all pixels."""
    keep_pixels = tokens_mask.new_ones(tokens_mask.shape[0], num_queries)  # [B, N]
    return torch.cat([tokens_mask.bool(), keep_pixels], dim=1)[:, None, None, :]  # [B, 1, 1, L+N]


def explicit_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """softmax(q kᵀ/√d) v (Vaswani et al. 2017, Eq. 1) as two matmuls in q's dtype with the
    softmax in fp32; `mask` as scaled_dot_product_attention's (bool: True = attend, or additive).
    q [B, h, N, d], k and v [B, h, M, d] → [B, h, N, d]."""
    w = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-1, -2)).float()  # [B, h, N, M]
    if mask is not None:
        w = w.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else w + mask
    return torch.matmul(w.softmax(-1).to(q.dtype), v)


class AttentionBlock(nn.Module):
    """Multi-head self-attention over pixels, optionally also attending to conditioning tokens.

    ADM (Dhariwal & Nichol 2021) `AttentionBlock`; tokens enter as in GLIDE (Nichol et al. 2022):
    each block projects them to extra keys and values prepended to the pixels' own, so self- and
    cross-attention are one `scaled_dot_product_attention` call, and a fully masked token list
    still leaves the pixels to attend to. On channels-last x the [B, H·W, C] pixel matrix is a
    view, so the block makes no layout copies.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 4,
        head_channels: int = -1,  # > 0: heads of this width instead of num_heads (ADM)
        token_dim: int = 0,  # > 0: cross-attention to tokens [B, L, token_dim]
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

    def forward(
        self, x: Tensor, tokens: Tensor | None = None, mask: Tensor | None = None
    ) -> Tensor:
        B, C, H, W = x.shape
        N, heads = H * W, self.num_heads
        h = ada_group_norm(x, self.norm).permute(0, 2, 3, 1).reshape(B, N, C)  # [B, N, C]
        q, k, v = self.qkv(h).view(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
        if tokens is not None and self.token_kv is not None:
            L = tokens.shape[1]
            tk, tv = self.token_kv(tokens).view(B, L, 2, heads, C // heads).permute(2, 0, 3, 1, 4)
            k = torch.cat([tk.to(k.dtype), k], dim=2)  # [B, heads, L + N, d]
            v = torch.cat([tv.to(v.dtype), v], dim=2)  # [B, heads, L + N, d]
        if q.dtype in (torch.bfloat16, torch.float16) and q.device.type == "cpu":
            # CPU flash attention is slow in bf16 (its backward 4× slower than fp32): explicit
            # matmuls in bf16 with the softmax in fp32 (bench/profile_step.py)
            h = explicit_attention(q, k, v, mask)  # [B, heads, N, d]
        else:
            h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, heads, N, d]
        # skip_scale·(x + proj(h)) with the scale folded into the projection: one pass fewer
        s = self.skip_scale
        h = h.transpose(1, 2).reshape(B, N, C)  # [B, N, C] (a view: SDPA returns [B, N, heads, d])
        h = F.linear(h, self.proj.weight * s, self.proj.bias * s)
        h = h.view(B, H, W, C).permute(0, 3, 1, 2)  # [B, C, H, W] channels-last view
        return torch.add(h, x, alpha=s)  # out of place: in place on a view costs autograd a copy
