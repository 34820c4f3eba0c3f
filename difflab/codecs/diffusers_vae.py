"""A saved diffusers AutoencoderKL as a codec: latents z = (E(x) − shift)·scale (Rombach et al.
2022, §3 and App. G: the latent scaled to unit variance; `shift_factor` where the VAE has one)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from difflab.codecs.base import CODECS
from difflab.core.errors import UsageError
from difflab.core.foreign import foreign_module, read_json, read_weights, weight_file

STEMS = ("diffusion_pytorch_model",)


@CODECS.register("diffusers_vae")
class DiffusersVAE:
    """pixels [B, 3, H, W] in [−1, 1] ↔ scaled latents [B, C, H/f, W/f]; the encoder's mean is
    the latent (deterministic; the posterior's spread is not sampled)."""

    def __init__(self, *, path: str, allow_pickle: bool = False):
        self.path = Path(path)
        self.config = read_json(self.path, "config.json", "AutoencoderKL")
        self.allow_pickle = bool(allow_pickle)
        self.weights = weight_file(self.path, STEMS, self.allow_pickle)  # checked up front
        self.factor = 2 ** (len(self.config.get("block_out_channels", [64])) - 1)
        self.channels = int(self.config.get("latent_channels", 4))
        self.scale = float(self.config.get("scaling_factor") or 1.0)
        self.shift = float(self.config.get("shift_factor") or 0.0)
        self._vae = None
        self._device = torch.device("cpu")

    @property
    def vae(self):
        """The AutoencoderKL, built and loaded on first use (diffusers imported here)."""
        if self._vae is None:
            vae = foreign_module("diffusers").AutoencoderKL.from_config(self.config)
            vae.load_state_dict(read_weights(self.weights))
            self._vae = vae.eval().requires_grad_(False).to(self._device)
        return self._vae

    def encode(self, pixels: Tensor) -> Tensor:
        moments = self.vae.encode(pixels.to(self._device)).latent_dist.mean  # [B, C, h, w]
        return (moments - self.shift) * self.scale

    def decode(self, x: Tensor) -> Tensor:
        return self.vae.decode(x.to(self._device) / self.scale + self.shift).sample

    def latent_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
        _, h, w = image_shape
        if h % self.factor or w % self.factor:
            raise UsageError(
                f"images {h}x{w} do not divide by this VAE's factor {self.factor}; "
                f"use a size that is a multiple of {self.factor}"
            )
        return (self.channels, h // self.factor, w // self.factor)

    def image_shape(self, latent_shape: Sequence[int]) -> tuple[int, ...]:
        _, h, w = latent_shape
        return (int(self.config.get("in_channels", 3)), h * self.factor, w * self.factor)

    def to(self, device: str | torch.device) -> DiffusersVAE:
        self._device = torch.device(device)
        if self._vae is not None:
            self._vae.to(self._device)
        return self
