"""Noise-aware classifier/encoder files: save, load, and refuse other kinds."""

from __future__ import annotations

import os
from pathlib import Path

from difflab.core.errors import UsageError
from difflab.nets.noise_aware import NoiseAwareClassifier, NoiseAwareEncoder, NoiseAwareNet
from difflab.storage.checkpoint import load_tensors, save_tensors

KIND_HINT = {
    "model": "a diffusion model checkpoint (use it as the model, not as this)",
    "classifier": "a noise-aware classifier (from `difflab train-classifier`)",
    "encoder": "a noise-aware image encoder (from `difflab train-encoder`)",
    "feature_net": "a metrics feature net (from `difflab train-features`)",
}


def save_net(path: Path, model: NoiseAwareNet) -> Path:
    """Atomic safetensors file: weights + {"kind", ...meta} (difflab.checkpoint)."""
    save_tensors(path, model.state_dict(), {"kind": model.kind, **model.meta})
    return path


def load_net(path: str | os.PathLike, cls: type[NoiseAwareNet]) -> NoiseAwareNet:
    """A saved noise-aware net of class `cls` in eval mode; another kind of file → UsageError."""
    tensors, meta = load_tensors(Path(path))
    kind = meta.pop("kind", None)
    if kind != cls.kind:
        what = KIND_HINT.get(kind, f"a difflab {kind!r} file")
        raise UsageError(
            f"{path} is {what}, not a noise-aware {cls.kind}; train one with "
            f"`train_{cls.kind}(data, out)`"
        )
    model = cls.from_meta(meta)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        detail = next((ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()), str(err))
        raise UsageError(
            f"{path} does not fit its own config ({detail[:160]}); retrain it"
        ) from None
    return model.eval().requires_grad_(False)


def load_classifier(path: str | os.PathLike) -> NoiseAwareClassifier:
    """A classifier saved by `train_classifier` (eval mode, no grads); other files → UsageError."""
    return load_net(path, NoiseAwareClassifier)


def load_encoder(path: str | os.PathLike) -> NoiseAwareEncoder:
    """An encoder saved by `train_encoder` (eval mode, no grads); other files → UsageError."""
    return load_net(path, NoiseAwareEncoder)
