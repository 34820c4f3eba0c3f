"""Training the domain feature net of FD-<dataset>: supervised on labelled images, self-supervised
(SimCLR, Chen et al. 2020) on an unlabelled folder; both through the shared training engine."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from difflab.core.errors import UsageError
from difflab.core.imageio import uint8_to_pixels
from difflab.data.datasets import Dataset, check_choice, load_dataset
from difflab.data.loader import InfiniteLoader
from difflab.data.splits import holdout_split
from difflab.evaluation.features import DomainNet
from difflab.storage.checkpoint import save_tensors
from difflab.training.augment import simclr_view
from difflab.training.engine import Engine, fit
from difflab.training.objectives.classification import Classification
from difflab.training.objectives.simclr import SimCLR

OBJECTIVES = ("auto", "classification", "simclr")


@torch.no_grad()
def _accuracy(net: DomainNet, data: Dataset, batch_size: int = 256) -> float:
    correct = 0
    for i in range(0, len(data), batch_size):
        logits = net.features_model_space(uint8_to_pixels(data.x[i : i + batch_size]))[1]
        correct += int((logits.argmax(1) == data.labels[i : i + batch_size]).sum())
    return correct / len(data)


@torch.no_grad()
def view_accuracy(net: DomainNet, data: Dataset, n: int = 512, seed: int = 0) -> float:
    """Label-free check of a self-supervised net: the fraction of views whose nearest other view
    (cosine of features) is the second view of the same image, over `n` held-out images."""
    g = torch.Generator().manual_seed(seed)
    x = uint8_to_pixels(data.x[:n])  # [n, C, H, W]
    views = torch.cat([simclr_view(x, g), simclr_view(x, g)])  # [2n, C, H, W]
    f = nn.functional.normalize(net.features_model_space(views)[0], dim=1)  # [2n, D]
    sim = (f @ f.T).fill_diagonal_(-2.0)  # [2n, 2n]
    partner = torch.arange(2 * len(x)).roll(len(x))  # [2n]
    return float((sim.argmax(1) == partner).double().mean())


def _dataset(spec: str | dict[str, Any]) -> tuple[Dataset, str | dict[str, Any]]:
    """The image dataset and its spec as stored (an image folder's path made absolute, so the
    metric carries the folder's own name wherever the net is loaded)."""
    if isinstance(spec, dict) and spec.get("name") == "folder" and spec.get("path"):
        spec = {**spec, "path": str(Path(spec["path"]).resolve())}
    data = load_dataset(spec)
    if data.kind != "image":
        raise UsageError(
            f"a domain feature net needs an image dataset; {json.dumps(spec)} holds "
            f"{data.kind}; pass an image folder or 'digits', 'fashion_mnist', 'emoji'"
        )
    return data, spec


def train_feature_net(
    dataset_spec: str | dict[str, Any],
    *,
    steps: int = 2000,
    batch_size: int = 128,
    seed: int = 0,
    out_path: str | os.PathLike,
    lr: float = 2e-3,
    width: int = 32,
    feat_dim: int = 128,
    augment: bool = True,
    test_fraction: float = 0.2,
    objective: str = "auto",
    tau: float = 0.5,
    callback=None,
) -> Path:
    """Train a domain feature net with AdamW + one-cycle LR; save weights + config to `out_path`.

    `objective`="classification": cross-entropy on labelled images (±1 pixel shifts when
    `augment`); "simclr": NT-Xent over two augmented views at temperature `tau` (Chen et al.
    2020), the projection head discarded after training; "auto": classification when the data
    have ≥ 2 classes, else simclr.
    """
    check_choice("objective", objective, OBJECTIVES)
    if not 0 < test_fraction < 1:
        raise UsageError(f"test_fraction={test_fraction} is invalid; pass a value in (0, 1)")
    data, dataset_spec = _dataset(dataset_spec)
    labelled = data.labels is not None and data.num_classes >= 2
    if objective == "auto":
        objective = "classification" if labelled else "simclr"
    if objective == "classification" and not labelled:
        raise UsageError(
            f"`objective='classification'` needs a labelled image dataset with ≥ 2 classes; "
            f"{json.dumps(dataset_spec)} is not one; pass `objective='simclr'` (no labels) or a "
            "folder with class subfolders"
        )
    train, test = holdout_split(data, test_fraction)
    torch.manual_seed(seed)
    net = DomainNet(
        in_channels=data.shape[0], size=list(data.shape[1:]),
        num_classes=data.num_classes if objective == "classification" else 0,
        width=width, feat_dim=feat_dim, dataset=dataset_spec,
    )  # fmt: skip
    if objective == "classification":
        trained: nn.Module = net
        loss = Classification(net, lambda x: net.features_model_space(x)[1], augment=augment)
    else:  # SimCLR's projection head g(·): Linear → ReLU → Linear on the features (§2.1)
        head = nn.Sequential(nn.Linear(feat_dim, feat_dim), nn.ReLU(), nn.Linear(feat_dim, 64))
        trained = nn.ModuleDict({"net": net, "head": head})
        loss = SimCLR(trained, lambda x: head(net.features_model_space(x)[0]), tau)
    opt = torch.optim.AdamW(trained.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    engine = Engine(loss, opt, generator=torch.Generator().manual_seed(seed), scheduler=sched)
    if objective == "simclr":  # an image twice in one batch would be its own negative
        batch_size = min(batch_size, len(train))
    fit(engine, InfiniteLoader(train, batch_size, seed=seed), steps, callback)
    net.eval()
    held_out = (
        {"test_accuracy": _accuracy(net, test)} if objective == "classification"
        else {"view_accuracy": view_accuracy(net, test, seed=seed)}
    )  # fmt: skip
    meta = {
        "kind": "feature_net",
        "name": "domain",
        "config": net.config,
        **held_out,
        "train": dict(steps=steps, batch_size=batch_size, seed=seed, lr=lr, augment=augment,
                      objective=objective, **({"tau": tau} if objective == "simclr" else {})),
    }  # fmt: skip
    save_tensors(Path(out_path), net.state_dict(), meta)
    return Path(out_path)
