"""The training loop, top to bottom: data → objective → AdamW + EMA (training.engine) →
checkpoints and a JSONL log."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from difflab.conditioning.base import resolve_cond
from difflab.core.config import Config, to_toml
from difflab.core.errors import UsageError
from difflab.core.precond import Precond
from difflab.core.schedules import discretize
from difflab.data.datasets import Dataset, load_dataset
from difflab.data.latents import source_name
from difflab.data.loader import InfiniteLoader
from difflab.samplers.base import SAMPLERS
from difflab.storage import checkpoint as ckpt
from difflab.storage.codecs import build_codec, copy_codec, resolve_codec, run_codec_spec
from difflab.storage.latent_cache import check_cache
from difflab.storage.lock import LOCK_NAME, run_lock
from difflab.storage.models import build_denoiser
from difflab.training import checkpointing
from difflab.training import dist as dist
from difflab.training import resume as resume_state
from difflab.training.ema import EMA
from difflab.training.encoded import EncodedBatches
from difflab.training.engine import Engine, adamw, warmup
from difflab.training.objectives import build_objective


def prepare_run_dir(out: Path, resume: bool) -> None:
    """Refuse to overwrite: `out` must be new/empty, or an existing run when resuming."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"`out` {out} is a file; give a directory for the run")
    if resume:
        return
    if out.exists() and any(p.name != LOCK_NAME for p in out.iterdir()):
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
    evaluator(ema_denoiser, shape, sample_cfg, device, codec=codec) -> {"eval_metric", "eval_fd",
    "eval_n"} runs on the main rank every train.eval_every steps (difflab.evaluation.in_loop
    builds it); shape is the pixel shape, codec the model's.
    """
    world = dist.setup(cfg.train.device)
    try:
        with contextlib.ExitStack() as stack:
            if world.main:  # one writer per run dir (storage.lock), held until training ends
                prepare_run_dir(Path(out), resume=True)  # a file, not a dir: say so first
                stack.enter_context(run_lock(out))
            return _train(
                cfg, Path(out), world, resume, callback or (lambda record: None), evaluator
            )
    finally:
        dist.teardown(world)


def resolve_model(cfg: Config, dataset: Dataset, run_dir: Path | None = None) -> None:
    """Fill model.shape (pixels), model.codec (a codec file: absolute path + sha256) and
    model.cond from the training data; a latent cache must come from the model's codec file."""
    latents = dataset.kind == "latents"
    cfg.model.shape = list(dataset.meta["image_shape"] if latents else dataset.shape)
    cfg.model.codec = resolve_codec(cfg.model.codec, cfg.model.shape, run_dir)
    if latents:
        check_cache(dataset, cfg.model.codec)
    name = source_name(dataset, cfg.data.dataset["name"])
    cfg.model.cond = resolve_cond(cfg.model.cond, dataset, name)


def saved_config(cfg: Config) -> dict:
    """The config a run stores: a codec file as the run's own copy (relative, + sha256)."""
    cfg_dict = cfg.to_dict()
    cfg_dict["model"]["codec"] = run_codec_spec(cfg_dict["model"]["codec"])
    return cfg_dict


def build_engine(cfg: Config, denoiser: Precond, world: dist.World) -> Engine:
    """The objective named by train.loss (σ from train.sigma_density) under AdamW + warm-up + EMA."""
    objective = build_objective(cfg.train.loss, denoiser, density=cfg.train.sigma_density)
    t = cfg.train
    opt = adamw(denoiser.parameters(), t.adamw, lr=t.lr, betas=tuple(t.betas),
                weight_decay=t.weight_decay)  # fmt: skip
    return Engine(
        objective, opt, generator=torch.Generator().manual_seed(t.seed), world=world,
        ema=EMA(denoiser, t.ema_decay), scheduler=warmup(opt, t.warmup, t.steps, t.lr_decay),
        accumulate=t.accumulate,
        grad_clip=t.grad_clip, bf16=t.bf16, on_nonfinite=t.on_nonfinite, advice=NONFINITE_ADVICE,
    )  # fmt: skip


NONFINITE_ADVICE = (
    'lower train.lr, disable train.bf16 or set train.on_nonfinite="skip"; the last good '
    "checkpoint is kept"
)


