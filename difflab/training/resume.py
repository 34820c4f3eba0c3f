"""Resume state, one mechanism for every stateful part: raw weights, AdamW, LR schedule, every RNG,
the data position and the objective's own state, for bit-exact resume. EMA weights are the model
file beside it.

Each part's state_dict is flattened: tensors go to the safetensors file as "<part>.<key>", the
rest to its JSON metadata under "<part>". The objective's parts are stored the same way under
their own names (e.g. "importance.history").
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.storage import checkpoint as ckpt
from difflab.training.objectives.base import (
    Objective,
    OptimizerState,  # noqa: F401  (its home before)
    Stateful,
)

FORMAT = 2  # 1: before the objective registry (no "format", "sched", param_groups at top level)


class RNGState:
    """The training generator, torch's global, numpy's and Python's RNG as one part."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def state_dict(self) -> dict[str, Any]:
        kind, keys, *rest = np.random.get_state()
        version, internal, gauss = random.getstate()
        return {"train": self.generator.get_state(), "torch": torch.get_rng_state(),
                "numpy": [kind, keys.tolist(), *rest],
                "python": [version, list(internal), gauss]}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["train"])
        torch.set_rng_state(state["torch"])
        kind, keys, *rest = state["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))


def flatten(parts: dict[str, Stateful], objective: Objective) -> tuple[dict[str, Tensor], dict]:
    """(tensors, JSON metadata) of every part and of the objective's parts."""
    tensors: dict[str, Tensor] = {}
    meta: dict[str, dict] = {}
    own = objective.parts()
    clash = sorted(set(own) & set(parts))
    if clash:
        raise ValueError(f"objective parts {clash} clash with the loop's own parts")
    for name, part in {**parts, **own}.items():
        for key, value in part.state_dict().items():
            if isinstance(value, Tensor):
                tensors[f"{name}.{key}"] = value
            else:
                meta.setdefault(name, {})[key] = value
    return tensors, meta


def unflatten(tensors: dict[str, Tensor], meta: dict, parts: dict[str, Stateful],
              objective: Objective) -> None:  # fmt: skip
    """Load what `flatten` wrote into the live parts and the objective."""
    state: dict[str, Any] = dict(tensors)
    for name, values in meta.items():
        if isinstance(values, dict):
            state.update({f"{name}.{k}": v for k, v in values.items()})
    for name, part in parts.items():
        own = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
        if not own:
            raise UsageError(f"the saved training state has no {name!r} part; start a new run")
        part.load_state_dict(own)
    objective.load_state_dict(state)


def save(run: Path, step: int, cfg_dict: dict, parts: dict[str, Stateful], objective: Objective,
         ema_model: torch.nn.Module, info: dict) -> Path:  # fmt: skip
    """Write the resume state, then the model file (EMA weights + config), both atomically;
    info["seconds"] (training time so far) goes into both, so a resumed run's clock goes on."""
    path = ckpt.model_path(run, step)
    tensors, meta = flatten(parts, objective)
    meta |= {"kind": "state", "format": FORMAT, "step": step, "config": cfg_dict,
             "seconds": float(info.get("seconds", 0.0))}  # fmt: skip
    ckpt.save_tensors(ckpt.state_path(path), tensors, meta)
    ckpt.save_model(path, ema_model.state_dict(), cfg_dict, {"step": step, **info})
    return path


def read(path: Path) -> tuple[dict, dict, dict]:
    """(resume tensors, resume metadata, EMA weights) of a checkpoint; UsageError if unreadable."""
    tensors, meta = ckpt.load_tensors(ckpt.state_path(path))
    weights, _, _ = ckpt.load_model_file(path)
    if meta.get("kind") != "state":
        raise UsageError(f"{ckpt.state_path(path)} is not a difflab resume state")
    if meta.get("format", 1) == 1:
        _from_format_1(meta)
    return tensors, meta, weights


def _from_format_1(meta: dict) -> None:
    """Upgrade a state written before the objective registry: param_groups move under "optim";
    the warm-up schedule's state (then implied by the step) is written out."""
    train, step = meta["config"]["train"], meta["step"]
    warm = train["warmup"]
    lr = train["lr"] * (min(1.0, (step + 1) / warm) if warm else 1.0)  # of the next step
    groups = [{**g, "lr": lr, "initial_lr": train["lr"]} for g in meta.pop("param_groups")]
    meta["optim"] = {"param_groups": groups}
    meta["sched"] = {"base_lrs": [train["lr"]] * len(groups), "last_epoch": step,
                     "_step_count": step + 1, "_last_lr": [lr] * len(groups),
                     "lr_lambdas": [None] * len(groups)}  # fmt: skip


def restore(state: tuple[dict, dict, dict], parts: dict[str, Stateful], objective: Objective,
            ema_model: torch.nn.Module) -> int:  # fmt: skip
    """Load what `read` returned into the live objects; returns the step to continue from."""
    tensors, meta, weights = state
    ema_model.load_state_dict(weights)
    unflatten(tensors, {k: v for k, v in meta.items() if isinstance(v, dict) and k != "config"},
              parts, objective)  # fmt: skip
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
