"""The training loop, top to bottom: data → denoiser → AdamW + EMA → checkpoints and a JSONL log."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from difflab import checkpoint as ckpt
from difflab.config import Config, from_dict, to_toml
from difflab.data import Dataset, InfiniteLoader, load_dataset
from difflab.ema import EMA
from difflab.errors import UsageError
from difflab.losses import denoising_loss, sample_sigmas
from difflab.nets import NETS
from difflab.precond import Precond
from difflab.schedules import build_schedule


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


def build_denoiser(model: dict | object) -> Precond:
    """Precond(net, schedule, parameterization) from a resolved model config (needs `shape`)."""
    model = from_dict(model, type(Config().model)) if isinstance(model, dict) else model
    if not model.shape:
        raise UsageError("model.shape is empty; it is filled in from the data at training time")
    channels = model.shape[0]
    out = channels * (2 if model.learned_variance else 1)
    sizes = {"in_channels": channels, "out_channels": out}
    if len(model.shape) == 3:
        sizes["resolution"] = model.shape[-1]
    net = NETS.build(model.net, **sizes)
    return Precond(
        net, build_schedule(model.schedule), model.parameterization, model.sigma_data,
        model.learned_variance,
    )  # fmt: skip


def load_denoiser(path: str | Path) -> tuple[Precond, dict, dict]:
    """(EMA denoiser in eval mode, config dict, info) from a model checkpoint or run dir."""
    state, config, info = ckpt.load_model_file(Path(path))
    denoiser = build_denoiser(config["model"])
    missing, unexpected = denoiser.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UsageError(
            f"checkpoint {path} does not fit its own config (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); it was made by another difflab version or edited"
        )
    return denoiser.eval().requires_grad_(False), config, info


def prepare_run_dir(out: Path, resume: bool) -> None:
    """Refuse to overwrite: `out` must be new/empty, or an existing run when resuming."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory for the run")
    if resume:
        return
    if out.exists() and any(out.iterdir()):
        raise UsageError(
            f"--out {out} already holds files; pass --resume to continue that run or choose a new dir"
        )


def _rng_state(generator: torch.Generator) -> tuple[dict, dict]:
    tensors = {"rng.train": generator.get_state(), "rng.torch": torch.get_rng_state()}
    np_state = np.random.get_state()
    meta = {
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    return tensors, meta


def _set_rng_state(generator: torch.Generator, tensors: dict, meta: dict) -> None:
    generator.set_state(tensors["rng.train"])
    torch.set_rng_state(tensors["rng.torch"])
    kind, keys, *rest = meta["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


def save_training_state(run, step, cfg_dict, denoiser, ema, opt, generator, loader, info):
    """Write the model file (EMA weights + config) then its resume state, both atomically."""
    path = ckpt.model_path(run, step)
    rng_tensors, rng_meta = _rng_state(generator)
    tensors = {f"model.{k}": v for k, v in denoiser.state_dict().items()}
    opt_state = opt.state_dict()
    for idx, slots in opt_state["state"].items():
        tensors.update({f"optim.{idx}.{k}": torch.as_tensor(v) for k, v in slots.items()})
    tensors.update(rng_tensors)
    meta = {
        "kind": "state", "step": step, "rng": rng_meta, "loader": loader.state_dict(),
        "param_groups": opt_state["param_groups"], "config": cfg_dict,
    }  # fmt: skip
    ckpt.save_tensors(ckpt.state_path(path), tensors, meta)
    ckpt.save_model(path, ema.model.state_dict(), cfg_dict, {"step": step, **info})
    return path


def load_training_state(path, denoiser, ema, opt, generator, loader) -> int:
    """Restore everything saved by `save_training_state`; returns the step to continue from."""
    tensors, meta = ckpt.load_tensors(ckpt.state_path(path))
    weights, _, _ = ckpt.load_model_file(path)
    denoiser.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.model.load_state_dict(weights)
    slots: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            slots.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})
    _set_rng_state(generator, tensors, meta["rng"])
    loader.load_state_dict(meta["loader"])
    return int(meta["step"])


def _check_resume_config(saved: dict, cfg: dict, path: Path) -> None:
    for section in ("data", "model"):
        if saved[section] != cfg[section]:
            raise UsageError(
                f"--resume: the {section} config differs from the one in {path}; resume with the "
                "run's own config (RUN/config.toml) or start a new --out"
            )


