"""Writing a run's checkpoints: resume state + model file, best.safetensors, pruning; a full disk
(or any failed write) is one TrainingError that names the intact previous checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

from difflab.core.errors import TrainingError, UsageError
from difflab.storage import checkpoint as ckpt
from difflab.training import resume as resume_state


class BestTracker:
    """The lowest logged loss of a run, restored from checkpoints/best.safetensors on resume."""

    def __init__(self, run: Path, step: int = 0):
        self.run, self.loss = Path(run), math.inf
        best = ckpt.checkpoint_dir(run) / "best.safetensors"
        if step and best.is_file():
            try:
                info = ckpt.read_metadata(best).get("info", {})
            except UsageError:  # an unreadable best file is simply replaced
                return
            loss = info.get("loss") if isinstance(info, dict) else None
            if isinstance(loss, int | float) and 0 < info.get("step", math.inf) <= step:
                self.loss = float(loss)

    def offer(self, model_file: Path, loss: float) -> None:
        """Copy `model_file` to best.safetensors if `loss` is the lowest so far."""
        if loss < self.loss:
            self.loss = loss
            ckpt.mark_best(model_file)


def write(run: Path, step: int, cfg_dict: dict, parts: dict, objective, ema_model, info: dict,
          best: BestTracker, keep: int) -> Path:  # fmt: skip
    """Save the step's checkpoint, update best.safetensors, prune to `keep`; a failed write
    (disk full, read-only) → TrainingError naming the previous checkpoint, which is intact."""
    path = ckpt.model_path(run, step)
    try:
        resume_state.save(run, step, cfg_dict, parts, objective, ema_model, info)
        best.offer(path, info["loss"])
    except OSError as err:
        ckpt.state_path(path).unlink(missing_ok=True)  # a state without its model file is junk
        older = [p for p in ckpt.list_checkpoints(run) if p != path]
        last = f"{older[-1]} is intact" if older else "none was written before"
        raise TrainingError(
            f"could not write the step-{step} checkpoint ({err.strerror or err}); the last good "
            f"checkpoint {last}; free disk space and continue with `resume=True`"
        ) from None
    ckpt.prune(run, keep)
    return path
