"""Clip files for unCLIP: a contrastive image encoder (`train_clip`, difflab.storage.clip), or a
noise-aware encoder (`train_encoder`) read at its smallest trained σ, behind one interface.

A Clip has `embed_images(x [B, C, H, W] pixels in [-1, 1]) -> [B, D]` and `embed_texts(prompts)
-> [B, D]` unit vectors in one space, `dim` and `meta` (with "text_encoder", the frozen text
encoder whose pooled vector is the text embedding).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.storage.checkpoint import read_metadata
from difflab.storage.codecs import file_sha256


class EncoderClip:
    """A noise-aware image encoder as a Clip: images embedded at its smallest trained σ (the σ → 0
    relative of a CLIP image tower, Liu et al. 2023), texts by its frozen text encoder."""

    def __init__(self, encoder, sigma: float | None = None):
        self.encoder = encoder
        self.sigma = float(encoder.meta["sigma_range"][0] if sigma is None else sigma)
        self.dim = encoder.dim
        self.meta = {"kind": "encoder", "text_encoder": encoder.text_encoder, "dim": self.dim}

    @torch.no_grad()
    def embed_images(self, x: Tensor) -> Tensor:
        """Unit image embeddings [B, D] of pixels x [B, C, H, W] in [-1, 1]."""
        x = x.to(self.encoder.device, torch.float32)
        return self.encoder.embed(x, torch.full((len(x),), self.sigma, device=x.device))

    @torch.no_grad()
    def embed_texts(self, prompts: list[str]) -> Tensor:
        """Unit text embeddings [B, D]: the frozen text encoder's pooled vectors."""
        from difflab.conditioning.text_encoder import load_text_encoder

        return load_text_encoder(self.encoder.text_encoder).encode(list(prompts))["pooled"]


def open_clip(path: str | Path):
    """(Clip, sha256 of its file) for a `train_clip` file or a `train_encoder` file."""
    path = Path(path)
    kind = read_metadata(path).get("kind")
    if kind == "encoder":
        from difflab.storage.noise_aware import load_encoder

        return EncoderClip(load_encoder(path)), file_sha256(path)
    if kind == "clip":
        from difflab.storage.clip import load_clip  # train_clip's files

        return load_clip(path), file_sha256(path)
    raise UsageError(
        f"{path} is a difflab {kind!r} file, not a Clip; train one with `train_clip(data, out)` "
        "or `train_encoder(data, out)`"
    )
