"""Noise-aware classifier/encoder files: save, load, and refuse other kinds."""

from __future__ import annotations

import os
from pathlib import Path

from difflab.nets.noise_aware import NoiseAwareClassifier, NoiseAwareEncoder, NoiseAwareNet
from difflab.storage.checkpoint import load_weights, read_kind, save_tensors


def save_net(path: Path, model: NoiseAwareNet) -> Path:
    """Atomic safetensors file: weights + {"kind", ...meta} (difflab.checkpoint)."""
    save_tensors(path, model.state_dict(), {"kind": model.kind, **model.meta})
    return path


def load_net(path: str | os.PathLike, cls: type[NoiseAwareNet]) -> NoiseAwareNet:
    """A saved noise-aware net of class `cls` in eval mode; another kind of file → UsageError."""
    tensors, meta = read_kind(
        Path(path), cls.kind, wanted=f"a noise-aware {cls.kind}",
        fix=f"train one with `train_{cls.kind}(data, out)`",
    )  # fmt: skip
    meta.pop("kind")
    model = load_weights(cls.from_meta(meta), tensors, path, "retrain it")
    return model.eval().requires_grad_(False)


def load_classifier(path: str | os.PathLike) -> NoiseAwareClassifier:
    """A classifier saved by `train_classifier` (eval mode, no grads); other files → UsageError."""
    return load_net(path, NoiseAwareClassifier)


def load_encoder(path: str | os.PathLike) -> NoiseAwareEncoder:
    """An encoder saved by `train_encoder` (eval mode, no grads); other files → UsageError."""
    return load_net(path, NoiseAwareEncoder)
