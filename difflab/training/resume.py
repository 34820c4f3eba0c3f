"""Resume state: raw weights, EMA, AdamW, step, every RNG and the data position, for bit-exact resume."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from difflab.core.errors import UsageError
from difflab.storage import checkpoint as ckpt


def rng_state(generator: torch.Generator) -> tuple[dict, dict]:
    """(tensors, JSON) holding the training generator, torch's global, numpy's and Python's RNG."""
    tensors = {"rng.train": generator.get_state(), "rng.torch": torch.get_rng_state()}
    kind, keys, *rest = np.random.get_state()
    version, internal, gauss = random.getstate()
    meta = {"numpy": [kind, keys.tolist(), *rest], "python": [version, list(internal), gauss]}
    return tensors, meta


def set_rng_state(generator: torch.Generator, tensors: dict, meta: dict) -> None:
    generator.set_state(tensors["rng.train"])
    torch.set_rng_state(tensors["rng.torch"])
    kind, keys, *rest = meta["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


def save(run, step, cfg_dict, denoiser, ema, opt, generator, loader, info, importance=None) -> Path:
    """Write the resume state, then the model file (EMA weights + config), both atomically;
    `importance` is the loss-aware timestep sampler whose loss history is part of the state."""
    path = ckpt.model_path(run, step)
    rng_tensors, rng_meta = rng_state(generator)
    tensors = {f"model.{k}": v for k, v in denoiser.state_dict().items()}
    opt_state = opt.state_dict()
    for idx, slots in opt_state["state"].items():
        tensors.update({f"optim.{idx}.{k}": torch.as_tensor(v) for k, v in slots.items()})
    tensors.update(rng_tensors)
    if importance is not None:
        tensors.update({f"importance.{k}": v for k, v in importance.state_dict().items()})
    meta = {
        "kind": "state", "step": step, "rng": rng_meta, "loader": loader.state_dict(),
        "param_groups": opt_state["param_groups"], "config": cfg_dict,
    }  # fmt: skip
    ckpt.save_tensors(ckpt.state_path(path), tensors, meta)
    ckpt.save_model(path, ema.model.state_dict(), cfg_dict, {"step": step, **info})
    return path


def read(path: Path) -> tuple[dict, dict, dict]:
    """(resume tensors, resume metadata, EMA weights) of a checkpoint; UsageError if unreadable."""
    tensors, meta = ckpt.load_tensors(ckpt.state_path(path))
    weights, _, _ = ckpt.load_model_file(path)
    if meta.get("kind") != "state":
        raise UsageError(f"{ckpt.state_path(path)} is not a difflab resume state")
    return tensors, meta, weights


def restore(state, denoiser, ema, opt, generator, loader, importance=None) -> int:
    """Load what `read` returned into the live objects; returns the step to continue from."""
    tensors, meta, weights = state
    denoiser.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.model.load_state_dict(weights)
    slots: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            slots.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})
    set_rng_state(generator, tensors, meta["rng"])
    loader.load_state_dict(meta["loader"])
    if importance is not None:
        if "importance.history" not in tensors:
            raise UsageError("`resume`: the resume state has no importance-sampler history")
        importance.load_state_dict({k[11:]: v for k, v in tensors.items()
                                    if k.startswith("importance.")})  # fmt: skip
    return int(meta["step"])


def newest_valid(run: Path) -> tuple[Path | None, tuple | None, list[str]]:
    """Newest checkpoint whose model file and resume state both load, with notes on skipped ones."""
    skipped = []
    for path in reversed(ckpt.list_checkpoints(run)):
        try:
            return path, read(path), skipped
        except UsageError as err:
            skipped.append(f"skipped {path.name}: {err}")
    return None, None, skipped
