"""The unCLIP diffusion prior: a decoder-only transformer that predicts a clean CLIP image
embedding (Ramesh et al. 2022, §2.2).

The causal sequence is, in order: the encoded text tokens (optional), the CLIP text embedding, an
embedding of the noise level, the noised image embedding and a final query; the output at the
query is the prediction. The net is F_θ of a Precond with parameterization "x0" (D = F), so every
difflab sampler and σ grid samples it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.core.errors import UsageError
from difflab.nets.base import NETS
from difflab.nets.layers import NoiseEmbedding, check_c_noise, zero_init

FIXED = 4  # text embedding, noise level, noised embedding, query


def causal_mask(keep: Tensor) -> Tensor:
    """Boolean attention mask [B, 1, S, S]: query i sees keys j ≤ i that are kept (`keep` [B, S]),
    and always itself, so a row of dropped tokens never attends to nothing."""
    S = keep.shape[1]
    lower = torch.ones(S, S, dtype=torch.bool, device=keep.device).tril()  # [S, S]
    eye = torch.eye(S, dtype=torch.bool, device=keep.device)  # [S, S]
    return ((lower & keep[:, None, :]) | eye)[:, None]  # [B, 1, S, S]


class Block(nn.Module):
    """Pre-norm transformer block x + Attn(LN(x)) + MLP(LN(x)) (GPT-2; Vaswani et al. 2017)."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = zero_init(nn.Linear(width, width))
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(),
                                 zero_init(nn.Linear(mlp_ratio * width, width)))  # fmt: skip

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        B, S, W = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(B, S, 3, self.heads, W // self.heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, heads, S, d]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, heads, S, d]
        h = h + self.proj(a.transpose(1, 2).reshape(B, S, W))  # [B, S, W]
        return h + self.mlp(self.norm2(h))  # [B, S, W]


class PriorTransformer(nn.Module):
    """F_θ(z, c_noise, cond) → x̂0 [B, D] from the causal sequence [tokens, text embedding, noise
    level, z, query] (Ramesh et al. 2022, §2.2); cond["vector"] [B, Dv] is the text embedding,
    cond["tokens"] [B, L, Dt] with cond["tokens_mask"] [B, L] the optional text tokens."""

    def __init__(self, *, in_channels: int, out_channels: int, width: int = 256, depth: int = 4,
                 heads: int = 4, cond_vector_dim: int = 0, cond_token_dim: int = 0,
                 max_tokens: int = 77):  # fmt: skip
        super().__init__()
        if heads < 1 or width % heads:
            raise UsageError(f"`heads`={heads} must divide `width`={width}")
        self.in_channels, self.max_tokens = in_channels, max_tokens
        self.cond_vector_dim, self.cond_token_dim = cond_vector_dim, cond_token_dim
        self.x_in = nn.Linear(in_channels, width)
        self.noise_emb = NoiseEmbedding(width, width)
        self.vector_in = nn.Linear(cond_vector_dim, width) if cond_vector_dim else None
        self.tokens_in = nn.Linear(cond_token_dim, width) if cond_token_dim else None
        self.query = nn.Parameter(torch.randn(width) * 0.02)
        self.pos = nn.Parameter(torch.randn(max_tokens + FIXED, width) * 0.02)
        self.blocks = nn.ModuleList([Block(width, heads) for _ in range(depth)])
        self.norm_out = nn.LayerNorm(width)
        self.out = zero_init(nn.Linear(width, out_channels))

    def _slot(self, cond: dict, key: str, dim: int, B: int) -> Tensor | None:
        if key not in cond:
            return None
        if not dim:
            raise UsageError(f"cond[{key!r}] given but the prior was built without that slot; "
                             f"build it with cond_{key.rstrip('s')}_dim > 0")  # fmt: skip
        v = cond[key]
        if v.shape[0] != B or v.shape[-1] != dim:
            raise UsageError(f"cond[{key!r}] must be [{B}, ..., {dim}], got {tuple(v.shape)}")
        return v

    def sequence(self, x: Tensor, c_noise: Tensor, cond: dict | None = None) -> Tensor:
        """The transformer's output states [B, S, W] over [tokens, text, noise, z, query]."""
        if x.ndim != 2 or x.shape[1] != self.in_channels:
            raise UsageError(f"x must be [B, {self.in_channels}], got {tuple(x.shape)}")
        B, cond = x.shape[0], cond or {}
        unknown = sorted(set(cond) - {"vector", "tokens", "tokens_mask"})
        if unknown:
            raise UsageError(f"the prior takes cond['vector'] and cond['tokens'], got {unknown}")
        dtype = self.x_in.weight.dtype
        text = self._slot(cond, "vector", self.cond_vector_dim, B)
        text = torch.zeros(B, self.x_in.out_features, dtype=dtype, device=x.device) if (
            text is None) else self.vector_in(text.to(dtype))  # [B, W]  # fmt: skip
        fixed = torch.stack(
            [
                text,
                self.noise_emb(check_c_noise(c_noise, B)),
                self.x_in(x.to(dtype)),
                self.query.expand(B, -1),
            ],
            1,
        )  # [B, 4, W]
        fixed = fixed + self.pos[self.max_tokens :]
        tokens = self._slot(cond, "tokens", self.cond_token_dim, B)
        if tokens is None:
            seq, keep = fixed, torch.ones(B, FIXED, dtype=torch.bool, device=x.device)
        else:
            L = tokens.shape[1]
            if L > self.max_tokens:
                raise UsageError(f"{L} text tokens but the prior takes at most `max_tokens`="
                                 f"{self.max_tokens}; build it with a larger max_tokens")  # fmt: skip
            mask = cond.get("tokens_mask", torch.ones(B, L, dtype=torch.bool, device=x.device))
            t = self.tokens_in(tokens.to(dtype)) + self.pos[:L]  # [B, L, W]
            seq = torch.cat([t, fixed], 1)  # [B, L + 4, W]
            keep = torch.cat([mask.bool(), mask.new_ones(B, FIXED, dtype=torch.bool)], 1)
        mask = causal_mask(keep)  # [B, 1, S, S]
        for block in self.blocks:
            seq = block(seq, mask)
        return seq  # [B, S, W]

    def forward(self, x: Tensor, c_noise: Tensor, cond: dict | None = None) -> Tensor:
        """x̂0 [B, D]: the output at the final query (Ramesh et al. 2022, §2.2)."""
        return self.out(self.norm_out(self.sequence(x, c_noise, cond)[:, -1]))  # [B, D]


@NETS.register("prior")
def prior(*, in_channels: int, out_channels: int, width: int = 256, depth: int = 4,
          heads: int = 4, cond_vector_dim: int = 0, cond_token_dim: int = 0,
          max_tokens: int = 77) -> PriorTransformer:  # fmt: skip
    """The unCLIP diffusion prior (Ramesh et al. 2022, §2.2): `depth` causal blocks of `width`."""
    return PriorTransformer(in_channels=in_channels, out_channels=out_channels, width=width,
                            depth=depth, heads=heads, cond_vector_dim=cond_vector_dim,
                            cond_token_dim=cond_token_dim, max_tokens=max_tokens)  # fmt: skip
