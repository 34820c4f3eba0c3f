"""CLIP files (unCLIP's image–text space): `load_clip(path) -> Clip`, `save_clip`.

A Clip pairs the image tower trained by `train_clip` (nets.noise_aware.ClipImageEncoder: the
noise-aware encoder at a fixed σ ≈ 0) with the frozen text encoder it was trained against, so
images and captions land in one unit-norm space of width `dim` (Radford et al. 2021, Fig. 3;
Ramesh et al. 2022, §2 use that space to condition the decoder and the prior).

    clip = load_clip("clip.safetensors")
    zi = clip.embed_images(x)            # x [B, C, H, W] model-space pixels in [-1, 1] (or uint8)
    zt = clip.embed_texts(["red apple emoji"])   # [1, D], the text encoder's pooled embedding
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.conditioning.embedding import EMBEDDERS
from difflab.core.errors import UsageError
from difflab.core.imageio import uint8_to_pixels
from difflab.nets.noise_aware import ClipImageEncoder
from difflab.storage.noise_aware import load_net, save_net

CHUNK = 256  # images or texts per forward pass


class Clip:
    """Image tower + frozen text encoder: both embed into one unit-norm space [*, dim]."""

    def __init__(self, encoder: ClipImageEncoder, text_encoder: Any | None = None):
        self.encoder = encoder.eval().requires_grad_(False)
        self._text_encoder = text_encoder

    @property
    def dim(self) -> int:
        """D, the width of the shared embedding space (the text encoder's)."""
        return self.encoder.dim

    @property
    def meta(self) -> dict[str, Any]:
        """The file's metadata: dataset, shape, text_encoder, clip_sigma, test retrieval, ..."""
        return self.encoder.meta

    @property
    def shape(self) -> tuple[int, ...]:
        """The image shape [C, H, W] the image tower reads."""
        return self.encoder.shape

    def check_compatible(self, shape: tuple[int, ...]) -> None:
        """UsageError naming both shapes unless images of `shape` [C, H, W] can be embedded."""
        self.encoder.check_compatible(shape)

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    def to(self, device: str | torch.device) -> Clip:
        self.encoder.to(device)
        return self

    @property
    def text_encoder(self):
        """The frozen text encoder named in meta["text_encoder"] (loaded on first use)."""
        if self._text_encoder is None:
            from difflab.conditioning.text_encoder import load_text_encoder

            self._text_encoder = load_text_encoder(self.meta["text_encoder"])
        return self._text_encoder

    @torch.no_grad()
    def embed_images(self, x: Tensor) -> Tensor:
        """Unit-norm image embeddings [B, D] of images x [B, C, H, W]: float pixels in [-1, 1]
        (difflab's model space for pixel data) or uint8, resized (bilinear, antialiased) when
        their size is not the tower's, as CLIP resizes its inputs; on x's device."""
        if not isinstance(x, Tensor) or x.ndim != 4:
            got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise UsageError(f"`x` must be images [B, C, H, W], got {got}")
        pixels = uint8_to_pixels(x) if x.dtype == torch.uint8 else x.float()
        size = tuple(self.shape[-2:])
        if tuple(pixels.shape[-2:]) != size and pixels.shape[1] == self.shape[0]:
            pixels = F.interpolate(pixels, size=size, mode="bilinear", antialias=True)
        self.encoder.check_compatible(pixels.shape)
        dev = self.device
        parts = [self.encoder.embed_clean(pixels[i : i + CHUNK].to(dev))
                 for i in range(0, len(pixels), CHUNK)]  # fmt: skip
        out = torch.cat(parts) if parts else pixels.new_zeros(0, self.dim)
        return out.to(x.device)  # [B, D]

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> Tensor:
        """Unit-norm pooled text embeddings [B, D] of the frozen text encoder (CPU)."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise UsageError("`texts` must be a list of strings, e.g. ['red apple emoji']")
        texts = list(texts)
        parts = [self.text_encoder.encode(texts[i : i + CHUNK])["pooled"].float()
                 for i in range(0, len(texts), CHUNK)]  # fmt: skip
        out = torch.cat(parts) if parts else torch.zeros(0, self.dim)
        return F.normalize(out, dim=-1)  # [B, D]

    def __repr__(self) -> str:
        name = self.meta.get("dataset", {}).get("name", "?")
        return f"Clip(dim={self.dim}, shape={list(self.shape)}, data={name!r}, " \
               f"text_encoder={self.meta.get('text_encoder')!r})"  # fmt: skip


def save_clip(path: str | os.PathLike, clip: Clip | ClipImageEncoder) -> Path:
    """Atomic safetensors file of kind "clip": image-tower weights + JSON meta."""
    encoder = clip.encoder if isinstance(clip, Clip) else clip
    return save_net(Path(path), encoder)


@EMBEDDERS.register("clip")
def load_clip(path: str | os.PathLike, text_encoder: Any | None = None) -> Clip:
    """The Clip saved by `train_clip` (eval mode, no grads); another kind of file → UsageError.
    `text_encoder`: an object with `.encode(prompts)` to use instead of meta["text_encoder"]."""
    return Clip(load_net(path, ClipImageEncoder), text_encoder)
