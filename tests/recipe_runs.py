"""Tiny colour data with a known mean colour, and each built-in recipe family shrunk to it.

A family is what decides how samples come out of a briefly trained model: the schedule, the
parameterization, the training density/loss and the default sampler, grid and guidance. The
data, net, condition and codec are replaced by tiny ones (8×8 colour blobs, a 16-channel U-Net).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from difflab.core.config import builtin_configs, load_config, read_config_file
from difflab.data.datasets import DATASETS

FAMILY_KEYS = (("model", "schedule"), ("model", "parameterization"), ("model", "learned_variance"),
               ("train", "sigma_density"), ("train", "loss"), ("sample", "sampler"),
               ("sample", "steps"), ("sample", "discretization"))  # fmt: skip
TINY_NET = {"name": "unet", "model_channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1,
            "attention_resolutions": [], "num_heads": 4}  # fmt: skip


def write_blobs(root: Path, n: int = 256, size: int = 8, channels: int = 3, classes: int = 0,
                seed: int = 0) -> Path:  # fmt: skip
    """PNGs of 1–2 orange discs on a brown background: a strong colour bias (red > green > blue)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        img = np.ones((size, size, 3)) * (np.array([0.45, 0.25, 0.15]) + 0.08 * rng.standard_normal(3))
        for _ in range(2):
            centre, radius = rng.uniform(2, size - 2, 2), rng.uniform(1.5, size / 4)
            disc = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2
            img[disc] = np.array([0.9, 0.5, 0.2]) + 0.1 * rng.standard_normal(3)
        im = Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8))
        folder = root / (f"class{i % classes}" if classes else "")
        folder.mkdir(parents=True, exist_ok=True)
        (im.convert("L") if channels == 1 else im).save(folder / f"{i:04d}.png")
    return root


def image_config(name: str) -> bool:
    """Whether a built-in config trains on images (not 2-D points)."""
    spec = read_config_file(name)["data"]["dataset"]
    return DATASETS.meta(spec["name"]).get("kind", "image") == "image"


def family(name: str) -> tuple:
    """The settings of a built-in config that its tiny stand-in keeps (see the module doc)."""
    cfg = load_config(name).to_dict()
    return tuple(repr(cfg[section][key]) for section, key in FAMILY_KEYS) + (
        repr([g for g in cfg["sample"]["guidance"] if not g.startswith("cfg")]),
    )


def families() -> dict[str, str]:
    """One built-in image config per family (the first by name): {family id: config name}."""
    seen: dict[tuple, str] = {}
    for name in builtin_configs():
        if image_config(name):
            seen.setdefault(family(name), name)
    return {name: name for name in seen.values()}


def tiny_overrides(data: Path, steps: int) -> list[str]:
    """--set overrides that shrink any image config to the tiny data and net."""
    net = "{" + ", ".join(f"{k} = {v!r}" for k, v in TINY_NET.items()).replace("'", '"') + "}"
    return [f"data.dataset={{name='folder', path='{data}'}}", f"model.net={net}",
            "model.cond={}", "model.codec={name='identity'}",
            f"train.steps={steps}", "train.batch_size=32", "train.lr=2e-3", "train.warmup=50",
            "train.ema_decay=0.99", "train.bf16=false", "train.ckpt_every=0", "train.log_every=50",
            "train.max_seconds=0"]  # fmt: skip


def keep_default_guidance(cfg) -> None:
    """Drop CFG from the defaults (the tiny stand-in is unconditional); keep x̂0 clipping etc."""
    cfg.sample.guidance = [g for g in cfg.sample.guidance if not g.startswith("cfg")]


def channel_stats(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of images [N, C, H, W] in [-1, 1]."""
    return x.mean((0, 2, 3)).numpy(), x.std((0, 2, 3)).numpy()
