"""The training loop, top to bottom: data → objective → AdamW + EMA (training.engine) →
checkpoints and a JSONL log."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from difflab.conditioning.base import resolve_cond
from difflab.core.config import Config, to_toml
from difflab.core.errors import TrainingError, UsageError
from difflab.core.precond import Precond
from difflab.core.schedules import discretize
from difflab.data.datasets import Dataset, load_dataset
from difflab.data.latents import source_name
from difflab.data.loader import InfiniteLoader
from difflab.samplers.base import check_sampler_options
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
from difflab.training.summary import run_summary


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
    progress: Callable | None = None,
    stop: Callable[[], bool] | None = None,
) -> Path:
    """Train as configured (torchrun-aware); returns the newest model checkpoint.

    callback(record) gets {"step", "loss", "seconds", ...} after every step, {"note": text} for
    events, {"event": "start", "rank", ...} (training.summary.run_summary) before the first
    step and, on the main rank, {"event": "checkpoint", "step", "path", "logged_loss"} for each
    checkpoint, {"event": "progress", "step", "files"} for each grid and a last {"event":
    "stop", "reason", ...} (`stop_record`); "seconds" is training time summed over resumes.
    evaluator(ema_denoiser, shape, sample_cfg, device, codec=codec) -> {"eval_metric", "eval_fd",
    "eval_n"} runs on the main rank every train.eval_every steps (difflab.evaluation.in_loop
    builds it); shape is the pixel shape, codec the model's.
    progress(step, ema_denoiser, shape, device, codec=codec) -> [paths written] runs on the main
    rank every train.grid_every steps (0: at each checkpoint) and at the last step
    (difflab.evaluation.progress builds it); it must leave every RNG as it found it.
    stop() -> bool is asked after every step (on the main rank): True ends training there with
    a checkpoint (a graceful interrupt).
    """
    world = dist.setup(cfg.train.device)
    try:
        with contextlib.ExitStack() as stack:
            if world.main:  # one writer per run dir (storage.lock), held until training ends
                prepare_run_dir(Path(out), resume=True)  # a file, not a dir: say so first
                stack.enter_context(run_lock(out))
            hooks = Hooks(callback or (lambda record: None), evaluator, progress,
                          stop or (lambda: False))  # fmt: skip
            return _train(cfg, Path(out), world, resume, hooks)
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


@dataclass
class Hooks:
    """What `train` calls besides the loop itself (see `train`)."""

    callback: Callable
    evaluator: Callable | None
    progress: Callable | None
    stop: Callable[[], bool]


STOP_REASONS = ("steps", "max_seconds", "interrupted", "nonfinite", "error")


def stop_record(reason: str, step: int, cfg: Config, seconds: float, path: Path | None,
                saved: bool, message: str = "") -> dict:  # fmt: skip
    """The last record of a run: why it stopped (one of STOP_REASONS), at which step, after how
    many training seconds (summed over resumes), its newest checkpoint and whether that one was
    written at this step."""
    return {"event": "stop", "reason": reason, "step": step, "steps": cfg.train.steps,
            "seconds": seconds, "max_seconds": cfg.train.max_seconds,
            "checkpoint": None if path is None else str(path), "saved": saved,
            "message": message}  # fmt: skip


def _train(cfg: Config, out: Path, world: dist.World, resume: bool, hooks: Hooks) -> Path:
    callback = hooks.callback
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
    step, path, before = 0, None, 0.0  # before: training seconds of the runs this one resumes
    if resume:
        path, state, notes = resume_state.newest_valid(out)
        for note in notes:
            callback({"note": note})
        if state is not None:
            _check_resume_config(state[1]["config"], cfg_dict, path)
            step = resume_state.restore(state, parts, engine.objective, engine.ema.model)
            before = float(state[1].get("seconds", 0.0))  # absent before seconds were kept
            callback({"note": f"resumed from {path} (step {step})"})
        else:
            callback({"note": f"no valid checkpoint in {out}; starting from step 0"})
    check_specs(cfg, denoiser)
    evaluator = hooks.evaluator if world.main and cfg.train.eval_every else None
    progress = hooks.progress if world.main else None
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
        copy_codec(cfg.model.codec, out)  # the run carries its codec file (RUN/codec.safetensors)
        (out / "config.toml").write_text(to_toml(cfg_dict))
        truncate_log(out / "log.jsonl", step)
    callback(run_summary(cfg, dataset, denoiser, world, out, step, before,
                         path if step else None))  # fmt: skip

    log = open(out / "log.jsonl", "a") if world.main else None
    losses, t_log, start = [], time.perf_counter(), time.perf_counter()
    seconds = lambda: before + now_since(start)  # noqa: E731  (training time, summed over resumes)
    best = checkpointing.BestTracker(out, step)  # restored on resume
    t = cfg.train
    reason = _reason(cfg, step, before, lambda: False, world)  # a finished run does no steps
    saved = False
    try:
        while reason is None:
            result = _step(engine, step, batches)
            step += 1
            losses.append(result.loss)
            record = {"step": step, "loss": result.loss, "grad_norm": result.grad_norm,
                      "seconds": seconds()}  # fmt: skip
            if not result.applied:
                record["skipped"] = True
                callback({"note": f"step {step}: non-finite loss or gradient, update skipped"})
            if step % t.log_every == 0 or step == t.steps:
                now = time.perf_counter()
                record |= {
                    "loss": float(np.mean(losses)), "lr": engine.opt.param_groups[0]["lr"],
                    "images_per_s": len(losses) * global_batch * t.accumulate / (now - t_log),
                    "seconds": seconds(),
                }  # fmt: skip
                if log is not None:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                losses, t_log = [], now
            reason = _reason(cfg, step, before + now_since(start), hooks.stop, world)
            saved = reason is not None or bool(t.ckpt_every and step % t.ckpt_every == 0)
            if saved:
                path = ckpt.model_path(out, step)
                if world.main:
                    _checkpoint(out, step, cfg_dict, parts, engine, record, best, seconds())
                    callback({"event": "checkpoint", "step": step, "path": str(path),
                              "logged_loss": record["loss"]})  # fmt: skip
            if evaluator is not None and step % t.eval_every == 0:
                _evaluate(evaluator, engine, cfg, world, codec, step, log, callback)
            grid_now = step % t.grid_every == 0 if t.grid_every else saved
            if progress is not None and (grid_now or reason is not None):
                files = progress(step, engine.ema.model, tuple(cfg.model.shape), world.device,
                                 codec=codec)  # fmt: skip
                if files:
                    callback({"event": "progress", "step": step, "files": [str(f) for f in files]})
            callback(record)
    except KeyboardInterrupt:  # mid-step: the step's checkpoint would not be a consistent state
        if world.main:
            callback(stop_record("interrupted", step, cfg, seconds(), path, saved=False))
        raise
    except TrainingError as err:
        if world.main:
            why = "nonfinite" if isinstance(err, NonFinite) else "error"
            callback(stop_record(why, step, cfg, seconds(), path, saved=False, message=str(err)))
        raise
    finally:
        if log is not None:
            log.close()
    if world.main:
        callback(stop_record(reason, step, cfg, seconds(), path, saved))
    return path


class NonFinite(TrainingError):
    """The engine stopped on a non-finite loss or gradient (train.on_nonfinite = "stop")."""


def _step(engine: Engine, step: int, batches):
    try:
        return engine.step(step, batches)
    except TrainingError as err:  # the engine raises only for a non-finite loss or gradient
        raise NonFinite(str(err)) from None


def _reason(cfg: Config, step: int, seconds: float, stop: Callable[[], bool],
            world: dist.World) -> str | None:  # fmt: skip
    """Why training stops after `step` (one of STOP_REASONS; None: go on), rank 0's answer."""
    t = cfg.train
    if step >= t.steps:
        return "steps"
    reason = None
    if t.max_seconds and seconds >= t.max_seconds:
        reason = "max_seconds"
    elif world.main and stop():
        reason = "interrupted"
    code = _agree(world, STOP_REASONS.index(reason) + 1 if reason else 0)
    return STOP_REASONS[code - 1] if code else None


