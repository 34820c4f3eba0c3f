"""The shared half of the learned codecs (kl, vq): an encoder and a decoder network, the
downsampling factor f, and the latent scale and shift computed from the training data.

Model space is x = (z − shift)·scale, z the encoder's latent: LDM's `scale_factor` (Rombach et al.
2022 §4.3.2, App. G: 1/std of the first batch's latents; diffusers' 0.18215), computed here over a
calibration set after the autoencoder is trained, plus a shift (the latents' mean), so the
diffusion model sees zero-mean, unit-variance data as in pixel space. The networks come from
difflab.nets.autoencoder; difflab.storage.codecs builds and loads codecs with them (codecs and
nets are one layer and do not import each other).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from difflab.core.errors import UsageError

BUILD_HINT = "build it with difflab.storage.codecs.build_codec, which makes its networks"


class LatentCodec(nn.Module):
    """pixels [B, C, H, W] ↔ x = (z − shift)·scale [B, z_channels, H/f, W/f]."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, *, channels: int, z_channels: int,
                 factor: int, scale: float = 1.0, shift: float = 0.0):  # fmt: skip
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.channels, self.z_channels, self.factor = channels, z_channels, factor
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("shift", torch.tensor(float(shift)))

    # ---- what each codec defines
    def latents(self, pixels: Tensor) -> Tensor:
        """The deterministic latent z [B, z_channels, h, w] that diffusion trains on."""
        raise NotImplementedError

    def reconstruct(self, z: Tensor) -> Tensor:
        """Latent z → pixels (the VQ codec quantizes first)."""
        return self.decoder(z)

    def forward(self, pixels: Tensor, generator: torch.Generator | None = None
                ) -> tuple[Tensor, dict[str, Tensor], dict[str, float]]:  # fmt: skip
        """Training pass: (reconstruction, regulariser terms {name: [B]}, scalar logs)."""
        raise NotImplementedError

    # ---- the Codec protocol
    def encode(self, pixels: Tensor) -> Tensor:
        self._check(pixels.shape[1:], "pixels")
        return (self.latents(pixels) - self.shift) * self.scale  # [B, z, h, w]

    def decode(self, x: Tensor) -> Tensor:
        return self.reconstruct(x / self.scale + self.shift)  # [B, C, H, W]

    def latent_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
        c, h, w = self._check(image_shape, "image_shape")
        return (self.z_channels, h // self.factor, w // self.factor)

    def image_shape(self, latent_shape: Sequence[int]) -> tuple[int, ...]:
        _, h, w = latent_shape
        return (self.channels, h * self.factor, w * self.factor)

    def _check(self, image_shape: Sequence[int], what: str) -> tuple[int, int, int]:
        shape = tuple(int(s) for s in image_shape)
        f = self.factor
        if len(shape) != 3 or shape[0] != self.channels or shape[1] % f or shape[2] % f:
            raise UsageError(
                f"this codec encodes images of {self.channels} channel(s) with sides divisible by "
                f"{f}, got `{what}` {list(shape)}; use a codec trained on images of that shape"
            )
        return shape  # type: ignore[return-value]

    # ---- the latent scale
    @torch.no_grad()
    def calibrate(self, batches: Iterable[Tensor]) -> tuple[float, float]:
        """Set shift = mean and scale = 1/std of z over the pixel `batches` (LDM `scale_factor`,
        one scalar each); returns (shift, scale). Encoded calibration data then has mean 0, std 1."""
        z = torch.cat([self.latents(b.to(self.scale.device)).double().flatten() for b in batches])
        if z.numel() < 2:
            raise UsageError("calibrating the latent scale needs at least one image; pass some")
        shift, std = z.mean().item(), z.std().item()
        if not std > 0:
            raise UsageError("the latents of the calibration images are constant; train longer")
        self.shift.fill_(shift)
        self.scale.fill_(1.0 / std)
        return shift, 1.0 / std


def need_nets(name: str, encoder, decoder) -> None:
    """UsageError when a learned codec is built without its networks."""
    if encoder is None or decoder is None:
        raise UsageError(f"codec {name!r} needs its encoder and decoder networks; {BUILD_HINT}")
