"""Noise-aware classifier p(y | x_σ) for classifier guidance (Dhariwal & Nichol 2021, §4).

Trained with cross-entropy on x = x0 + σ·ε at all noise levels; guidance (difflab.guidance) adds
s·σ²·∇_x log p(y | x_σ) to the denoiser's output. Inputs are σ-space with EDM input scalings, so one
classifier works with every difflab model of the same data shape, whatever its schedule.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from difflab.nets.noise_aware import NoiseAwareClassifier
from difflab.storage.noise_aware import save_net
from difflab.training.noise_aware import fit, noised_top1, setup
from difflab.training.objectives.classification import NoisedClassification

EVAL_SIGMAS = (0.05, 0.5, 2.0, 10.0)


def noised_accuracy(
    model: NoiseAwareClassifier, x0: Tensor, labels: Tensor, sigma: float, seed: int = 0,
    batch_size: int = 256,
) -> float:  # fmt: skip
    """Top-1 accuracy on x0 + σ·ε (x0 in model space [-1, 1]), noise seeded."""
    return noised_top1(model.logits, x0, labels, sigma, seed, batch_size, model.device)


def train_classifier(
    dataset_spec: str | dict[str, Any],
    out: str | os.PathLike,
    *,
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
) -> NoiseAwareClassifier:
    """Train, evaluate on a held-out split at `eval_sigmas`, save to `out`; the EMA classifier.

    Cross-entropy on noised data at all σ (Dhariwal & Nichol 2021, §4), σ log-uniform on
    [0.002, 80] by default; meta["test_accuracy"] maps each σ to held-out accuracy. For a latent
    model pass its codec file as `codec` (or a latent cache as the data): the classifier is then
    trained on, and guides with, that codec's latents.
    """
    out, data, train, test, meta = setup(
        dataset_spec, "classifier", out, force=force, test_fraction=test_fraction, net=net,
        density=density, sigma_data=sigma_data, steps=steps, max_seconds=max_seconds,
        batch_size=batch_size, lr=lr,
        seed=seed, ema_decay=ema_decay, weight_decay=weight_decay, codec=codec,
    )  # fmt: skip
    density = meta["density"]
    torch.manual_seed(seed)
    model = NoiseAwareClassifier.from_meta(meta)
    model = fit(
        NoisedClassification(model, density), train, steps=steps, max_seconds=max_seconds,
        batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, ema_decay=ema_decay, seed=seed, callback=callback,
        device=device,
    )  # fmt: skip
    x0 = test.to_model(test.x)  # [N, C, H, W]
    model.meta["test_accuracy"] = {
        str(s): noised_accuracy(model, x0, test.labels, s, seed) for s in eval_sigmas
    }
    save_net(Path(out), model)
    return model


