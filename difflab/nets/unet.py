"""ADM U-Net (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs", guided-diffusion `UNetModel`).

Speed on CPU comes from layout and pass count, not from a smaller net: activations are
channels-last (oneDNN's native convolution layout, and the [B, H·W, C] pixel matrix of attention is
then a view), GroupNorm + AdaGN scale-shift is one fused affine pass with a hand-written backward
(layers.ada_group_norm), the residual scale is folded into the last convolution's weights, 1×1
convolutions are plain matmuls, the noise embedding and its SiLU are computed once per call, and
bf16 autocast keeps activations in bf16 end to end (attention trains in fp32, which CPU flash
attention runs faster).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from difflab.core.errors import UsageError
from difflab.nets.base import NETS
from difflab.nets.layers import (
    AttentionBlock,
    NoiseEmbedding,
    ada_group_norm,
    check_c_noise,
    group_norm,
    key_padding_mask,
    zero_init,
)


def _conv1x1(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """1×1 convolution; on channels-last x a plain matmul over the [B, H, W, C] view."""
    if x.is_contiguous(memory_format=torch.channels_last):
        return F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias).permute(0, 3, 1, 2)
    return F.conv2d(x, weight, bias)


AUG_SCALE = 1000.0  # aug levels σ_aug ∈ [0, ~1] → the positional range of discrete timesteps


def check_sizes(
    sizes: dict[str, int],
    channel_mult: tuple[int, ...],
    attention_resolutions: tuple[int, ...],
    dropout: float,
    what: str,
) -> list[int]:
    """Validate ADM widths/levels (UsageError naming the fix); the resolution of each level."""
    for name, value in sizes.items():
        if value < 1:
            raise UsageError(f"{name} must be a positive integer, got {value}")
    if not channel_mult or min(channel_mult) < 1:
        raise UsageError(f"channel_mult must be positive integers, got {channel_mult}")
    if not 0.0 <= dropout < 1.0:
        raise UsageError(f"dropout must be in [0, 1), got {dropout}")
    resolution, levels = sizes["resolution"], len(channel_mult)
    factor = 2 ** (levels - 1)
    if resolution < factor or resolution % factor:
        raise UsageError(
            f"resolution {resolution} must be a multiple of {factor} = 2**(len(channel_mult)-1) "
            f"for channel_mult={tuple(channel_mult)}; change resolution or channel_mult"
        )
    level_res = [resolution // 2**i for i in range(levels)]
    bad = sorted(set(attention_resolutions) - set(level_res))
    if bad:
        raise UsageError(
            f"attention_resolutions {bad} are not level resolutions {level_res} of this {what}; "
            f"choose from those (or use attention_resolutions=() for none)"
        )
    return level_res


class ResBlock(nn.Module):
    """ADM residual block with AdaGN `GroupNorm(h)·(1+scale)+shift` and BigGAN up/down (ADM §3).

    `emb` is the already activated embedding SiLU(e) [B, E]: the net applies ADM's per-block SiLU
    once for all blocks.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_dim: int,
        *,
        dropout: float = 0.0,
        resample: str = "none",  # "none" | "up" | "down" (BigGAN-style, inside the block)
        skip_scale: float = 1.0,
        checkpointing: bool = False,
    ):
        super().__init__()
        self.resample = resample
        self.skip_scale = skip_scale
        self.checkpointing = checkpointing
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_channels)  # → (scale, shift)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.conv2 = zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def _resample(self, x: Tensor) -> Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")  # [B, C, 2H, 2W]
        if self.resample == "down":
            return F.avg_pool2d(x, 2)  # [B, C, H/2, W/2]
        return x

    def _forward(self, x: Tensor, emb: Tensor) -> Tensor:
        inplace = not torch.is_grad_enabled()  # in-place SiLU would cost autograd a copy
        h = F.silu(ada_group_norm(x, self.norm1), inplace=inplace)  # [B, Ci, H, W]
        if self.resample != "none":
            h, x = self._resample(h), self._resample(x)
        h = self.conv1(h)  # [B, Co, H, W]
        scale, shift = self.emb_proj(emb).chunk(2, dim=1)  # [B, Co] each
        h = F.silu(ada_group_norm(h, self.norm2, scale, shift), inplace=inplace)  # AdaGN
        if self.dropout is not None:
            h = self.dropout(h)
        # skip_scale·(skip(x) + conv2(h)) with the scale folded into the weights: one pass fewer
        s = self.skip_scale
        h = F.conv2d(h, self.conv2.weight * s, self.conv2.bias * s, padding=1)  # [B, Co, H, W]
        if self.skip is not None:
            return h.add_(_conv1x1(x, self.skip.weight * s, self.skip.bias * s))
        return h.add_(x, alpha=s)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)


