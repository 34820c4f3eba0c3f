"""PNG plots for users (loss curves, 2-D point clouds), drawn with matplotlib's Agg backend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_log(path: str | Path) -> list[dict]:
    """Records of a JSONL training log."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_loss(log_path: str | Path, out: str | Path, ylabel: str = "denoising loss") -> Path:
    """Training loss vs step (log scale) with a smoothed curve."""
    plt = pyplot()
    records = [r for r in read_log(log_path) if "loss" in r]
    steps = np.array([r["step"] for r in records])
    loss = np.array([r["loss"] for r in records])
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, loss, color="tab:blue", alpha=0.35, lw=1, label="loss")
    if len(loss) >= 5:
        k = max(2, len(loss) // 20)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, color="tab:blue", lw=2, label=f"mean of {k}")
    ax.set(xlabel="step", ylabel=ylabel, yscale="log", title="training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, format="png")
    plt.close(fig)
    return Path(out)


def plot_points(samples: np.ndarray, out: str | Path, reference: np.ndarray | None = None) -> Path:
    """Scatter of 2-D samples [N, 2] over the reference data."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4, 4), dpi=120)
    if reference is not None:
        ax.scatter(*reference.T, s=2, color="0.7", label="data")
    ax.scatter(*samples.T, s=2, color="tab:red", label="samples")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", markerscale=4)
    fig.tight_layout()
    fig.savefig(out, format="png")
    plt.close(fig)
    return Path(out)


def plot_trajectory(images: np.ndarray, sigmas: list[float], out: str | Path) -> Path:
    """One row of uint8 images [K, C, H, W] (x̂0 at each step), each titled with its σ."""
    plt = pyplot()
    k = len(images)
    fig, axes = plt.subplots(1, k, figsize=(0.9 * k, 1.3), dpi=120, squeeze=False)
    for ax, img, sigma in zip(axes[0], images, sigmas, strict=True):
        ax.imshow(img.transpose(1, 2, 0).squeeze(-1) if img.shape[0] == 1 else img.transpose(1, 2, 0),
                  cmap="gray", vmin=0, vmax=255, interpolation="nearest")  # fmt: skip
        ax.set_title(f"σ={sigma:.2g}", fontsize=6)
        ax.axis("off")
    fig.suptitle("denoiser estimate x̂0 along the sampling trajectory", fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)
