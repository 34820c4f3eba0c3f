"""Tiny random-weight model runs for the web UI and PNG-settings tests (no training needed)."""

from __future__ import annotations

from pathlib import Path

import torch

from difflab.core.config import load_config
from difflab.storage import checkpoint as ckpt
from difflab.storage.models import build_denoiser

NET = ("model.net={{name='unet', model_channels=16, channel_mult=[1, 2], num_res_blocks=1, "
       "attention_resolutions=[{res}], num_heads={heads}}}")  # fmt: skip


def save_run(run: Path, cond: str | None = None, size: int = 8, *extra: str) -> Path:
    """A run dir with one checkpoint of a tiny U-Net on [1, size, size] images whose weights are
    perturbed from their initialisation (so every layer, zero-initialised ones too, is live)."""
    over = [NET.format(res=size // 2, heads=2 if cond == "text" else 1), "sample.steps=3", *extra]
    if cond == "class":
        over.append("model.cond={name='class', num_classes=10}")
    if cond == "text":
        names = "['zero','one','two','three','four','five','six','seven','eight','nine']"
        over.append(f"model.cond={{name='text', dataset='digits', class_names={names}}}")
    cfg = load_config("digits", over)
    cfg.model.shape = [1, size, size]
    torch.manual_seed(0)
    denoiser = build_denoiser(cfg.model)
    for p in denoiser.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    ckpt.save_model(ckpt.model_path(run, 1), denoiser.state_dict(), cfg.to_dict(), {"step": 1})
    return run


def tiny_clip(path: Path | None = None, shape: tuple[int, ...] = (1, 8, 8)) -> Path:
    """A random-weight CLIP file (kind "clip", MiniLM's 384-d space) reading images of `shape`;
    by default one shared file per shape in the temp dir, written once."""
    import tempfile

    from difflab.nets.noise_aware import ClipImageEncoder
    from difflab.storage.clip import save_clip
    from difflab.training.noise_aware import default_options

    if path is None:
        name = f"difflab-tiny-clip-{'x'.join(map(str, shape))}.safetensors"
        path = Path(tempfile.gettempdir()) / name
        if path.is_file():
            return path
    net = {**default_options()["net"], "model_channels": 8, "channel_mult": [1]}
    meta = {"dataset": {"name": "digits"}, "class_names": ["0", "1"], "shape": list(shape),
            "sigma_data": 0.5, "net": net, "density": {}, "dim": 384, "text_encoder": "minilm",
            "clip_sigma": 0.002}  # fmt: skip
    torch.manual_seed(0)
    return save_clip(path, ClipImageEncoder.from_meta(meta))