def _train(
    cfg: Config, out: Path, world: dist.World, resume: bool, callback: Callable, evaluator
) -> Path:
    if world.main:
        prepare_run_dir(out, resume)
        stale = ckpt.remove_stale_tmp(out)
        if stale:
            callback({"note": f"removed {len(stale)} half-written file(s) left by a killed run: "
                              f"{', '.join(p.name for p in stale[:3])}"})  # fmt: skip
    torch.manual_seed(cfg.train.seed)
    dataset: Dataset = load_dataset(cfg.data.dataset)
    resolve_model(cfg, dataset, out)
    cfg_dict = saved_config(cfg)
    denoiser = build_denoiser(cfg.model).to(world.device).train()
    engine = build_engine(cfg, denoiser, world)
    global_batch = cfg.train.batch_size * world.size  # per micro-batch, all ranks together
    loader = InfiniteLoader(dataset, global_batch, seed=cfg.train.seed, hflip=cfg.data.hflip)
    codec = build_codec(cfg.model.codec)
    # model-space x0: a latent cache is already encoded, pixels are encoded batch by batch
    batches = loader if dataset.kind == "latents" else EncodedBatches(loader, codec)
    parts = {"model": denoiser, "optim": resume_state.OptimizerState(engine.opt),
             "sched": engine.scheduler, "rng": resume_state.RNGState(engine.generator),
             "loader": loader}  # fmt: skip
    step, path = 0, None
    if resume:
        path, state, notes = resume_state.newest_valid(out)
        for note in notes:
            callback({"note": note})
        if state is not None:
            _check_resume_config(state[1]["config"], cfg_dict, path)
            step = resume_state.restore(state, parts, engine.objective, engine.ema.model)
            callback({"note": f"resumed from {path} (step {step})"})
        else:
            callback({"note": f"no valid checkpoint in {out}; starting from step 0"})
    check_specs(cfg, denoiser)
    evaluator = evaluator if world.main and cfg.train.eval_every else None
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
        copy_codec(cfg.model.codec, out)  # the run carries its codec file (RUN/codec.safetensors)
        (out / "config.toml").write_text(to_toml(cfg_dict))
        truncate_log(out / "log.jsonl", step)

    log = open(out / "log.jsonl", "a") if world.main else None
    losses, t_log, start = [], time.perf_counter(), time.perf_counter()
    best = checkpointing.BestTracker(out, step)  # restored on resume
    try:
        while step < cfg.train.steps:
            result = engine.step(step, batches)
            step += 1
            losses.append(result.loss)
            record = {"step": step, "loss": result.loss, "grad_norm": result.grad_norm}
            if not result.applied:
                record["skipped"] = True
                callback({"note": f"step {step}: non-finite loss or gradient, update skipped"})
            if step % cfg.train.log_every == 0 or step == cfg.train.steps:
                now = time.perf_counter()
                record |= {
                    "loss": float(np.mean(losses)), "lr": engine.opt.param_groups[0]["lr"],
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
                    checkpointing.write(out, step, cfg_dict, parts, engine.objective,
                                        engine.ema.model, {"loss": record["loss"]}, best,
                                        cfg.train.keep)  # fmt: skip
            if evaluator is not None and step % cfg.train.eval_every == 0:
                scores = {
                    "step": step,
                    **evaluator(engine.ema.model, tuple(cfg.model.shape), cfg.sample,
                                world.device, codec=codec),
                }
                log.write(json.dumps(scores) + "\n")
                log.flush()
                callback({"note": f"step {step}: {scores['eval_metric']} (n={scores['eval_n']}) "
                                  f"= {scores['eval_fd']:.4g}"})  # fmt: skip
            callback(record)
            if out_of_time:
                break
    finally:
        if log is not None:
            log.close()
    return path


def check_specs(cfg: Config, denoiser: Precond) -> None:
    """Resolve the sampling choices now, so a bad name fails before any file is written (the
    objective and its σ density were checked when they were built)."""
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


def truncate_log(path: Path, step: int) -> None:
    """Drop log records past `step` (steps a resumed run is about to redo)."""
    if path.exists():
        keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
        ckpt.atomic_write(path, lambda tmp: Path(tmp).write_text("".join(k + "\n" for k in keep)))
