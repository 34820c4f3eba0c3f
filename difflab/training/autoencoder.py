"""Train a latent-diffusion first stage (Rombach et al. 2022 §3, App. G): a KL or VQ autoencoder
through the shared engine, with resumable atomic checkpoints and a JSONL log; at the end the latent
scale and shift are computed from the training data and the calibrated codec file is written.

Run dir: checkpoints/step-*.safetensors (codec files, uncalibrated) + their .state files,
log.jsonl, config.json and autoencoder.safetensors (calibrated: use it as model.codec.ckpt).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from difflab.core.errors import UsageError
from difflab.data.datasets import load_dataset
from difflab.data.loader import InfiniteLoader
from difflab.data.splits import holdout_split
from difflab.storage import checkpoint as ckpt
from difflab.storage.codecs import build_codec, save_codec
from difflab.training import resume as resume_state
from difflab.training.dist import World, pick_device
from difflab.training.engine import Engine
from difflab.training.loop import prepare_run_dir, truncate_log
from difflab.training.objectives import build_objective

FINAL = "autoencoder.safetensors"


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """Peak signal-to-noise ratio per image [B] in dB of pixels in [-1, 1] (peak-to-peak 2)."""
    mse = (x.float() - y.float()).square().flatten(1).mean(1).clamp(min=1e-12)
    return 10.0 * torch.log10(4.0 / mse)


@torch.no_grad()
def reconstruct(codec, pixels: Tensor, batch_size: int = 128) -> Tensor:
    """decode(encode(pixels)) in batches, clamped to [-1, 1]."""
    device = getattr(codec, "scale", torch.empty(0)).device
    parts = [codec.decode(codec.encode(pixels[i : i + batch_size].to(device))).clamp(-1, 1).cpu()
             for i in range(0, len(pixels), batch_size)]  # fmt: skip
    return torch.cat(parts)


def train_autoencoder(
    dataset_spec: str | dict[str, Any],
    out: str | os.PathLike,
    *,
    codec: str = "kl",
    factor: int = 4,
    z_channels: int = 4,
    net: dict[str, Any] | None = None,  # nets.autoencoder options: ch, channel_mult, ...
    codec_options: dict[str, Any] | None = None,  # e.g. num_codes, decay for "vq"
    loss: dict[str, Any] | None = None,  # objective options: recon, kl_weight, disc, ...
    perceptual: nn.Module | None = None,  # frozen feature layers (nn.Sequential)
    perceptual_source: str | None = None,  # where `perceptual` came from, recorded in the config
    steps: int = 1000,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    test_fraction: float = 0.1,
    calibration: int = 512,  # training images the latent scale is computed over
    ckpt_every: int = 0,
    keep: int = 2,
    resume: bool = False,
    device: str = "auto",
    callback: Callable[[dict], None] | None = None,
) -> Path:
    """Train, calibrate the latent scale, write `out`/autoencoder.safetensors; returns its path.
    callback gets {"step", "loss", ...logs} after each step and {"note": text} for events."""
    callback = callback or (lambda record: None)
    out = Path(out)
    prepare_run_dir(out, resume)
    data = load_dataset(dataset_spec)
    if data.kind != "image":
        raise UsageError(f"an autoencoder needs an image dataset; {dataset_spec!r} is not one")
    train, test = holdout_split(data, test_fraction)
    spec = {"name": codec, "channels": data.shape[0], "z_channels": z_channels, "factor": factor,
            "net": dict(net or {}), **(codec_options or {})}  # fmt: skip
    config = {"data": dataset_spec, "codec": spec, "loss": dict(loss or {}),
              "perceptual": perceptual_source, "image_shape": list(data.shape),
              "train": dict(steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                            test_fraction=test_fraction, calibration=calibration)}  # fmt: skip
    config = json.loads(json.dumps(config))  # as stored
    world = World(device=pick_device(device))
    torch.manual_seed(seed)
    model = build_codec(spec)
    if not isinstance(model, nn.Module) or not hasattr(model, "calibrate"):
        raise UsageError(f"`codec` {codec!r} has nothing to train; use 'kl' or 'vq'")
    model.latent_shape(data.shape)  # images of the wrong size fail here
    model = model.to(world.device).train()
    objective = build_objective({"name": "autoencoder", **(loss or {})}, model,
                                perceptual=perceptual)  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.9))  # LDM's first stage
    g = torch.Generator().manual_seed(seed)
    engine = Engine(objective, opt, generator=g, world=world,
                    advice="lower `lr`; the last good checkpoint is kept")  # fmt: skip
    loader = InfiniteLoader(train, batch_size, seed=seed)
    parts = {"model": model, "optim": resume_state.OptimizerState(opt),
             "rng": resume_state.RNGState(g), "loader": loader}  # fmt: skip
    step = _resume(out, config, parts, objective, callback) if resume else 0
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    truncate_log(out / "log.jsonl", step)
    with open(out / "log.jsonl", "a") as log:
        while step < steps:
            result = engine.step(step, loader)
            step += 1
            record = {"step": step, "loss": result.loss, "grad_norm": result.grad_norm,
                      **result.logs}  # fmt: skip
            log.write(json.dumps(record) + "\n")
            log.flush()
            if step == steps or (ckpt_every and step % ckpt_every == 0):
                _save(out, step, config, parts, objective, model, data.shape)
                ckpt.prune(out, keep)
            callback(record)
    model.eval()
    shift, scale = model.calibrate(train.to_model(train.x[i : i + 128])
                                   for i in range(0, min(calibration, len(train)), 128))  # fmt: skip
    held_out = test.to_model(test.x[:256])
    value = psnr(reconstruct(model, held_out), held_out).mean().item()
    info = {"step": step, "calibrated": True, "shift": shift, "scale": scale,
            "held_out_psnr": value, "training": config}  # fmt: skip
    return save_codec(out / FINAL, model, spec, data.shape, info)


def _save(out: Path, step: int, config: dict, parts: dict, objective, model, shape) -> None:
    """Resume state, then the (uncalibrated) codec file, both atomically."""
    path = ckpt.model_path(out, step)
    tensors, meta = resume_state.flatten(parts, objective)
    meta |= {"kind": "state", "format": resume_state.FORMAT, "step": step, "config": config}
    ckpt.save_tensors(ckpt.state_path(path), tensors, meta)
    save_codec(path, model, config["codec"], shape, {"step": step, "calibrated": False})


def _without_steps(config: dict | None) -> dict | None:
    """The config a resumed run must match (it may train for more `steps`)."""
    if not isinstance(config, dict):
        return config
    return {**config, "train": {k: v for k, v in config["train"].items() if k != "steps"}}


def _resume(out: Path, config: dict, parts: dict, objective, callback) -> int:
    """Restore the newest checkpoint whose state loads; its step (0: none)."""
    for path in reversed(ckpt.list_checkpoints(out)):
        try:
            tensors, meta = ckpt.load_tensors(ckpt.state_path(path))
        except UsageError as err:
            callback({"note": f"skipped {path.name}: {err}"})
            continue
        if _without_steps(meta.get("config")) != _without_steps(config):
            raise UsageError(
                f"`resume`: the options differ from those of {path}; resume with the run's own "
                f"options ({out / 'config.json'}) or start a new `out`"
            )
        resume_state.unflatten(tensors, {k: v for k, v in meta.items() if isinstance(v, dict)
                                         and k != "config"}, parts, objective)  # fmt: skip
        callback({"note": f"resumed from {path} (step {meta['step']})"})
        return int(meta["step"])
    callback({"note": f"no valid checkpoint in {out}; starting from step 0"})
    return 0
