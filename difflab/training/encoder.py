"""Noise-aware image encoder for semantic guidance (Liu et al. 2023, "More control for free").

The encoder U-Net maps σ-space images to unit vectors in a frozen text encoder's space, trained
with CLIP's symmetric InfoNCE loss and a learned temperature (Radford et al. 2021, Fig. 3) against
the caption embeddings of each image's class, on noised images at all σ (objectives/contrastive). Its `embed` gives the
content/text terms, its `features` the structure and style terms of difflab.guidance.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.data.datasets import Dataset
from difflab.nets.noise_aware import NoiseAwareEncoder
from difflab.storage.noise_aware import save_net
from difflab.training.noise_aware import fit, noised_top1, setup
from difflab.training.objectives.contrastive import Contrastive

EVAL_SIGMAS = (0.05, 0.5, 2.0, 10.0)
CAPTION_CHUNK = 256  # captions per text-encoder call


def caption_table(text_encoder: Any, per_class: list[list[str]]) -> tuple[Tensor, Tensor]:
    """(pooled unit caption embeddings [T, D], class of each caption [T]) over all captions."""
    prompts = [c for caps in per_class for c in caps]
    owner = torch.tensor([k for k, caps in enumerate(per_class) for _ in caps])  # [T]
    with torch.no_grad():  # CAPTION_CHUNK at a time: an emoji-name table has ~15k captions
        pooled = torch.cat([text_encoder.encode(prompts[i : i + CAPTION_CHUNK])["pooled"].float()
                            for i in range(0, len(prompts), CAPTION_CHUNK)])  # [T, D]  # fmt: skip
    return F.normalize(pooled, dim=-1), owner


def class_means(pooled: Tensor, owner: Tensor, num_classes: int) -> Tensor:
    """Normalised mean caption embedding per class [K, D] (CLIP prompt ensembling, §3.1.4)."""
    sums = torch.zeros(num_classes, pooled.shape[1]).index_add_(0, owner, pooled)  # [K, D]
    return F.normalize(sums, dim=-1)


def zero_shot_accuracy(
    model: NoiseAwareEncoder, x0: Tensor, labels: Tensor, sigma: float, seed: int = 0,
    batch_size: int = 256,
) -> float:  # fmt: skip
    """Fraction of x0 + σ·ε whose nearest class caption embedding is their own class."""
    return noised_top1(model.zero_shot_logits, x0, labels, sigma, seed, batch_size, model.device)


def fit_contrastive(
    cls: type[NoiseAwareEncoder], dataset_spec: str | dict[str, Any], what: str,
    out: str | os.PathLike, *, text_encoder: str | Any, prompts: list[list[str]] | None,
    density: dict[str, Any] | None, extra_meta: dict[str, Any] | None = None, steps: int,
    max_seconds: float | None = None,
    batch_size: int, lr: float, ema_decay: float, weight_decay: float, seed: int,
    device: str = "auto", callback: Callable[[dict], None] | None = None, **setup_opts: Any,
) -> tuple[Path, NoiseAwareEncoder, Dataset]:  # fmt: skip
    """The contrastive training shared by `train_encoder` and `train_clip`: (checked out path,
    trained net of class `cls` with class caption embeddings, held-out split); writes nothing."""
    out, data, train, test, meta = setup(
        dataset_spec, what, out, density=density, steps=steps, max_seconds=max_seconds,
        batch_size=batch_size, lr=lr,
        seed=seed, ema_decay=ema_decay, weight_decay=weight_decay, **setup_opts,
    )  # fmt: skip
    if isinstance(text_encoder, str):
        from difflab.conditioning.text_encoder import load_text_encoder

        text_encoder = load_text_encoder(text_encoder)
    class_names = meta["class_names"]
    if prompts is None:
        from difflab.conditioning.captions import captions

        prompts = captions(meta["dataset"]["name"], class_names)
    if len(prompts) != len(class_names) or not all(prompts):
        raise UsageError(
            f"need a non-empty caption list for each of the {len(class_names)} classes of "
            f"{meta['dataset']['name']}, got {len(prompts)} lists; pass one list of captions per "
            "class"
        )
    pooled, owner = caption_table(text_encoder, prompts)  # [T, D], [T]
    meta |= {"dim": int(text_encoder.dim),
             "text_encoder": getattr(text_encoder, "name", str(text_encoder))}  # fmt: skip
    meta |= extra_meta or {}
    torch.manual_seed(seed)
    model = cls.from_meta(meta)
    model.class_embeddings.copy_(class_means(pooled, owner, len(class_names)))
    objective = Contrastive(model, meta["density"], pooled, owner, seed=seed + 1)
    model = fit(
        objective, train, steps=steps, max_seconds=max_seconds,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        ema_decay=ema_decay, seed=seed, callback=callback, device=device,
    )  # fmt: skip
    return out, model, test


def train_encoder(
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
    density: dict[str, Any] | None = None,
    sigma_data: float = 0.5,
    ema_decay: float = 0.999,
    weight_decay: float = 0.05,
    test_fraction: float = 0.2,
    eval_sigmas: Sequence[float] = EVAL_SIGMAS,
    seed: int = 0,
    force: bool = False,
    device: str = "auto",
    codec: str | os.PathLike | None = None,
    callback: Callable[[dict], None] | None = None,
) -> NoiseAwareEncoder:
    """Train contrastively on noised images, report held-out zero-shot accuracy, save to `out`.

    `text_encoder` is a difflab.text name or an object with `.encode(prompts)` and `.dim` (and
    `.name`); `prompts` are captions per class (default: difflab.captions templates);
    meta["test_accuracy"] maps each σ in `eval_sigmas` to zero-shot accuracy. `codec`: a latent
    model's codec file, to train on (and guide with) its latents.
    """
    out, model, test = fit_contrastive(
        NoiseAwareEncoder, dataset_spec, "encoder", out, text_encoder=text_encoder,
        prompts=prompts, density=density, steps=steps, max_seconds=max_seconds,
        batch_size=batch_size, lr=lr,
        ema_decay=ema_decay, weight_decay=weight_decay, seed=seed, device=device,
        callback=callback, force=force, test_fraction=test_fraction, net=net,
        sigma_data=sigma_data, codec=codec,
    )  # fmt: skip
    x0 = test.to_model(test.x)  # [N, C, H, W]
    model.meta["test_accuracy"] = {
        str(s): zero_shot_accuracy(model, x0, test.labels, s, seed) for s in eval_sigmas
    }
    save_net(Path(out), model)
    return model
