"""CLIP for unCLIP: an image tower on clean images against a frozen text encoder.

CLIP (Radford et al. 2021, Fig. 3) trains an image encoder and a text encoder with a symmetric
InfoNCE loss and a learned temperature; here the text side stays frozen (the offline MiniLM, or
local CLIP/T5 weights) and the image side is difflab's noise-aware encoder read at one fixed
σ ≈ 0 (EDM's σ_min), so `train_encoder`'s objective and fit serve unchanged: its σ density is a
log-normal with zero spread. Quality is image→caption retrieval on the held-out split: each
held-out image ranks the caption embeddings (the mean over its templates, CLIP §3.1.4) of every
class in that split.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from difflab.core.schema import POSITIVE, check_value
from difflab.nets.noise_aware import ClipImageEncoder
from difflab.storage.clip import Clip, save_clip
from difflab.training.encoder import fit_contrastive

CLIP_SIGMA = 0.002  # the σ the image tower reads clean images at (EDM's σ_min)
RETRIEVAL_K = (1, 5)


def clean_density(sigma: float = CLIP_SIGMA) -> dict[str, Any]:
    """A σ density with all its mass at `sigma`: log-normal, ln σ ~ N(ln sigma, 0)."""
    return {"name": "lognormal", "p_mean": math.log(sigma), "p_std": 0.0}


def retrieval(image: Tensor, labels: Tensor, class_emb: Tensor,
              ks: Sequence[int] = RETRIEVAL_K) -> dict[str, float]:  # fmt: skip
    """Image→caption retrieval (Radford et al. 2021, §3.1): unit image embeddings [N, D] rank the
    caption embeddings [K, D] of the classes present in `labels` [N]; top-k hit rates, chance
    (k / candidates) and the number of candidates."""
    present = labels.unique()  # [K'] sorted
    sims = image @ class_emb[present].T  # [N, K']
    own = torch.searchsorted(present, labels)  # [N] column of each image's class
    rank = (sims > sims.gather(1, own[:, None])).sum(1)  # [N] 0 = best
    out: dict[str, float] = {"candidates": int(len(present))}
    for k in ks:
        out[f"top{k}"] = float((rank < k).float().mean())
        out[f"chance_top{k}"] = min(1.0, k / len(present))
    return out


def heldout_retrieval(model: ClipImageEncoder, test, batch_size: int = 256) -> dict[str, float]:
    """`retrieval` of the held-out Dataset `test` against the model's class caption embeddings."""
    clip = Clip(model)
    x0 = test.to_model(test.x)  # [N, C, H, W]
    image = torch.cat([clip.embed_images(x0[i : i + batch_size]).cpu()
                       for i in range(0, len(x0), batch_size)])  # [N, D]  # fmt: skip
    return retrieval(image, test.labels, model.class_embeddings.cpu())


def train_clip(
    dataset_spec: str | dict[str, Any],
    out: str | os.PathLike,
    *,
    text_encoder: str | Any = "minilm",
    prompts: list[list[str]] | None = None,
    steps: int = 2000,
    max_seconds: float | None = None,
    batch_size: int = 64,
    lr: float = 3e-4,
    net: dict[str, Any] | None = None,
    sigma: float = CLIP_SIGMA,
    sigma_data: float = 0.5,
    ema_decay: float = 0.999,
    weight_decay: float = 0.05,
    test_fraction: float = 0.2,
    seed: int = 0,
    force: bool = False,
    device: str = "auto",
    callback: Callable[[dict], None] | None = None,
) -> Clip:
    """Train CLIP's image tower on clean images against the frozen `text_encoder` (a
    difflab.text name or an object with `.encode`, `.dim`, `.name`), captions per class
    `prompts` (default: difflab.captions templates); meta["test_retrieval"] holds held-out
    image→caption top-1/top-5 and chance; save to `out` (kind "clip")."""
    sigma = check_value("`sigma`", sigma, float, POSITIVE, prefix="")
    out, model, test = fit_contrastive(
        ClipImageEncoder, dataset_spec, "clip", out, text_encoder=text_encoder,
        prompts=prompts, density=clean_density(sigma), extra_meta={"clip_sigma": float(sigma)},
        steps=steps, max_seconds=max_seconds, batch_size=batch_size, lr=lr, ema_decay=ema_decay,
        weight_decay=weight_decay, seed=seed, device=device, callback=callback, force=force,
        test_fraction=test_fraction, net=net, sigma_data=sigma_data,
    )  # fmt: skip
    model.meta["test_retrieval"] = heldout_retrieval(model, test)
    save_clip(Path(out), model)
    return Clip(model, None if isinstance(text_encoder, str) else text_encoder)
