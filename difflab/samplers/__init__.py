"""Samplers: registered pure functions `sampler(fn, x, sigmas, *, noise, callback, step_hook,
**opts) -> x`; the contract (any x at any σ, grids in either direction, step hooks, learned
variance) is stated in `difflab.samplers.base`."""

from difflab.samplers import dpm, euler, few_step, heun, multistep, sde  # noqa: F401  (registration)
from difflab.samplers.base import (
    SAMPLERS,
    DenoiseFn,
    LearnedVariance,
    Noise,
    StepHook,
    WithVariance,
    denoise,
    require_variance,
    reversible_names,
    sample,
    slope,
    variance_head,
    with_variance,
)

__all__ = [
    "SAMPLERS",
    "DenoiseFn",
    "LearnedVariance",
    "Noise",
    "StepHook",
    "WithVariance",
    "denoise",
    "require_variance",
    "reversible_names",
    "sample",
    "slope",
    "variance_head",
    "with_variance",
]