def train(
    cfg: Config, out: str | Path, *, resume: bool = False, callback: Callable | None = None
) -> Path:
    """Train a denoiser as configured; returns the newest model checkpoint. callback(record)/step."""
    out = Path(out)
    prepare_run_dir(out, resume)
    torch.manual_seed(cfg.train.seed)
    dataset: Dataset = load_dataset(cfg.data.dataset)
    cfg.model.shape = list(dataset.shape)
    cfg_dict = cfg.to_dict()
    denoiser = build_denoiser(cfg.model).train()
    ema = EMA(denoiser, cfg.train.ema_decay)
    opt = torch.optim.AdamW(
        denoiser.parameters(), lr=cfg.train.lr, betas=tuple(cfg.train.betas),
        weight_decay=cfg.train.weight_decay,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(cfg.train.seed)
    loader = InfiniteLoader(
        dataset, cfg.train.batch_size, seed=cfg.train.seed, hflip=cfg.data.hflip
    )
    step = 0
    latest = ckpt.latest_checkpoint(out) if resume else None
    if latest is not None:
        _check_resume_config(ckpt.load_model_file(latest)[1], cfg_dict, latest)
        step = load_training_state(latest, denoiser, ema, opt, generator, loader)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.toml").write_text(to_toml(cfg_dict))

    log = open(out / "log.jsonl", "a")
    path, losses, t_log, start = latest, [], time.perf_counter(), time.perf_counter()
    images_per_step = cfg.train.batch_size * cfg.train.accumulate
    try:
        while step < cfg.train.steps:
            loss, grad_norm = train_step(cfg, denoiser, opt, loader, generator, step)
            ema.update(denoiser, step)
            step += 1
            losses.append(loss)
            record = {"step": step, "loss": loss, "grad_norm": grad_norm}
            if step % cfg.train.log_every == 0 or step == cfg.train.steps:
                now = time.perf_counter()
                record |= {
                    "loss": float(np.mean(losses)), "lr": opt.param_groups[0]["lr"],
                    "images_per_s": len(losses) * images_per_step / (now - t_log),
                    "seconds": now - start,
                }  # fmt: skip
                log.write(json.dumps(record) + "\n")
                log.flush()
                losses, t_log = [], now
            out_of_time = (
                cfg.train.max_seconds and time.perf_counter() - start > cfg.train.max_seconds
            )
            every = cfg.train.ckpt_every
            if step == cfg.train.steps or out_of_time or (every and step % every == 0):
                path = save_training_state(
                    out, step, cfg_dict, denoiser, ema, opt, generator, loader, {"loss": loss}
                )
                ckpt.prune(out, cfg.train.keep)
            if callback is not None:
                callback(record)
            if out_of_time:
                break
    finally:
        log.close()
    return path


def train_step(cfg: Config, denoiser, opt, loader, generator, step: int) -> tuple[float, float]:
    """One optimizer step over `accumulate` micro-batches (Ho et al. 2020, Algorithm 1)."""
    warm = cfg.train.warmup
    for group in opt.param_groups:
        group["lr"] = cfg.train.lr * (min(1.0, (step + 1) / warm) if warm else 1.0)
    opt.zero_grad(set_to_none=True)
    total = 0.0
    for _ in range(cfg.train.accumulate):
        x0, _labels = next(loader)  # [B, ...] model space
        sigma = sample_sigmas(cfg.train.sigma_density, denoiser.schedule, len(x0), generator)
        noise = torch.randn(x0.shape, generator=generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.train.bf16):
            loss = denoising_loss(denoiser, x0, sigma, noise).mean() / cfg.train.accumulate
        loss.backward()
        total += loss.item()
    clip = cfg.train.grad_clip if cfg.train.grad_clip > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(denoiser.parameters(), clip).item()
    if not (math.isfinite(total) and math.isfinite(grad_norm)):
        raise TrainingError(
            f"non-finite loss ({total}) or gradient norm ({grad_norm}) at step {step + 1}; "
            "lower train.lr or disable train.bf16; the last good checkpoint is kept"
        )
    opt.step()
    return total, grad_norm
