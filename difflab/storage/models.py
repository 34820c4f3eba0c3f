"""Diffusion-model checkpoints → a ready denoiser: built from the config, weights loaded once."""

from __future__ import annotations

from pathlib import Path

from difflab.conditioning.base import build_conditioner
from difflab.core.config import Config, from_dict
from difflab.core.errors import UsageError
from difflab.core.precond import Precond
from difflab.core.schedules import build_schedule
from difflab.nets.base import NETS
from difflab.storage import checkpoint as ckpt


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
    conditioner = build_conditioner(model.cond)
    if conditioner is not None:
        sizes.update(conditioner.net_options())  # slot sizes: one-hot classes, text width
    net = NETS.build(model.net, **sizes)
    denoiser = Precond(
        net, build_schedule(model.schedule), model.parameterization, model.sigma_data,
        model.learned_variance,
    )  # fmt: skip
    denoiser.conditioner = conditioner  # turns labels / prompts into cond (None: unconditional)
    return denoiser


def load_denoiser(path: str | Path) -> tuple[Precond, dict, dict]:
    """(EMA denoiser in eval mode, config dict, info) from a model checkpoint or run dir."""
    state, config, info = ckpt.load_model_file(Path(path))
    denoiser = build_denoiser(config["model"])
    try:
        denoiser.load_state_dict(state)
    except RuntimeError as err:
        detail = next((ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()), str(err))
        raise UsageError(
            f"checkpoint {path} does not fit its own config ({detail[:160]}); it was edited or "
            "made by another difflab version"
        ) from None
    return denoiser.eval().requires_grad_(False), config, info
