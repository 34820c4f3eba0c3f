"""Residual MLP for 2-D toy data (the small denoiser of toy-diffusion experiments)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from difflab.core.errors import UsageError
from difflab.nets.base import NETS
from difflab.nets.layers import NoiseEmbedding, check_c_noise, zero_init


class MLPBlock(nn.Module):
    """Pre-norm residual block x + W₂·SiLU(W₁·LN(x) + emb) (ADM res block, dense)."""

    def __init__(self, hidden: int, emb_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb_proj = nn.Linear(emb_dim, hidden)
        self.fc2 = zero_init(nn.Linear(hidden, hidden))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = F.silu(self.fc1(self.norm(x)) + self.emb_proj(emb))  # [B, hidden]
        return x + self.fc2(h)  # [B, hidden]


class MLP(nn.Module):
    """Residual MLP F_θ(x, c_noise, cond) on [B, D] points; output layer zero-initialised."""

    def __init__(
        self,
        *,
        in_channels: int = 2,
        out_channels: int = 2,
        hidden: int = 256,
        depth: int = 4,
        cond_vector_dim: int = 0,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.cond_vector_dim = cond_vector_dim
        emb_dim = hidden
        self.noise_emb = NoiseEmbedding(hidden, emb_dim)
        self.vector_emb = nn.Linear(cond_vector_dim, emb_dim) if cond_vector_dim else None
        self.fc_in = nn.Linear(in_channels, hidden)
        self.blocks = nn.ModuleList([MLPBlock(hidden, emb_dim) for _ in range(depth)])
        self.norm_out = nn.LayerNorm(hidden)
        self.fc_out = zero_init(nn.Linear(hidden, out_channels))

    def forward(self, x: Tensor, c_noise: Tensor, cond: dict[str, Tensor] | None = None) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.in_channels:
            raise UsageError(f"x must be [B, {self.in_channels}], got {tuple(x.shape)}")
        B = x.shape[0]
        cond = cond or {}
        unknown = sorted(set(cond) - {"vector"})
        if unknown:
            raise UsageError(f"the MLP takes only cond['vector'], got slot(s) {unknown}")
        c_noise = check_c_noise(c_noise, B)
        emb = self.noise_emb(c_noise)  # [B, E]
        if "vector" in cond:
            if not self.cond_vector_dim:
                raise UsageError(
                    "cond['vector'] given but the net was built with cond_vector_dim=0"
                )
            v = cond["vector"]
            if v.shape != (B, self.cond_vector_dim):
                raise UsageError(
                    f"cond['vector'] must be [{B}, {self.cond_vector_dim}], got {tuple(v.shape)}"
                )
            emb = emb + self.vector_emb(v.to(emb.dtype))  # [B, E]
        emb = F.silu(emb)
        h = self.fc_in(x)  # [B, hidden]
        for block in self.blocks:
            h = block(h, emb)
        return self.fc_out(F.silu(self.norm_out(h)))  # [B, out_channels]


@NETS.register("mlp")
def mlp(
    *,
    in_channels: int = 2,
    out_channels: int = 2,
    hidden: int = 256,
    depth: int = 4,
    cond_vector_dim: int = 0,
) -> MLP:
    """Residual MLP denoiser for 2-D toy distributions; `depth` residual blocks of width `hidden`."""
    return MLP(
        in_channels=in_channels,
        out_channels=out_channels,
        hidden=hidden,
        depth=depth,
        cond_vector_dim=cond_vector_dim,
    )
