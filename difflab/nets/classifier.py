"""Encoder half of the ADM U-Net with attention pooling: noise-aware classifiers and encoders.

Dhariwal & Nichol 2021 ("Diffusion Models Beat GANs", guided-diffusion `EncoderUNetModel` with
pool="attention"): the U-Net's encoder levels and middle block, then GroupNorm–SiLU and CLIP-style
attention pooling (Radford et al. 2021, `AttentionPool2d`) to one vector per image. The blocks are
the U-Net's own (`nets.unet`, `nets.layers`); only the pooling head is new.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.core.errors import UsageError
from difflab.nets.base import NETS
from difflab.nets.layers import (
    AttentionBlock,
    NoiseEmbedding,
    ada_group_norm,
    check_c_noise,
    group_norm,
)
from difflab.nets.unet import Downsample, ResBlock, check_sizes


class AttentionPool2d(nn.Module):
    """Attention pooling: the mean token queries all tokens + positions (CLIP; ADM `AttentionPool2d`).

    Tokens are the H·W pixels of [B, C, H, W] with their mean prepended, plus a learned positional
    embedding; multi-head attention with the mean token as the only query gives [B, C], projected
    to [B, out_dim]. (ADM computes all queries and keeps the first; the result is the same.)
    """

    def __init__(self, channels: int, resolution: int, out_dim: int, num_heads: int = 4):
        super().__init__()
        if num_heads < 1 or channels % num_heads:
            raise UsageError(f"num_heads={num_heads} must divide the pooling width {channels}")
        self.num_heads = num_heads
        self.pos = nn.Parameter(torch.randn(resolution * resolution + 1, channels) / channels**0.5)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, out_dim)

    def forward(self, h: Tensor) -> Tensor:
        B, C, H, W = h.shape
        N, heads = H * W + 1, self.num_heads
        if N != self.pos.shape[0]:
            raise UsageError(
                f"attention pooling was built for {self.pos.shape[0] - 1} pixels, got {H}×{W}; "
                "feed images of the resolution the net was built for"
            )
        tokens = h.permute(0, 2, 3, 1).reshape(B, H * W, C)  # [B, H·W, C]
        tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1)  # [B, N, C]
        tokens = tokens + self.pos.to(tokens.dtype)  # [B, N, C]
        q, k, v = self.qkv(tokens).view(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q[:, :, :1], k, v)  # [B, heads, 1, d]
        return self.proj(out.reshape(B, C))  # [B, out_dim]


class EncoderUNet(nn.Module):
    """ADM encoder U-Net E_θ(x, c_noise) → [B, out_dim] (guided-diffusion `EncoderUNetModel`).

    Same levels, residual blocks, attention and noise embedding as `nets.unet.UNet`'s encoder and
    middle, then GroupNorm–SiLU–attention pooling. `forward_features` also returns one feature map
    per level (after its blocks, before down-sampling) and the middle block's output, for the
    structure and style terms of semantic guidance.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_dim: int,
        resolution: int,
        model_channels: int = 64,
        channel_mult: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: tuple[int, ...] = (16,),
        num_heads: int = 4,
        head_channels: int = -1,
        dropout: float = 0.0,
        resblock_updown: bool = True,
        skip_scale: float = 2**-0.5,
        channels_last: bool = True,
    ):
        super().__init__()
        sizes = dict(in_channels=in_channels, out_dim=out_dim, resolution=resolution)
        sizes.update(model_channels=model_channels, num_res_blocks=num_res_blocks)
        what = "encoder U-Net"
        level_res = check_sizes(sizes, channel_mult, attention_resolutions, dropout, what)
        self.in_channels, self.resolution, self.out_dim = in_channels, resolution, out_dim
        self.channels_last = channels_last
        emb_dim = 4 * model_channels
        block = dict(dropout=dropout, skip_scale=skip_scale)
        attn = dict(num_heads=num_heads, head_channels=head_channels, skip_scale=skip_scale)

        self.noise_emb = NoiseEmbedding(model_channels, emb_dim)
        self.conv_in = nn.Conv2d(in_channels, model_channels, 3, padding=1)

        # Encoder levels; `taps` marks the layer after which a level's feature map is read
        self.down, self.taps, ch = nn.ModuleList(), [], model_channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, model_channels * mult, emb_dim, **block)]
                ch = model_channels * mult
                if level_res[level] in attention_resolutions:
                    layers.append(AttentionBlock(ch, **attn))
                self.down.append(nn.ModuleList(layers))
            self.taps.append(len(self.down) - 1)
            if level < len(channel_mult) - 1:
                down = ResBlock(ch, ch, emb_dim, resample="down", **block)
                self.down.append(nn.ModuleList([down if resblock_updown else Downsample(ch)]))

        # Middle: res, attention, res
        self.mid = nn.ModuleList(
            [
                ResBlock(ch, ch, emb_dim, **block),
                AttentionBlock(ch, **attn),
                ResBlock(ch, ch, emb_dim, **block),
            ]
        )

        # Head: GroupNorm–SiLU–attention pooling (ADM pool="attention")
        self.norm_out = group_norm(ch)
        heads = ch // head_channels if head_channels > 0 else num_heads
        self.pool = AttentionPool2d(ch, level_res[-1], out_dim, heads)

    @staticmethod
    def _run(layers: nn.ModuleList, h: Tensor, emb: Tensor) -> Tensor:
        for layer in layers:
            h = layer(h) if isinstance(layer, AttentionBlock) else layer(h, emb)
        return h

    def forward_features(self, x: Tensor, c_noise: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(pooled output [B, out_dim], feature maps: one per level + the middle, [B, C, h, w])."""
        B, C, H, W = x.shape
        if C != self.in_channels or (H, W) != (self.resolution, self.resolution):
            raise UsageError(
                f"x is [{C}, {H}, {W}]; this encoder U-Net was built for "
                f"[{self.in_channels}, {self.resolution}, {self.resolution}]"
            )
        c_noise = check_c_noise(c_noise, B)
        emb = F.silu(self.noise_emb(c_noise))  # [B, E]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.conv_in(x)  # [B, C0, H, W]
        feats = []
        for i, layers in enumerate(self.down):
            h = self._run(layers, h, emb)
            if i in self.taps:
                feats.append(h)  # [B, C_level, H_level, W_level]
        h = self._run(self.mid, h, emb)  # [B, Cm, Hm, Wm]
        feats.append(h)
        h = F.silu(ada_group_norm(h, self.norm_out))  # [B, Cm, Hm, Wm]
        return self.pool(h), feats

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        return self.forward_features(x, c_noise)[0]  # [B, out_dim]


# The class is its own factory: the registry checks options against __init__'s keywords.
NETS.register("encoder_unet", output="vector")(EncoderUNet)
