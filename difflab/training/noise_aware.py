"""Noise-aware networks on σ-space inputs: σ densities, data checks and the shared fit.

A noise-aware net reads x = x0 + σ·ε (σ-space, model-space x0 in [-1, 1]) and σ, with EDM's input
scalings c_in = 1/√(σ² + σ_data²), c_noise = ¼·ln σ (Karras et al. 2022, Table 1): it depends on
no diffusion schedule, so one classifier or encoder serves every difflab model. Trained on noised
data at all noise levels as in Dhariwal & Nichol 2021 §4 (classifier guidance).
`classifier.py` and `encoder.py` add their heads and losses on top.

For a latent-diffusion model the net is trained on that model's latents (`codec` = its codec
file, or a latent cache as the data): x0 is the codec's model-space latent and the net's meta
names the codec file's sha256, so guidance applies it to the latent x directly
(difflab.guidance.noise_aware). A pixel-trained net guides latent models only through the
decoded x̂0.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.schema import NON_NEGATIVE, POSITIVE, UNIT, check_value
from difflab.data.datasets import Dataset, load_dataset
from difflab.data.loader import InfiniteLoader
from difflab.data.splits import holdout_split
from difflab.nets.base import NETS
from difflab.nets.noise_aware import NoiseAwareNet
from difflab.storage.latent_cache import encode_data
from difflab.training.densities import NOISE_AWARE_DENSITY, sigma_range
from difflab.training.dist import World, pick_device
from difflab.training.ema import EMA
from difflab.training.engine import Engine
from difflab.training.engine import fit as fit_engine
from difflab.training.objectives.base import Objective

DEFAULT_NET = {
    "name": "encoder_unet", "model_channels": 32, "channel_mult": [1, 2, 2],
    "num_res_blocks": 1, "attention_resolutions": [],  # attention: middle block + pooling
}  # fmt: skip


def default_options() -> dict[str, Any]:
    """Training options of train_classifier / train_encoder, every key present (for --set)."""
    params = inspect.signature(NETS.get("encoder_unet")).parameters.values()
    net = {p.name: p.default for p in params if p.default is not p.empty}
    net = {k: list(v) if isinstance(v, tuple) else v for k, v in net.items()}
    net = {"name": "encoder_unet", **net, **DEFAULT_NET}
    return {"net": net, "density": dict(NOISE_AWARE_DENSITY), "sigma_data": 0.5, "ema_decay": 0.999,
            "weight_decay": 0.05, "test_fraction": 0.2}  # fmt: skip


def image_data(dataset_spec: str | dict[str, Any], what: str,
               codec: str | os.PathLike | None = None) -> Dataset:  # fmt: skip
    """A labelled square image dataset with ≥ 2 classes (encoded by the `codec` file when one is
    given; a latent cache as it is), else a UsageError."""
    data = load_dataset(dataset_spec)
    if codec is not None:
        data = encode_data(data, codec)  # [N, *latent] model space
    if data.kind == "points" or data.labels is None or data.num_classes < 2:
        raise UsageError(
            f"a noise-aware {what} needs a labelled image dataset with ≥ 2 classes; {dataset_spec} "
            "is not one (use 'digits', 'fashion_mnist' or a folder with class subfolders)"
        )
    if data.shape[1] != data.shape[2]:
        raise UsageError(
            f"images are {data.shape[1]}×{data.shape[2]}; pass size= to make them square"
        )
    return data


def fit(
    objective: Objective,
    data: Dataset,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    ema_decay: float,
    seed: int,
    callback: Callable[[dict], None] | None,
    device: str = "auto",
    max_seconds: float | None = None,
) -> NoiseAwareNet:
    """AdamW on `objective` (its σ density: ADM §4) through the shared step engine for `steps`, or
    until `max_seconds` of training; the EMA or raw net, its meta["train"]["done"] = steps, seconds."""
    if steps < 1 or batch_size < 1 or not lr > 0:
        raise UsageError(
            f"`steps`, `batch_size` and `lr` must be positive, got {steps}, {batch_size}, {lr}"
        )
    loader, g = InfiniteLoader(data, batch_size, seed=seed), torch.Generator().manual_seed(seed)
    dev = pick_device(device)
    model = objective.model.to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    ema = EMA(model, ema_decay) if ema_decay > 0 else None
    engine = Engine(objective, opt, generator=g, world=World(device=dev), ema=ema)
    model, done = fit_engine(engine, loader, steps, callback, max_seconds)
    if hasattr(model, "meta"):
        model.meta.setdefault("train", {})["done"] = done
    return model


@torch.no_grad()
def noised_top1(
    logits: Callable[[Tensor, Tensor], Tensor], x0: Tensor, labels: Tensor, sigma: float,
    seed: int = 0, batch_size: int = 256, device: torch.device | str = "cpu",
) -> float:  # fmt: skip
    """Top-1 accuracy of `logits(x, σ)` [b, K] on x0 + σ·ε (x0 in model space), noise seeded."""
    g, correct = torch.Generator().manual_seed(seed), 0
    for i in range(0, len(x0), batch_size):
        xb = x0[i : i + batch_size]  # [b, C, H, W]
        x = (xb + sigma * torch.randn(xb.shape, generator=g)).to(device)
        pred = logits(x, torch.tensor(sigma)).argmax(1).cpu()  # [b]
        correct += int((pred == labels[i : i + len(xb)]).sum())
    return correct / len(x0)


def setup(
    dataset_spec: str | dict[str, Any], what: str, out: str | os.PathLike, *, force: bool,
    test_fraction: float, net: dict | None, density: dict | None, sigma_data: float,
    codec: str | os.PathLike | None = None, **train_opts: Any,
) -> tuple[Path, Dataset, Dataset, Dataset, dict[str, Any]]:  # fmt: skip
    """The shared start of every noise-aware trainer: (checked out path, data, train split, test
    split, meta with dataset/classes/shape/net/density/training options, and for latents the
    codec {"name", "sha256"} and image_shape); writes nothing."""
    out = check_out(out, force)
    for key, rule in (("ema_decay", UNIT), ("weight_decay", NON_NEGATIVE)):
        train_opts[key] = check_value(f"`{key}`", train_opts.get(key), float, rule, prefix="")
    if train_opts.get("max_seconds") is not None:
        train_opts["max_seconds"] = check_value("`max_seconds`", train_opts["max_seconds"], float,
                                                POSITIVE, prefix="")  # fmt: skip
    sigma_data = check_value("`sigma_data`", sigma_data, float, POSITIVE, prefix="")
    data = image_data(dataset_spec, what, codec)
    if not 0 < test_fraction < 1:
        raise UsageError(f"test_fraction={test_fraction} is invalid; pass a value in (0, 1)")
    defaults = default_options()
    net = {**defaults["net"], **(net or {})}
    density = {**defaults["density"], **(density or {})}
    meta = {
        "dataset": dataset_spec if isinstance(dataset_spec, dict) else {"name": dataset_spec},
        "class_names": list(data.class_names or map(str, range(data.num_classes))),
        "shape": list(data.shape), "sigma_data": sigma_data, "net": net, "density": density,
        "sigma_range": sigma_range(density), "train": {**train_opts, "test_fraction": test_fraction},
    }  # fmt: skip
    if data.kind == "latents":  # the space it reads: this codec file's latents
        meta["codec"] = {k: data.meta["codec"][k] for k in ("name", "sha256")}
        meta["image_shape"] = list(data.meta["image_shape"])
        if data.meta.get("dataset"):  # a latent cache: name the data behind it
            meta["dataset"] = dict(data.meta["dataset"])
    return out, data, *holdout_split(data, test_fraction), meta


def check_out(out: str | os.PathLike, force: bool) -> Path:
    """Refuse to overwrite an existing --out file unless force."""
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"`out` {out} is a directory; give a .safetensors file path")
    if out.exists() and not force:
        raise UsageError(f"`out` {out} exists; pick a new path or pass `force=True` to overwrite")
    return out
