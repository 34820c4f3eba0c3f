"""Training you can watch: sample grids and the loss plot written into the run dir while it trains
(a training hook, built by `progress_writer` from the config; it prints nothing)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

from difflab.core.config import Config
from difflab.core.files import atomic_write
from difflab.core.imageio import image_grid
from difflab.evaluation.plots import plot_loss, plot_points
from difflab.inference.pipeline import Pipeline

MAX_COLUMNS = 16  # a class-conditional grid shows the first 16 classes, one per column


def grid_layout(n: int, num_classes: int) -> tuple[list[int], int, int]:
    """(classes cycled over the samples, number of samples, columns): one column per class for a
    class-conditional model (rows of ⌈n / K⌉), else a square-ish grid of n."""
    if num_classes:
        cols = min(num_classes, MAX_COLUMNS)
        rows = max(1, math.ceil(n / cols))
        return list(range(cols)), rows * cols, cols
    return [], n, math.ceil(math.sqrt(n))


class ProgressWriter:
    """At each call: RUN/progress/grid_{step:08d}.png, `n` samples of the EMA denoiser with the
    config's default sampler and a fixed seed (so successive grids show the same noise), and
    RUN/loss.png from RUN/log.jsonl, each written atomically. Sampling runs under its own seeds
    and every RNG is restored, so training goes on exactly as without it."""

    def __init__(self, run: str | Path, cfg: Config, n: int, seed: int = 0):
        self.run, self.n, self.seed = Path(run), n, seed
        self.sample_cfg = dataclasses.asdict(cfg.sample)

    def __call__(self, step: int, denoiser, shape: tuple[int, ...], device,
                 codec=None) -> list[Path]:  # fmt: skip
        """Write the step's grid of pixel-`shape` samples (none when the model needs user input
        to sample, e.g. images, or its samples are vectors other than 2-D points, e.g. a
        prior's embeddings) and the loss plot; returns the paths written."""
        written = []
        conditioner = getattr(denoiser, "conditioner", None)
        drawable = len(shape) == 3 or tuple(shape) == (2,)  # images or 2-D points
        if drawable and not getattr(conditioner, "needs_user_input", False):
            written.append(self.grid(step, denoiser, shape, torch.device(device), codec))
        log = self.run / "log.jsonl"
        if log.is_file() and any(line.strip() for line in log.read_text().splitlines()):
            loss = self.run / "loss.png"
            atomic_write(loss, lambda tmp: plot_loss(log, tmp))
            written.append(loss)
        return written

    def grid(self, step: int, denoiser, shape: tuple[int, ...], device: torch.device,
             codec) -> Path:  # fmt: skip
        """The grid of EMA samples at `step` (a scatter for a 2-D point model)."""
        config = {"model": {"shape": list(shape)}, "sample": self.sample_cfg}
        pipe = Pipeline(denoiser, config, codec=codec)
        k = getattr(pipe.conditioner, "num_classes", 0) if "classes" in getattr(
            pipe.conditioner, "takes", ()) else 0  # fmt: skip
        classes, n, cols = grid_layout(self.n, k)
        cuda = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):  # the training RNGs stay as they were
            images = pipe(n, seed=self.seed, classes=classes, device=device).numpy()
        path = self.run / "progress" / f"{'grid' if pipe.is_image else 'points'}_{step:08d}.png"
        if pipe.is_image:
            atomic_write(path, lambda tmp: image_grid(
                images, cols, upscale=max(1, 32 // images.shape[-1])).save(tmp, format="PNG"))
        else:
            atomic_write(path, lambda tmp: plot_points(images, tmp))
        return path


def progress_writer(cfg: Config, run: str | Path) -> ProgressWriter | None:
    """The grid + loss-plot hook `cfg.train` asks for (None when train.grid_n = 0)."""
    if not cfg.train.grid_n:
        return None
    return ProgressWriter(run, cfg, cfg.train.grid_n, cfg.sample.seed)
