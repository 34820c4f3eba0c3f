"""The autoencoder objective of latent diffusion's first stage (Rombach et al. 2022 App. G;
Esser et al. 2021): L1 or L2 reconstruction + a perceptual distance on a frozen feature net +
the codec's regulariser (KL or VQ commitment) + an optional PatchGAN term, one loss per sample.

`model` is a learned codec (difflab.codecs.kl / vq): model(x, generator) gives the reconstruction,
its regulariser terms and logs. The perceptual net is passed in as a module (e.g. the conv body of
difflab's domain feature net, or LPIPS/VGG layers the user has): training sits below evaluation,
so the caller loads it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from difflab.core.errors import UsageError
from difflab.training.objectives.adversarial import Adversary, adaptive_weight
from difflab.training.objectives.base import OBJECTIVES, Batch, Objective

RECON = ("l1", "l2")


class PerceptualDistance(nn.Module):
    """LPIPS with unit layer weights (Zhang et al. 2018, Eq. 1, w_l = 1): Σ_l mean_hw
    ‖φ̂_l(x) − φ̂_l(x̂)‖², φ̂_l the channel-normalised output of the l-th child of `layers`."""

    def __init__(self, layers: nn.Sequential):
        super().__init__()
        self.layers = layers.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> PerceptualDistance:
        return self  # frozen: stays in eval mode

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        total = x.new_zeros(len(x))  # [B]
        h = torch.cat([x, y])  # [2B, C, H, W]
        for layer in self.layers:
            h = layer(h)
            f = h / (h.square().sum(1, keepdim=True).sqrt() + 1e-10)  # [2B, C, h, w] unit channels
            fx, fy = f.chunk(2)
            total = total + (fx - fy).square().sum(1).flatten(1).mean(1)
        return total


class AutoencoderLoss(Objective):
    """rec + w_p·perceptual + Σ w_term·term + λ·w_disc·GAN per sample (LDM `LPIPSWithDiscriminator`,
    `VQLPIPSWithDiscriminator`)."""

    def __init__(self, model: nn.Module, *, recon: str = "l1", perceptual: nn.Module | None = None,
                 perceptual_weight: float = 1.0, kl_weight: float = 1e-6,
                 commitment_weight: float = 0.25, disc: dict[str, Any] | None = None):  # fmt: skip
        if recon not in RECON:
            raise UsageError(f"`recon` must be one of {RECON}, got {recon!r}")
        self.model, self.recon = model, recon
        device = next(model.parameters()).device
        self.perceptual = PerceptualDistance(perceptual).to(device) if perceptual else None
        self.perceptual_weight = perceptual_weight
        self.weights = {"kl": kl_weight, "commitment": commitment_weight}
        self.adversary = Adversary(model.channels, device, **disc) if disc is not None else None

    def parts(self) -> dict:
        return self.adversary.parts() if self.adversary is not None else {}

    def loss(self, batch: Batch, step: int) -> tuple[Tensor, dict]:
        x = batch.local(batch.x0)  # [B, C, H, W] pixels in [-1, 1]
        recon, terms, logs = self.model(x, batch.generator)
        diff = (recon - x).abs() if self.recon == "l1" else (recon - x).square()
        rec = diff.flatten(1).mean(1)  # [B]
        logs = {**logs, "rec": rec.mean().item()}
        nll = rec
        if self.perceptual is not None:
            p = self.perceptual(x, recon)  # [B]
            nll = nll + self.perceptual_weight * p
            logs["perceptual"] = p.mean().item()
        total = nll + sum(self.weights[name] * term for name, term in terms.items())
        adv = self.adversary
        if adv is not None and step >= adv.start:
            logs["disc_loss"] = adv.update(x, recon)
            g = adv.generator_loss(recon)  # [B]
            lam = adaptive_weight(nll.mean(), g.mean(), self.model.decoder.last_layer)
            total = total + adv.weight * lam * g
            logs |= {"gan": g.mean().item(), "gan_lambda": lam.item()}
        return total, logs


@OBJECTIVES.register("autoencoder")
def autoencoder(model: nn.Module, *, recon: str = "l1", perceptual: nn.Module | None = None,
                perceptual_weight: float = 1.0, kl_weight: float = 1e-6,
                commitment_weight: float = 0.25,
                disc: dict[str, Any] | None = None) -> AutoencoderLoss:  # fmt: skip
    """A KL or VQ codec's training loss; `disc` = {start, weight, lr, width, layers} adds the
    PatchGAN (None: no GAN)."""
    return AutoencoderLoss(model, recon=recon, perceptual=perceptual,
                           perceptual_weight=perceptual_weight, kl_weight=kl_weight,
                           commitment_weight=commitment_weight, disc=disc)  # fmt: skip
