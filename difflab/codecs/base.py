"""Codecs: the map between pixels and the space the denoiser works in (model space).

EDM2's `training/encoders.py` puts pixels and VAE latents behind one small encode/decode class;
here a codec does the same, and the network's shape is the codec's latent shape, never assumed
to be the image's shape. Pixels are float tensors in [-1, 1], [B, C, H, W].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from difflab.core.registry import Registry

CODECS = Registry("codec")
DEFAULT = {"name": "identity"}  # configs and checkpoints without a codec spec are in pixels


@runtime_checkable
class Codec(Protocol):
    """pixels [B, C, H, W] in [-1, 1] ↔ model space [B, *latent_shape]."""

    def encode(self, pixels: Tensor) -> Tensor:
        """Pixels [B, C, H, W] in [-1, 1] → model-space x0 [B, *latent_shape]."""
        ...

    def decode(self, x: Tensor) -> Tensor:
        """Model-space x [B, *latent_shape] → pixels [B, C, H, W] in [-1, 1] (not clamped)."""
        ...

    def latent_shape(self, image_shape: Sequence[int]) -> tuple[int, ...]:
        """The model-space shape of one item of `image_shape`."""
        ...

    def image_shape(self, latent_shape: Sequence[int]) -> tuple[int, ...]:
        """The pixel shape that one model-space item of `latent_shape` decodes to."""
        ...

    def to(self, device: str | torch.device) -> Codec:
        """This codec with any weights on `device`."""
        ...


def codec_spec(spec: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """The codec spec as a dict; None or {} (configs from before codecs existed) is identity."""
    if not spec:
        return dict(DEFAULT)
    return {"name": spec} if isinstance(spec, str) else dict(spec)


def build_codec(spec: str | Mapping[str, Any] | None) -> Codec:
    """The registered codec of `spec` ("name" or {name = ..., **options}); None → identity."""
    return CODECS.build(codec_spec(spec))
