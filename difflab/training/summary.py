"""What a training run is about to do, as data (the CLI prints it): the data found, the model,
where it runs, the budget, the run dir and where a resumed run continues from."""

from __future__ import annotations

from pathlib import Path

import torch

from difflab.core.config import Config
from difflab.core.precond import Precond
from difflab.data.datasets import Dataset
from difflab.training.dist import World


def data_summary(dataset: Dataset, cfg: Config) -> dict:
    """{"name", "kind", "n", "shape", "channels", "classes", "class_names", "held_out"} of the
    training data; shape is the pixel shape (a latent cache's images), held_out the count a
    dataset set aside for evaluation (its meta["held_out"], 0 when none)."""
    latents = dataset.kind == "latents"
    shape = list(dataset.meta["image_shape"] if latents else dataset.shape)
    return {
        "name": cfg.data.dataset.get("name", "?"), "kind": dataset.kind, "n": len(dataset),
        "shape": shape, "channels": shape[0] if len(shape) == 3 else 0,
        "classes": dataset.num_classes if dataset.labels is not None else 0,
        "class_names": list(dataset.class_names or []),
        "held_out": int(dataset.meta.get("held_out", 0)),
    }  # fmt: skip


def model_summary(denoiser: Precond, cfg: Config) -> dict:
    """{"parameters", "net", "parameterization", "schedule", "sigma_min", "sigma_max", "cond",
    "codec", "loss", "sigma_density"} of the model being trained."""
    schedule = denoiser.schedule
    return {
        "parameters": sum(p.numel() for p in denoiser.parameters()),
        "net": cfg.model.net.get("name", "?"), "parameterization": cfg.model.parameterization,
        "schedule": cfg.model.schedule.get("name", "?"),
        "sigma_min": schedule.sigma_min, "sigma_max": schedule.sigma_max,
        "cond": (cfg.model.cond or {}).get("name", "none"),
        "codec": cfg.model.codec.get("name", "file") if cfg.model.codec else "identity",
        "loss": cfg.train.loss.get("name", "?"),
        "sigma_density": cfg.train.sigma_density.get("name", "?"),
    }  # fmt: skip


def run_summary(cfg: Config, dataset: Dataset, denoiser: Precond, world: World, out: Path,
                step: int, seconds: float, resumed_from: Path | None) -> dict:  # fmt: skip
    """The {"event": "start"} record: data, model, device, budget and run dir; `step` and
    `seconds` are where a resumed run continues from (0 for a new run)."""
    t = cfg.train
    return {
        "event": "start", "rank": world.rank,
        "data": data_summary(dataset, cfg), "model": model_summary(denoiser, cfg),
        "device": str(world.device), "world_size": world.size,
        "threads": torch.get_num_threads(), "dtype": "bf16 autocast" if t.bf16 else "float32",
        "steps": t.steps, "max_seconds": t.max_seconds, "batch_size": t.batch_size,
        "accumulate": t.accumulate, "ckpt_every": t.ckpt_every, "run": str(out),
        "resumed_step": step, "resumed_seconds": seconds,
        "resumed_from": None if resumed_from is None else str(resumed_from),
    }  # fmt: skip
