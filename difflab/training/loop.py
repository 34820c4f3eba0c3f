"""The training loop, top to bottom: data → denoiser → AdamW + EMA → checkpoints and a JSONL log."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP

from difflab.conditioning.base import drop, resolve_cond
from difflab.core.config import Config, to_toml
from difflab.core.errors import TrainingError, UsageError
from difflab.core.precond import Precond
from difflab.core.schedules import discretize
from difflab.core.types import net_cond
from difflab.data.datasets import Dataset, load_dataset
from difflab.data.loader import InfiniteLoader
from difflab.samplers.base import SAMPLERS
from difflab.storage import checkpoint as ckpt
from difflab.storage.models import build_denoiser
from difflab.training import dist as dist
from difflab.training import resume as resume_state
from difflab.training.ema import EMA
from difflab.training.importance import build_sampler
from difflab.training.losses import check_loss, compute_loss, sample_sigmas


def prepare_run_dir(out: Path, resume: bool) -> None:
    """Refuse to overwrite: `out` must be new/empty, or an existing run when resuming."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"`out` {out} is a file; give a directory for the run")
    if resume:
        return
    if out.exists() and any(out.iterdir()):
        raise UsageError(
            f"`out` {out} already holds files; pass `resume=True` to continue it or pick a new dir"
        )


def _check_resume_config(saved: dict, cfg: dict, path: Path) -> None:
    for section in ("data", "model"):
        if saved[section] != cfg[section]:
            raise UsageError(
                f"`resume`: the {section} config differs from the one in {path}; resume with the "
                "run's own config (RUN/config.toml) or start a new `out`"
            )


class LossModule(nn.Module):
    """Per-sample denoising loss as a module, so DistributedDataParallel can wrap the whole step."""

    def __init__(self, denoiser: Precond, loss: dict | str = "denoising"):
        super().__init__()
        self.denoiser = denoiser
        self.loss = loss  # train.loss spec

    def forward(self, x0: Tensor, sigma: Tensor, noise: Tensor, cond: dict) -> Tensor:
        return compute_loss(self.loss, self.denoiser, x0, sigma, noise, cond)  # [B]


def train(
    cfg: Config,
    out: str | Path,
    *,
    resume: bool = False,
    callback: Callable | None = None,
    evaluator: Callable | None = None,
) -> Path:
    """Train as configured (torchrun-aware); returns the newest model checkpoint.

    callback(record) gets {"step", "loss", ...} after every step and {"note": text} for events.
    evaluator(ema_denoiser, shape, sample_cfg, device) -> {"eval_metric", "eval_fd", "eval_n"} runs
    on the main rank every train.eval_every steps (difflab.evaluation.in_loop builds it).
    """
    world = dist.setup(cfg.train.device)
    try:
        return _train(
            cfg, Path(out), world, resume, callback or (lambda record: None), evaluator
        )
    finally:
        dist.teardown(world)


