"""The KL-regularised codec (Rombach et al. 2022 §3 "KL-reg."; Kingma & Welling 2014): the
encoder gives a diagonal Gaussian posterior q(z|x) = N(μ, diag σ²); training decodes a sample and
pays KL(q ‖ N(0, I)); diffusion encodes with the posterior mean μ (deterministic, so a latent
cache and a resumed run see the same x0), times the latent scale."""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.codecs.base import CODECS
from difflab.codecs.latent import LatentCodec, need_nets


def diag_gaussian_kl(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) = ½ Σ (μ² + σ² − 1 − log σ²) per sample [B] (Kingma & Welling 2014,
    App. B)."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)


class KLCodec(LatentCodec):
    """Encoder → (μ, log σ²) [B, 2·z, h, w]; decoder ← z [B, z, h, w]."""

    def posterior(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """(μ, log σ²) of q(z|x), log σ² clamped to [−30, 20] as in LDM's DiagonalGaussian."""
        mean, logvar = self.encoder(pixels).chunk(2, dim=1)  # [B, z, h, w] each
        return mean, logvar.clamp(-30.0, 20.0)

    def latents(self, pixels: Tensor) -> Tensor:
        return self.posterior(pixels)[0]

    def forward(self, pixels: Tensor, generator: torch.Generator | None = None
                ) -> tuple[Tensor, dict[str, Tensor], dict[str, float]]:  # fmt: skip
        """Decode z = μ + σ·ε (reparameterised); the "kl" term is in nats per pixel dimension."""
        mean, logvar = self.posterior(pixels)
        eps = torch.randn(mean.shape, generator=generator).to(mean)  # [B, z, h, w]
        z = mean + (0.5 * logvar).exp() * eps
        kl = diag_gaussian_kl(mean, logvar) / pixels[0].numel()  # [B]
        logs = {"kl": kl.mean().item(), "posterior_std": (0.5 * logvar).exp().mean().item()}
        return self.decoder(z), {"kl": kl}, logs


@CODECS.register("kl", moments=2)
def kl(*, encoder=None, decoder=None, channels: int = 3, z_channels: int = 4, factor: int = 4,
       scale: float = 1.0, shift: float = 0.0) -> KLCodec:  # fmt: skip
    """KL-regularised autoencoder latents; `encoder`/`decoder` from difflab.nets.autoencoder."""
    need_nets("kl", encoder, decoder)
    return KLCodec(encoder, decoder, channels=channels, z_channels=z_channels, factor=factor,
                   scale=scale, shift=shift)  # fmt: skip
