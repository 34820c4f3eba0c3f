"""The identity codec: the model works on pixels in [-1, 1] (and on 2-D points, unchanged)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from difflab.codecs.base import CODECS


@CODECS.register("identity")
class IdentityCodec:
    """Model space = pixel space: encode and decode return their input."""

    def encode(self, pixels: Tensor) -> Tensor:
        return pixels

    def decode(self, x: Tensor) -> Tensor:
        return x

    def latent_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(image_shape)

    def image_shape(self, latent_shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(latent_shape)

    def to(self, device: str | torch.device) -> IdentityCodec:
        return self