def _train(
    cfg: Config, out: Path, world: dist.World, resume: bool, callback: Callable, evaluator
) -> Path:
    if world.main:
        prepare_run_dir(out, resume)
    torch.manual_seed(cfg.train.seed)
    dataset: Dataset = load_dataset(cfg.data.dataset)
    cfg.model.shape = list(dataset.shape)
    cfg.model.cond = resolve_cond(cfg.model.cond, dataset, cfg.data.dataset["name"])
    cfg_dict = cfg.to_dict()
    denoiser = build_denoiser(cfg.model).to(world.device).train()
    ema = EMA(denoiser, cfg.train.ema_decay)
    opt = torch.optim.AdamW(
        denoiser.parameters(), lr=cfg.train.lr, betas=tuple(cfg.train.betas),
        weight_decay=cfg.train.weight_decay,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(cfg.train.seed)
    global_batch = cfg.train.batch_size * world.size  # per micro-batch, all ranks together
    loader = InfiniteLoader(dataset, global_batch, seed=cfg.train.seed, hflip=cfg.data.hflip)
    step, path = 0, None
    importance = build_sampler(cfg.train.sigma_density, denoiser.schedule)
    if importance is not None and world.size > 1:
        raise UsageError(
            'sigma_density "importance" runs in one process; use "discrete" with torchrun'
        )
    if resume:
        path, state, notes = resume_state.newest_valid(out)
        for note in notes:
            callback({"note": note})
        if state is not None:
            _check_resume_config(state[1]["config"], cfg_dict, path)
            step = resume_state.restore(state, denoiser, ema, opt, generator, loader, importance)
            callback({"note": f"resumed from {path} (step {step})"})
        else:
            callback({"note": f"no valid checkpoint in {out}; starting from step 0"})
    check_specs(cfg, denoiser)
    evaluator = evaluator if world.main and cfg.train.eval_every else None
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.toml").write_text(to_toml(cfg_dict))
        _truncate_log(out / "log.jsonl", step)
    loss_module = LossModule(denoiser, cfg.train.loss)
    step_module = DDP(loss_module) if world.size > 1 else loss_module

    log = open(out / "log.jsonl", "a") if world.main else None
    losses, t_log, start = [], time.perf_counter(), time.perf_counter()
    best = math.inf
    try:
        while step < cfg.train.steps:
            loss, grad_norm, ok = train_step(
                cfg, world, step_module, opt, loader, generator, step, importance
            )
            if ok:
                ema.update(denoiser, step)
            step += 1
            losses.append(loss)
            record = {"step": step, "loss": loss, "grad_norm": grad_norm}
            if not ok:
                record["skipped"] = True
                callback({"note": f"step {step}: non-finite loss or gradient, update skipped"})
            if step % cfg.train.log_every == 0 or step == cfg.train.steps:
                now = time.perf_counter()
                record |= {
                    "loss": float(np.mean(losses)), "lr": opt.param_groups[0]["lr"],
                    "images_per_s": len(losses) * global_batch * cfg.train.accumulate / (now - t_log),
                    "seconds": now - start,
                }  # fmt: skip
                if log is not None:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                losses, t_log = [], now
            out_of_time = bool(cfg.train.max_seconds) and now_since(start) > cfg.train.max_seconds
            out_of_time = _agree(world, out_of_time)
            every = cfg.train.ckpt_every
            if step == cfg.train.steps or out_of_time or (every and step % every == 0):
                path = ckpt.model_path(out, step)
                if world.main:
                    resume_state.save(out, step, cfg_dict, denoiser, ema, opt, generator, loader,
                                      {"loss": record["loss"]}, importance)  # fmt: skip
                    if record["loss"] < best:
                        best = record["loss"]
                        ckpt.mark_best(path)
                    ckpt.prune(out, cfg.train.keep)
            if evaluator is not None and step % cfg.train.eval_every == 0:
                result = {
                    "step": step,
                    **evaluator(ema.model, dataset.shape, cfg.sample, world.device),
                }
                log.write(json.dumps(result) + "\n")
                log.flush()
                callback({"note": f"step {step}: {result['eval_metric']} (n={result['eval_n']}) "
                                  f"= {result['eval_fd']:.4g}"})  # fmt: skip
            callback(record)
            if out_of_time:
                break
    finally:
        if log is not None:
            log.close()
    return path


def check_specs(cfg: Config, denoiser: Precond) -> None:
    """Resolve every remaining registry choice now, so a bad name fails before any file is written."""
    sample_sigmas(cfg.train.sigma_density, denoiser.schedule, 1, torch.Generator())
    check_loss(cfg.train.loss, denoiser, cfg.train.sigma_density)
    spec = dict(cfg.sample.sampler)
    SAMPLERS.check_options(spec.pop("name"), spec, skip=3)
    discretize(denoiser.schedule, cfg.sample.discretization, cfg.sample.steps)


def now_since(start: float) -> float:
    return time.perf_counter() - start


def _agree(world: dist.World, flag: bool) -> bool:
    """True on every rank if it is true on rank 0 (so all ranks stop at the same step)."""
    if world.size == 1:
        return flag
    t = torch.tensor([float(flag)], device=world.device)
    torch.distributed.broadcast(t, 0)
    return bool(t.item())


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records past `step` (steps a resumed run is about to redo)."""
    if path.exists():
        keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
        ckpt.atomic_write(path, lambda tmp: Path(tmp).write_text("".join(k + "\n" for k in keep)))


def train_step(cfg: Config, world, step_module, opt, loader, generator, step: int, importance=None):
    """One optimizer step over `accumulate` micro-batches (Ho et al. 2020, Algorithm 1).

    Every rank draws the same global batch, σ and noise, then keeps its own shard, so N ranks
    with batch B equal one process with batch N·B. With an `importance` sampler, t ~ p_t, the
    loss is weighted by 1/(T·p_t) and the per-sample losses are fed back (Nichol & Dhariwal 2021,
    §3.3). Returns (loss, grad norm, applied).
    """
    warm = cfg.train.warmup
    for group in opt.param_groups:
        group["lr"] = cfg.train.lr * (min(1.0, (step + 1) / warm) if warm else 1.0)
    opt.zero_grad(set_to_none=True)
    total = torch.zeros((), device=world.device)
    schedule = step_module_denoiser(step_module).schedule
    conditioner = step_module_denoiser(step_module).conditioner
    for micro in range(cfg.train.accumulate):
        x0, labels = next(loader)  # [N·B, ...] model space, [N·B] or None
        if importance is not None:
            t, weight = importance.sample(len(x0), generator)  # [N·B]
            sigma = schedule.sigmas[t].float()
        else:
            sigma = sample_sigmas(cfg.train.sigma_density, schedule, len(x0), generator)  # [N·B]
        noise = torch.randn(x0.shape, generator=generator)
        cond = {}
        if conditioner is not None:  # CFG training: drop to ∅ with p_uncond (Ho & Salimans 2022)
            cond = drop(
                conditioner.for_training(x0, labels, generator), conditioner.p_uncond, generator
            )
            cond = {k: world.shard(v).to(world.device) for k, v in net_cond(cond).items()}
        x0, sigma, noise = (world.shard(t).to(world.device) for t in (x0, sigma, noise))
        last = micro == cfg.train.accumulate - 1
        sync = contextlib.nullcontext() if world.size == 1 or last else step_module.no_sync()
        with sync:
            with torch.autocast(world.device.type, dtype=torch.bfloat16, enabled=cfg.train.bf16):
                per_sample = step_module(x0, sigma, noise, cond)  # [B]
                if importance is not None:
                    importance.update(t, per_sample)
                    per_sample = per_sample * weight.to(per_sample)
                loss = per_sample.mean() / cfg.train.accumulate
            loss.backward()
        total += loss.detach()
    if world.size > 1:
        torch.distributed.all_reduce(total)
        total /= world.size
    clip = cfg.train.grad_clip if cfg.train.grad_clip > 0 else math.inf
    params = step_module_denoiser(step_module).parameters()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, clip).item()
    total = total.item()
    if math.isfinite(total) and math.isfinite(grad_norm):
        opt.step()
        return total, grad_norm, True
    if cfg.train.on_nonfinite == "skip":
        opt.zero_grad(set_to_none=True)
        return total, grad_norm, False
    raise TrainingError(
        f"non-finite loss ({total}) or gradient norm ({grad_norm}) at step {step + 1}; lower "
        'train.lr, disable train.bf16 or set train.on_nonfinite="skip"; the last good '
        "checkpoint is kept"
    )


def step_module_denoiser(step_module: nn.Module) -> Precond:
    """The Precond inside a LossModule, DDP-wrapped or not."""
    inner = step_module.module if isinstance(step_module, DDP) else step_module
    return inner.denoiser
