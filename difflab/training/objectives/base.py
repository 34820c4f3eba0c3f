"""The Objective contract of the one training loop, its registry, and the Batch it reads.

An objective turns a global micro-batch into a per-sample loss [B] of its `model`; the engine
(difflab.training.engine) owns the optimizer, EMA, accumulation, clipping and the non-finite guard.
Whatever an objective learns while training (a loss history, its own RNG) sits in named `parts`,
saved and restored with the run like every other stateful piece.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from difflab.core.errors import UsageError
from difflab.core.registry import Registry
from difflab.training.dist import World

OBJECTIVES = Registry("objective")


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


KERNEL_FLAGS = ("foreach", "fused")  # how the optimizer runs, not its state: the current one wins


class OptimizerState:
    """An optimizer as a part: slot tensors (copies, so a later step cannot change a taken state)
    as "<param index>.<slot>", param_groups as JSON."""

    def __init__(self, opt: torch.optim.Optimizer):
        self.opt = opt

    def state_dict(self) -> dict[str, Any]:
        state = self.opt.state_dict()
        flat: dict[str, Any] = {"param_groups": state["param_groups"]}
        for idx, slots in state["state"].items():
            flat.update({f"{idx}.{k}": torch.as_tensor(v).clone() for k, v in slots.items()})
        return flat

    def load_state_dict(self, state: dict[str, Any]) -> None:
        slots: dict[int, dict] = {}
        for key, value in state.items():
            if key != "param_groups":
                idx, name = key.split(".", 1)
                slots.setdefault(int(idx), {})[name] = value
        kernels = [{k: g[k] for k in KERNEL_FLAGS if k in g} for g in self.opt.param_groups]
        groups = [{**saved, **mine} for saved, mine in zip(state["param_groups"], kernels)]
        self.opt.load_state_dict({"state": slots, "param_groups": groups})


@dataclass
class Batch:
    """One micro-batch as the loader gives it (all ranks' items), the training generator every
    rank draws σ, noise and condition dropout from, and this rank's place to shard onto."""

    x0: Tensor  # [N·B, ...] model space
    labels: Tensor | None  # [N·B] or None
    generator: torch.Generator
    world: World = field(default_factory=World)

    def local(self, t: Tensor) -> Tensor:
        """This rank's shard of a global-batch tensor, on its device."""
        return self.world.shard(t).to(self.world.device)


class Objective:
    """Base of every training objective: `model` is what the optimizer trains."""

    model: nn.Module
    single_process = False  # True if its state follows per-sample losses that DDP does not gather

    def loss(self, batch: Batch, step: int) -> tuple[Tensor, dict[str, float]]:
        """(per-sample loss [B] of this rank's shard, scalar logs)."""
        raise NotImplementedError

    def parts(self) -> dict[str, Stateful]:
        """Named stateful pieces resumed with the run ({} when the objective keeps no state)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Every part's state under "<part>.<key>" (e.g. "importance.history")."""
        return {f"{name}.{k}": v for name, part in self.parts().items()
                for k, v in part.state_dict().items()}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore every part from `state` (other keys are ignored); UsageError if one is missing."""
        for name, part in self.parts().items():
            own = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
            if not own:
                raise UsageError(
                    f"the saved training state has no {name!r} state for this objective; resume "
                    "with the `loss` and `sigma_density` the run was started with"
                )
            part.load_state_dict(own)


def build_objective(spec: str | Mapping[str, Any], model: nn.Module, **options: Any) -> Objective:
    """The objective named in `spec` ({"name": ..., **options}, e.g. train.loss) for `model`."""
    return OBJECTIVES.build(spec, model, **options)
