"""LDM's convolutional autoencoder (Rombach et al. 2022, App. G; taming-transformers `Encoder`/
`Decoder`): levels of residual blocks with GroupNorm + SiLU, a stride-2 convolution between levels
(factor f = 2^(levels − 1)), an optional attention block in the middle, `z_channels` at the bottom.
The KL and VQ codecs (difflab.codecs) wrap these; the PatchGAN discriminator of their training is
`nets.patchgan`. Small by default so it trains on a CPU.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from difflab.core.errors import UsageError
from difflab.nets.layers import AttentionBlock, group_norm

DEFAULT_MULT = (1, 2, 2, 4, 4)  # per-level width multipliers, cut to the factor's level count


def channel_mult_for(factor: int, channel_mult: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """The per-level multipliers of downsampling factor `factor` (a power of two)."""
    if not isinstance(factor, int) or factor < 1 or factor & (factor - 1):
        raise UsageError(f"`factor` must be a power of two (1, 2, 4, 8, ...), got {factor!r}")
    levels = int(math.log2(factor)) + 1
    if channel_mult is None:
        if levels > len(DEFAULT_MULT):
            raise UsageError(f"`factor` {factor} needs `channel_mult` with {levels} entries")
        return DEFAULT_MULT[:levels]
    mult = tuple(int(m) for m in channel_mult)
    if len(mult) != levels or min(mult) < 1:
        raise UsageError(
            f"`channel_mult` {list(mult)} must hold {levels} positive entries for `factor` "
            f"{factor} (f = 2^(len(channel_mult) - 1)); drop it or give {levels} entries"
        )
    return mult


class ResnetBlock(nn.Module):
    """GroupNorm–SiLU–conv twice plus a (1×1 projected) skip (LDM `ResnetBlock` without time)."""

    def __init__(self, cin: int, cout: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = group_norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = group_norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # [B, cout, H, W]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class _Middle(nn.Sequential):
    """ResnetBlock, optional self-attention (ADM's block, one head), ResnetBlock."""

    def __init__(self, ch: int, attention: bool, dropout: float):
        attn = [AttentionBlock(ch, num_heads=1)] if attention else []
        super().__init__(ResnetBlock(ch, ch, dropout), *attn, ResnetBlock(ch, ch, dropout))


class Encoder(nn.Module):
    """pixels [B, C, H, W] → [B, out_channels, H/f, W/f] (f = 2^(len(channel_mult) − 1))."""

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,  # 2·z_channels for the KL codec (mean and log-variance)
        ch: int = 32,
        channel_mult: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention: bool = False,  # self-attention in the middle block
        dropout: float = 0.0,
    ):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch * channel_mult[0], 3, padding=1)
        blocks: list[nn.Module] = []
        cin = ch * channel_mult[0]
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(cin, ch * mult, dropout))
                cin = ch * mult
            if level < len(channel_mult) - 1:
                blocks.append(nn.Conv2d(cin, cin, 3, stride=2, padding=1))  # H → H/2
        self.down = nn.Sequential(*blocks)
        self.mid = _Middle(cin, attention, dropout)
        self.norm_out = group_norm(cin)
        self.conv_out = nn.Conv2d(cin, out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.mid(self.down(self.conv_in(x)))  # [B, ch·mult[-1], H/f, W/f]
        return self.conv_out(F.silu(self.norm_out(h)))  # [B, out_channels, H/f, W/f]


class Upsample(nn.Module):
    """Nearest-neighbour ×2 then a 3×3 convolution (LDM `Upsample`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decoder(nn.Module):
    """[B, z_channels, h, w] → pixels [B, out_channels, h·f, w·f] (the Encoder's mirror)."""

    def __init__(
        self,
        *,
        z_channels: int,
        out_channels: int,
        ch: int = 32,
        channel_mult: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        cin = ch * channel_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, cin, 3, padding=1)
        self.mid = _Middle(cin, attention, dropout)
        blocks: list[nn.Module] = []
        for level in reversed(range(len(channel_mult))):
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(cin, ch * channel_mult[level], dropout))
                cin = ch * channel_mult[level]
            if level > 0:
                blocks.append(Upsample(cin))  # h → 2h
        self.up = nn.Sequential(*blocks)
        self.norm_out = group_norm(cin)
        self.conv_out = nn.Conv2d(cin, out_channels, 3, padding=1)

    @property
    def last_layer(self) -> Tensor:
        """The weight the GAN's adaptive weight differentiates at (LDM `get_last_layer`)."""
        return self.conv_out.weight

    def forward(self, z: Tensor) -> Tensor:
        h = self.up(self.mid(self.conv_in(z)))  # [B, ch·mult[0], H, W]
        return self.conv_out(F.silu(self.norm_out(h)))  # [B, out_channels, H, W]


def build_autoencoder(
    *,
    channels: int,
    z_channels: int,
    factor: int,
    moments: int = 1,  # encoder outputs per latent channel: 2 for a Gaussian (mean, log σ²)
    ch: int = 32,
    channel_mult: tuple[int, ...] | None = None,
    num_res_blocks: int = 1,
    attention: bool = False,
    dropout: float = 0.0,
) -> tuple[Encoder, Decoder]:
    """(Encoder, Decoder) of downsampling `factor` between `channels` pixels and `z_channels`."""
    for name, value in (("channels", channels), ("z_channels", z_channels), ("ch", ch),
                        ("num_res_blocks", num_res_blocks)):  # fmt: skip
        if not isinstance(value, int) or value < 1:
            raise UsageError(f"`{name}` must be a positive integer, got {value!r}")
    mult = channel_mult_for(factor, channel_mult)
    common = dict(ch=ch, channel_mult=mult, num_res_blocks=num_res_blocks, attention=attention,
                  dropout=dropout)  # fmt: skip
    encoder = Encoder(in_channels=channels, out_channels=moments * z_channels, **common)
    return encoder, Decoder(z_channels=z_channels, out_channels=channels, **common)
