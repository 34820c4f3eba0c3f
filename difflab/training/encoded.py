"""Training batches in model space: the loader's pixels encoded by the model's codec (EDM2's
encoders; latent diffusion trains on E(x0), Rombach et al. 2022 §3)."""

from __future__ import annotations

import torch

from difflab.codecs.base import Codec


class EncodedBatches:
    """Iterates (codec.encode(x0), labels) over a resumable loader of (pixels, labels) batches."""

    def __init__(self, loader, codec: Codec):
        self.loader, self.codec = loader, codec

    def __iter__(self) -> EncodedBatches:
        return self

    def __next__(self):
        x0, labels = next(self.loader)  # [B, C, H, W] pixels in [-1, 1]
        with torch.no_grad():
            return self.codec.encode(x0), labels  # [B, *latent_shape]

    def state_dict(self) -> dict:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state)
