"""Samplers: registered pure functions `sampler(fn, x, sigmas, *, noise, callback, **opts) -> x`."""

from difflab.samplers import dpm, euler, heun, multistep, sde  # noqa: F401  (registration)
from difflab.samplers.base import SAMPLERS, DenoiseFn, Noise, denoise, sample, slope

__all__ = ["SAMPLERS", "DenoiseFn", "Noise", "denoise", "sample", "slope"]
