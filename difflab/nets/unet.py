"""ADM U-Net (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs", guided-diffusion `UNetModel`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from difflab.errors import UsageError
from difflab.nets import NETS
from difflab.nets.layers import AttentionBlock, NoiseEmbedding, check_c_noise, group_norm, zero_init
from difflab.nets.layers import key_padding_mask

SLOTS = ("vector", "tokens", "tokens_mask", "channels")


class ResBlock(nn.Module):
    """ADM residual block with AdaGN `GroupNorm(h)·(1+scale)+shift` and BigGAN up/down (ADM §3)."""

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
        h = F.silu(self.norm1(x))  # [B, Ci, H, W]
        if self.resample != "none":
            h, x = self._resample(h), self._resample(x)
        h = self.conv1(h)  # [B, Co, H, W]
        scale, shift = self.emb_proj(emb)[:, :, None, None].chunk(2, dim=1)  # [B, Co, 1, 1] each
        h = F.silu(torch.addcmul(shift, self.norm2(h), 1 + scale))  # AdaGN (ADM eq. in §3)
        if self.dropout is not None:
            h = self.dropout(h)
        h = self.conv2(h)  # [B, Co, H, W]
        if self.skip is not None:
            x = self.skip(x)
        if self.skip_scale == 1.0:
            return x + h
        return torch.add(x, h).mul_(self.skip_scale)

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

    Skips from the encoder are concatenated in the decoder exactly as in ADM. ADM itself adds
    residual branches unscaled; `skip_scale` multiplies every residual sum (res blocks and
    attention) and defaults to 1/√2 as in BigGAN / score-SDE NCSN++ / EDM's SongUNet, which keeps
    activations at unit variance at initialisation. Set `skip_scale=1.0` for ADM's exact form.
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
        skip_scale: float = 2**-0.5,
        checkpointing: bool = False,
        channels_last: bool = True,
    ):
        super().__init__()
        levels = len(channel_mult)
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
                f"attention_resolutions {bad} are not level resolutions {level_res} of this U-Net; "
                f"choose from those (or use attention_resolutions=() for none)"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.cond_vector_dim = cond_vector_dim
        self.cond_token_dim = cond_token_dim
        self.cond_channels = cond_channels
        self.factor = factor
        self.channels_last = channels_last
        emb_dim = 4 * model_channels
        block = dict(dropout=dropout, skip_scale=skip_scale, checkpointing=checkpointing)
        attn = dict(num_heads=num_heads, head_channels=head_channels, token_dim=cond_token_dim)
        attn["skip_scale"] = skip_scale

        # Embeddings: noise level, plus the optional vector condition added to it (ADM label_emb)
        self.noise_emb = NoiseEmbedding(model_channels, emb_dim)
        self.vector_emb = nn.Linear(cond_vector_dim, emb_dim) if cond_vector_dim else None

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
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def _check_cond(self, x: Tensor, cond: dict[str, Tensor]) -> None:
        """Raise a UsageError for unknown slots or slots this net was built without."""
        unknown = sorted(set(cond) - set(SLOTS))
        if unknown:
            raise UsageError(f"unknown cond slot(s) {unknown}; the U-Net takes {list(SLOTS)}")
        dims = {"vector": self.cond_vector_dim, "tokens": self.cond_token_dim}
        dims.update(tokens_mask=self.cond_token_dim, channels=self.cond_channels)
        for slot in cond:
            if not dims[slot]:
                option = "cond_token_dim" if slot == "tokens_mask" else f"cond_{slot}_dim"
                option = "cond_channels" if slot == "channels" else option
                raise UsageError(f"cond[{slot!r}] given but the net was built with {option}=0")
        B, _, H, W = x.shape
        if "vector" in cond and cond["vector"].shape != (B, self.cond_vector_dim):
            raise UsageError(
                f"cond['vector'] must be [{B}, {self.cond_vector_dim}], got {tuple(cond['vector'].shape)}"
            )
        if "tokens" in cond:
            t = cond["tokens"]
            if t.ndim != 3 or t.shape[0] != B or t.shape[2] != self.cond_token_dim:
                raise UsageError(
                    f"cond['tokens'] must be [{B}, L, {self.cond_token_dim}], got {tuple(t.shape)}"
                )
            m = cond.get("tokens_mask")
            if m is not None and m.shape != t.shape[:2]:
                raise UsageError(
                    f"cond['tokens_mask'] must be [{B}, {t.shape[1]}], got {tuple(m.shape)}"
                )
        elif "tokens_mask" in cond:
            raise UsageError("cond['tokens_mask'] given without cond['tokens']")
        if "channels" in cond and cond["channels"].shape != (B, self.cond_channels, H, W):
            raise UsageError(
                f"cond['channels'] must be [{B}, {self.cond_channels}, {H}, {W}], "
                f"got {tuple(cond['channels'].shape)}"
            )

    def forward(self, x: Tensor, c_noise: Tensor, cond: dict[str, Tensor] | None = None) -> Tensor:
        B, C, H, W = x.shape
        if C != self.in_channels:
            raise UsageError(f"x has {C} channels; the net was built with in_channels={self.in_channels}")
        if H % self.factor or W % self.factor:
            raise UsageError(f"x is {H}×{W}; height and width must be multiples of {self.factor}")
        cond = cond or {}
        self._check_cond(x, cond)
        c_noise = check_c_noise(c_noise, B)
        out_format = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() else torch.contiguous_format

        # Embedding, computed once; SiLU of ADM's `emb_layers` is applied here for all blocks
        emb = self.noise_emb(c_noise)  # [B, E]
        if "vector" in cond:
            emb = emb + self.vector_emb(cond["vector"].to(emb.dtype))  # [B, E]
        emb = F.silu(emb)
        tokens, tokens_mask = cond.get("tokens"), cond.get("tokens_mask")

        # Input: concatenate the channel condition (zeros when absent: use only x's weights)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if "channels" in cond:
            h = torch.cat([x, cond["channels"].to(x.dtype)], dim=1)  # [B, Cin + Cc, H, W]
            h = self.conv_in(h)
        elif self.cond_channels:
            h = F.conv2d(x, self.conv_in.weight[:, : self.in_channels], self.conv_in.bias, padding=1)
        else:
            h = self.conv_in(x)  # [B, C0, H, W]

        masks: dict[int, Tensor] = {}

        def run(layers: nn.ModuleList, h: Tensor) -> Tensor:
            for layer in layers:
                if isinstance(layer, AttentionBlock):
                    n = h.shape[2] * h.shape[3]
                    if tokens_mask is not None and n not in masks:
                        masks[n] = key_padding_mask(tokens_mask, n)
                    h = layer(h, tokens, masks.get(n))
                else:
                    h = layer(h, emb)
            return h

        skips = [h]
        for layers in self.down:
            h = run(layers, h)
            skips.append(h)
        h = run(self.mid, h)
        for layers in self.up:
            h = run(layers, torch.cat([h, skips.pop()], dim=1))
        h = self.conv_out(F.silu(self.norm_out(h)))  # [B, Cout, H, W]
        return h.contiguous(memory_format=out_format)


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
    skip_scale: float = 2**-0.5,
    checkpointing: bool = False,
    channels_last: bool = True,
) -> UNet:
    """ADM U-Net (Dhariwal & Nichol 2021); widths model_channels·channel_mult per level."""
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
        skip_scale=skip_scale,
        checkpointing=checkpointing,
        channels_last=channels_last,
    )