def _checkpoint(out: Path, step: int, cfg_dict: dict, parts: dict, engine: Engine, record: dict,
                best: checkpointing.BestTracker, seconds: float) -> None:  # fmt: skip
    checkpointing.write(out, step, cfg_dict, parts, engine.objective, engine.ema.model,
                        {"loss": record["loss"], "seconds": seconds}, best,
                        cfg_dict["train"]["keep"])  # fmt: skip


def _evaluate(evaluator, engine: Engine, cfg: Config, world: dist.World, codec, step: int, log,
              callback: Callable) -> None:  # fmt: skip
    scores = {
        "step": step,
        **evaluator(engine.ema.model, tuple(cfg.model.shape), cfg.sample, world.device,
                    codec=codec),
    }  # fmt: skip
    log.write(json.dumps(scores) + "\n")
    log.flush()
    callback({"note": f"step {step}: {scores['eval_metric']} (n={scores['eval_n']}) "
                      f"= {scores['eval_fd']:.4g}"})  # fmt: skip


def check_specs(cfg: Config, denoiser: Precond) -> None:
    """Resolve the sampling choices now, so a bad name fails before any file is written (the
    objective and its σ density were checked when they were built)."""
    spec = dict(cfg.sample.sampler)
    check_sampler_options(spec.pop("name"), spec)
    discretize(denoiser.schedule, cfg.sample.discretization, cfg.sample.steps)


def now_since(start: float) -> float:
    return time.perf_counter() - start


def _agree(world: dist.World, code: int) -> int:
    """Rank 0's `code` on every rank (so all ranks stop at the same step)."""
    if world.size == 1:
        return code
    t = torch.tensor([float(code)], device=world.device)
    torch.distributed.broadcast(t, 0)
    return int(t.item())


def truncate_log(path: Path, step: int) -> None:
    """Drop log records past `step` (steps a resumed run is about to redo)."""
    if path.exists():
        keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
        ckpt.atomic_write(path, lambda tmp: Path(tmp).write_text("".join(k + "\n" for k in keep)))
