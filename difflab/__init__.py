"""difflab: diffusion models for image synthesis — train, sample, guide, edit and evaluate.

The stable Python API (imported lazily, so `import difflab` stays cheap):

    pipe = difflab.load("runs/x")              # Pipeline: codec + denoiser + conditioner + defaults
    images = pipe(16, seed=0, sampler="dpmpp_2m", steps=20)     # uint8 [16, C, H, W]
    difflab.train(difflab.load_config("digits"), "runs/d")     # the training loop
"""

from __future__ import annotations

import importlib

_API = {
    "load": ("difflab.inference.pipeline", "load"),
    "Pipeline": ("difflab.inference.pipeline", "Pipeline"),
    "load_cascade": ("difflab.inference.cascade", "load_cascade"),
    "load_clip": ("difflab.storage.clip", "load_clip"),  # unCLIP's image–text space
    "train": ("difflab.evaluation.in_loop", "train"),
    "load_config": ("difflab.core.config", "load_config"),
    "UsageError": ("difflab.core.errors", "UsageError"),
    "SAMPLERS": ("difflab.samplers", "SAMPLERS"),
    "GUIDANCES": ("difflab.guidance", "GUIDANCES"),
    "CONDITIONERS": ("difflab.conditioning", "CONDITIONERS"),
    "DATASETS": ("difflab.data", "DATASETS"),
    "NETS": ("difflab.nets", "NETS"),
    "CODECS": ("difflab.codecs", "CODECS"),
    "FORMATS": ("difflab.storage.formats", "FORMATS"),
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'difflab' has no attribute {name!r}")
    module, attr = _API[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
