"""The VQ-regularised codec (van den Oord et al. 2017, VQ-VAE; Razavi et al. 2019, VQ-VAE-2;
Rombach et al. 2022 §3 "VQ-reg."): the encoder's z_e snaps to the nearest of K codebook vectors,
the decoder sees the quantized z_q through the straight-through estimator. The codebook learns by
exponential moving averages (VQ-VAE App. A.1), codes unused for a while restart at random encoder
outputs (Dhariwal et al. 2020, Jukebox §3.3), and the encoder pays the commitment loss
β‖z_e − sg(z_q)‖². As in LDM, diffusion works on the pre-quantization z_e and decoding quantizes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difflab.codecs.base import CODECS
from difflab.codecs.latent import LatentCodec, need_nets
from difflab.core.errors import UsageError


def nearest_code(z: Tensor, embed: Tensor) -> Tensor:
    """Index of the nearest codebook row for each row of z: argmin ‖z − e_k‖² [N]."""
    d = z.square().sum(1, keepdim=True) - 2 * z @ embed.T + embed.square().sum(1)[None]  # [N, K]
    return d.argmin(1)


def straight_through(z: Tensor, z_q: Tensor) -> Tensor:
    """z_q forward, identity gradient to z backward (VQ-VAE Eq. 3's estimator)."""
    return z + (z_q - z).detach()


class Codebook(nn.Module):
    """K code vectors of dimension D, learned by EMA with Laplace-smoothed counts."""

    def __init__(self, num_codes: int, dim: int, decay: float = 0.99, eps: float = 1e-5,
                 restart_threshold: float = 1.0):  # fmt: skip
        super().__init__()
        if num_codes < 2 or not 0.0 < decay < 1.0:
            raise UsageError(
                f"`num_codes` must be ≥ 2 and `decay` in (0, 1), got {num_codes}, {decay}"
            )
        self.decay, self.eps, self.restart_threshold = decay, eps, restart_threshold
        self.register_buffer("embed", torch.randn(num_codes, dim))  # [K, D]
        self.register_buffer("cluster_size", torch.zeros(num_codes))  # EMA of counts N_k
        self.register_buffer("embed_avg", self.embed.clone())  # EMA of sums m_k

    @torch.no_grad()
    def update(self, z: Tensor, idx: Tensor, generator: torch.Generator | None) -> None:
        """One EMA step on rows z [N, D] assigned to idx [N] (VQ-VAE App. A.1, Eqs. 6–8), then
        restart codes whose EMA count fell below `restart_threshold` at random rows of z."""
        K, g = len(self.embed), self.decay
        onehot = F.one_hot(idx, K).to(z.dtype)  # [N, K]
        self.cluster_size.mul_(g).add_(onehot.sum(0), alpha=1 - g)  # N_k ← γN_k + (1−γ)n_k
        self.embed_avg.mul_(g).add_(onehot.T @ z, alpha=1 - g)  # m_k ← γm_k + (1−γ)Σz
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + K * self.eps) * n  # Laplace smoothing
        self.embed.copy_(self.embed_avg / smoothed[:, None])  # e_k = m_k / N_k
        dead = self.cluster_size < self.restart_threshold  # [K]
        if dead.any():
            pick = torch.randint(len(z), (int(dead.sum()),), generator=generator).to(z.device)
            self.embed[dead] = z[pick]
            self.embed_avg[dead] = z[pick] * self.restart_threshold
            self.cluster_size[dead] = self.restart_threshold

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(z_q, code indices) of z [B, D, h, w]: z_q [B, D, h, w], indices [B, h, w]."""
        B, D, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, D)  # [N, D]
        idx = nearest_code(flat.detach(), self.embed)  # [N]
        z_q = self.embed[idx].view(B, h, w, D).permute(0, 3, 1, 2)  # [B, D, h, w]
        return z_q, idx.view(B, h, w)


def usage(idx: Tensor, num_codes: int) -> tuple[float, float]:
    """(share of the codebook used, perplexity exp(−Σ p log p)) of code indices idx."""
    p = torch.bincount(idx.flatten(), minlength=num_codes).double() / idx.numel()  # [K]
    perplexity = torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum()).item()
    return (p > 0).double().mean().item(), perplexity


class VQCodec(LatentCodec):
    """Encoder → z_e [B, z, h, w]; decoder ← straight-through z_q; codebook of K vectors in R^z."""

    def __init__(self, encoder, decoder, *, num_codes: int, decay: float,
                 restart_threshold: float, **shape):  # fmt: skip
        super().__init__(encoder, decoder, **shape)
        self.codebook = Codebook(num_codes, self.z_channels, decay,
                                 restart_threshold=restart_threshold)  # fmt: skip

    def latents(self, pixels: Tensor) -> Tensor:
        return self.encoder(pixels)  # z_e, before quantization (LDM)

    def reconstruct(self, z: Tensor) -> Tensor:
        return self.decoder(straight_through(z, self.codebook(z)[0]))

    def forward(self, pixels: Tensor, generator: torch.Generator | None = None
                ) -> tuple[Tensor, dict[str, Tensor], dict[str, float]]:  # fmt: skip
        """Quantize, EMA-update the codebook (training mode), decode; "commitment" term [B]."""
        z = self.encoder(pixels)  # [B, z, h, w]
        z_q, idx = self.codebook(z)
        if self.training:
            flat = z.detach().permute(0, 2, 3, 1).reshape(-1, self.z_channels)  # [N, z]
            self.codebook.update(flat.float(), idx.flatten(), generator)
        commitment = (z - z_q.detach()).square().flatten(1).mean(1)  # [B] ‖z_e − sg(z_q)‖²
        used, perplexity = usage(idx, len(self.codebook.embed))
        logs = {"commitment": commitment.mean().item(), "codebook_usage": used,
                "perplexity": perplexity}  # fmt: skip
        return self.decoder(straight_through(z, z_q)), {"commitment": commitment}, logs


@CODECS.register("vq", moments=1)
def vq(*, encoder=None, decoder=None, channels: int = 3, z_channels: int = 4, factor: int = 4,
       num_codes: int = 256, decay: float = 0.99, restart_threshold: float = 1.0,
       scale: float = 1.0, shift: float = 0.0) -> VQCodec:  # fmt: skip
    """VQ autoencoder latents with an EMA codebook of `num_codes` vectors."""
    need_nets("vq", encoder, decoder)
    return VQCodec(encoder, decoder, num_codes=num_codes, decay=decay,
                   restart_threshold=restart_threshold, channels=channels, z_channels=z_channels,
                   factor=factor, scale=scale, shift=shift)  # fmt: skip
