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
from difflab.storage.codecs import build_codec
from difflab.storage.formats import load_model


def net_shape(model: dict | object) -> tuple[int, ...]:
    """The network's per-item shape: the codec's latent shape of the data shape `model.shape`."""
    model = from_dict(model, type(Config().model)) if isinstance(model, dict) else model
    if not model.shape:
        raise UsageError("model.shape is empty; it is filled in from the data at training time")
    return build_codec(model.codec).latent_shape(model.shape)


def build_denoiser(model: dict | object) -> Precond:
    """Precond(net, schedule, parameterization) from a resolved model config (needs `shape`)."""
    model = from_dict(model, type(Config().model)) if isinstance(model, dict) else model
    shape = net_shape(model)
    channels = shape[0]
    out = channels * (2 if model.learned_variance else 1)
    sizes = {"in_channels": channels, "out_channels": out}
    if len(shape) == 3:  # an image-shaped latent: the U-Net needs its resolution
        sizes["resolution"] = shape[-1]
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


def load_denoiser(path: str | Path, *, allow_pickle: bool = False) -> tuple[Precond, dict, dict]:
    """(EMA denoiser in eval mode, config dict, info) from a model checkpoint (any registered
    format) or a run dir; `allow_pickle`: see `load_model`."""
    state, config, info = load_model(path, allow_pickle=allow_pickle)
    denoiser = build_denoiser(config["model"])
    fix = "it was edited or made by another difflab version"
    ckpt.load_weights(denoiser, state, path, fix)
    return denoiser.eval().requires_grad_(False), config, info