class Downsample(nn.Module):
    """Strided 3×3 convolution (ADM `Downsample` with use_conv=True)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.conv(x)  # [B, C, H/2, W/2]


class Upsample(nn.Module):
    """Nearest-neighbour ×2 then 3×3 convolution (ADM `Upsample` with use_conv=True)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # [B, C, 2H, 2W]


class UNet(nn.Module):
    """ADM U-Net F_θ(x, c_noise, cond) (Dhariwal & Nichol 2021, guided-diffusion `UNetModel`).

    Levels of width model_channels·channel_mult[i], each with `num_res_blocks` AdaGN residual
    blocks (+1 in the decoder) and self-attention at `attention_resolutions`; a res–attn–res middle;
    BigGAN-style residual up/down-sampling (`resblock_updown`); encoder skips concatenated in the
    decoder as in ADM; zero-initialised output convolutions. ADM adds residual branches unscaled;
    here every residual sum (res blocks and attention) is multiplied by `skip_scale`, 1/√2 by
    default as in BigGAN, NCSN++ and EDM's SongUNet (unit variance at init); 1.0 is ADM exactly.

    Conditioning slots, each optional at call time (absent = unconditional):
      cond["vector"] [B, cond_vector_dim]: projected and added to the noise embedding (ADM labels);
        absent = zeros, the null condition of conditioning.null_cond
      cond["tokens"] [B, L, cond_token_dim] (+ cond["tokens_mask"] [B, L] bool, True = keep):
        cross-attended in every attention block (GLIDE)
      cond["channels"] [B, cond_channels, H, W]: concatenated to x (absent = zeros)
      cond["aug"] [B]: the augmentation level of the channel condition, embedded like the noise
        level and added to it (Imagen's aug-level embedding; CDM §3.2); absent = level 0
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        resolution: int,
        model_channels: int = 64,
        channel_mult: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: tuple[int, ...] = (16,),
        num_heads: int = 4,
        head_channels: int = -1,
        dropout: float = 0.0,
        resblock_updown: bool = True,
        cond_vector_dim: int = 0,
        cond_token_dim: int = 0,
        cond_channels: int = 0,
        cond_aug: int = 0,
        skip_scale: float = 2**-0.5,
        checkpointing: bool = False,
        channels_last: bool = True,
    ):
        super().__init__()
        sizes = dict(in_channels=in_channels, out_channels=out_channels, resolution=resolution)
        sizes.update(model_channels=model_channels, num_res_blocks=num_res_blocks)
        level_res = check_sizes(sizes, channel_mult, attention_resolutions, dropout, "U-Net")
        levels = len(channel_mult)
        factor = 2 ** (levels - 1)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.cond_vector_dim = cond_vector_dim
        self.cond_token_dim = cond_token_dim
        self.cond_channels = cond_channels
        self.cond_aug = int(cond_aug)
        self.factor = factor
        self.channels_last = channels_last
        emb_dim = 4 * model_channels
        block = dict(dropout=dropout, skip_scale=skip_scale, checkpointing=checkpointing)
        attn = dict(num_heads=num_heads, head_channels=head_channels, token_dim=cond_token_dim)
        attn["skip_scale"] = skip_scale

        # Embeddings: noise level, plus the optional vector condition added to it (ADM label_emb)
        self.noise_emb = NoiseEmbedding(model_channels, emb_dim)
        self.vector_emb = nn.Linear(cond_vector_dim, emb_dim) if cond_vector_dim else None
        self.aug_emb = NoiseEmbedding(model_channels, emb_dim) if cond_aug else None

        # Encoder
        self.conv_in = nn.Conv2d(in_channels + cond_channels, model_channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch = [model_channels], model_channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, model_channels * mult, emb_dim, **block)]
                ch = model_channels * mult
                if level_res[level] in attention_resolutions:
                    layers.append(AttentionBlock(ch, **attn))
                self.down.append(nn.ModuleList(layers))
                skips.append(ch)
            if level < levels - 1:
                down = ResBlock(ch, ch, emb_dim, resample="down", **block)
                self.down.append(nn.ModuleList([down if resblock_updown else Downsample(ch)]))
                skips.append(ch)

        # Middle: res, attention, res
        self.mid = nn.ModuleList(
            [
                ResBlock(ch, ch, emb_dim, **block),
                AttentionBlock(ch, **attn),
                ResBlock(ch, ch, emb_dim, **block),
            ]
        )

        # Decoder: one more res block per level, each eating one concatenated encoder skip
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), model_channels * mult, emb_dim, **block)]
                ch = model_channels * mult
                if level_res[level] in attention_resolutions:
                    layers.append(AttentionBlock(ch, **attn))
                if level > 0 and i == num_res_blocks:
                    up = ResBlock(ch, ch, emb_dim, resample="up", **block)
                    layers.append(up if resblock_updown else Upsample(ch))
                self.up.append(nn.ModuleList(layers))

        # Output
        self.norm_out = group_norm(ch)
        self.conv_out = zero_init(nn.Conv2d(ch, out_channels, 3, padding=1))

    def _check_cond(self, x: Tensor, cond: dict[str, Tensor]) -> None:
        """Raise a UsageError for unknown slots, slots the net was built without, bad shapes."""
        options = {
            "vector": ("cond_vector_dim", self.cond_vector_dim),
            "tokens": ("cond_token_dim", self.cond_token_dim),
            "tokens_mask": ("cond_token_dim", self.cond_token_dim),
            "channels": ("cond_channels", self.cond_channels),
            "aug": ("cond_aug", self.cond_aug),
        }
        for slot in cond:
            if slot not in options:
                raise UsageError(f"unknown cond slot {slot!r}; the U-Net takes {list(options)}")
            option, dim = options[slot]
            if not dim:
                raise UsageError(f"cond[{slot!r}] given but the net was built with {option}=0")
        B, _, H, W = x.shape
        tokens, mask = cond.get("tokens"), cond.get("tokens_mask")
        if mask is not None and tokens is None:
            raise UsageError("cond['tokens_mask'] given without cond['tokens']")
        L = tokens.shape[1] if tokens is not None and tokens.ndim == 3 else "L"
        expected = {
            "vector": (B, self.cond_vector_dim),
            "tokens": (B, L, self.cond_token_dim),
            "tokens_mask": (B, L),
            "channels": (B, self.cond_channels, H, W),
            "aug": (B,),
        }
        for slot, value in cond.items():
            if tuple(value.shape) != expected[slot]:
                shape = ", ".join(map(str, expected[slot]))
                raise UsageError(f"cond[{slot!r}] must be [{shape}], got {list(value.shape)}")

    def _run(
        self,
        layers: nn.ModuleList,
        h: Tensor,
        emb: Tensor,
        tokens: Tensor | None,
        masks: dict[int, Tensor | None],
    ) -> Tensor:
        for layer in layers:
            if isinstance(layer, AttentionBlock):
                h = layer(h, tokens, masks[h.shape[2] * h.shape[3]])
            else:
                h = layer(h, emb)
        return h

    def forward(self, x: Tensor, c_noise: Tensor, cond: dict[str, Tensor] | None = None) -> Tensor:
        B, C, H, W = x.shape
        if C != self.in_channels:
            raise UsageError(
                f"x has {C} channels; the net was built with in_channels={self.in_channels}"
            )
        if H % self.factor or W % self.factor:
            raise UsageError(f"x is {H}×{W}; height and width must be multiples of {self.factor}")
        cond = cond or {}
        self._check_cond(x, cond)
        c_noise = check_c_noise(c_noise, B)
        keep_format = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)

        # Embedding, computed once; the SiLU of ADM's per-block `emb_layers` is applied here
        emb = self.noise_emb(c_noise)  # [B, E]
        if "vector" in cond:
            emb = emb + self.vector_emb(cond["vector"].to(emb.dtype))  # [B, E]
        elif self.vector_emb is not None:
            emb = emb + self.vector_emb.bias.to(emb.dtype)  # absent = the null (zero) vector
        if self.aug_emb is not None:  # absent = level 0, the unaugmented condition
            level = cond["aug"] if "aug" in cond else torch.zeros(B, device=x.device)
            emb = emb + self.aug_emb(AUG_SCALE * level.float()).to(emb.dtype)  # [B, E]
        emb = F.silu(emb)

        # Tokens: one key-padding mask per attention resolution, shared by its blocks
        tokens, tokens_mask = cond.get("tokens"), cond.get("tokens_mask")
        if tokens is not None:
            tokens = tokens.to(self.conv_in.weight.dtype)  # [B, L, Dt]
        masks = _Masks(tokens_mask)

        # Input; an absent channel condition counts as zeros, i.e. only x's weights are used
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if "channels" in cond:
            h = self.conv_in(torch.cat([x, cond["channels"].to(x.dtype)], dim=1))  # [B, C0, H, W]
        elif self.cond_channels:
            w = self.conv_in.weight[:, : self.in_channels]
            h = F.conv2d(x, w, self.conv_in.bias, padding=1)  # [B, C0, H, W]
        else:
            h = self.conv_in(x)  # [B, C0, H, W]

        # Encoder, middle, decoder (each decoder block eats one encoder skip, ADM)
        skips = [h]
        for layers in self.down:
            h = self._run(layers, h, emb, tokens, masks)
            skips.append(h)
        h = self._run(self.mid, h, emb, tokens, masks)
        for layers in self.up:
            h = self._run(layers, torch.cat([h, skips.pop()], dim=1), emb, tokens, masks)
        h = F.silu(ada_group_norm(h, self.norm_out), inplace=not torch.is_grad_enabled())
        h = self.conv_out(h)  # [B, Cout, H, W]
        return h if keep_format else h.contiguous()


class _Masks(dict):
    """Lazily built key-padding masks keyed by the number of pixels N."""

    def __init__(self, tokens_mask: Tensor | None):
        super().__init__()
        self.tokens_mask = tokens_mask

    def __missing__(self, n: int) -> Tensor | None:
        mask = None if self.tokens_mask is None else key_padding_mask(self.tokens_mask, n)
        self[n] = mask
        return mask


@NETS.register("unet")
def unet(
    *,
    in_channels: int,
    out_channels: int,
    resolution: int,
    model_channels: int = 64,
    channel_mult: tuple[int, ...] = (1, 2, 2),
    num_res_blocks: int = 2,
    attention_resolutions: tuple[int, ...] = (16,),
    num_heads: int = 4,
    head_channels: int = -1,
    dropout: float = 0.0,
    resblock_updown: bool = True,
    cond_vector_dim: int = 0,
    cond_token_dim: int = 0,
    cond_channels: int = 0,
    cond_aug: int = 0,
    skip_scale: float = 2**-0.5,
    checkpointing: bool = False,
    channels_last: bool = True,
) -> UNet:
    """ADM U-Net (Dhariwal & Nichol 2021); see `UNet` for the architecture and the cond slots.

    attention_resolutions are spatial sizes (16 = at the 16×16 level); head_channels > 0 fixes the
    head width instead of num_heads; checkpointing recomputes res blocks in the backward pass
    (memory for compute); channels_last=False keeps activations NCHW (slower on CPU).
    """
    return UNet(
        in_channels=in_channels,
        out_channels=out_channels,
        resolution=resolution,
        model_channels=model_channels,
        channel_mult=tuple(channel_mult),
        num_res_blocks=num_res_blocks,
        attention_resolutions=tuple(attention_resolutions),
        num_heads=num_heads,
        head_channels=head_channels,
        dropout=dropout,
        resblock_updown=resblock_updown,
        cond_vector_dim=cond_vector_dim,
        cond_token_dim=cond_token_dim,
        cond_channels=cond_channels,
        cond_aug=cond_aug,
        skip_scale=skip_scale,
        checkpointing=checkpointing,
        channels_last=channels_last,
    )
