"""Samplers: registered pure functions `sampler(fn, x, sigmas, *, noise, callback, **opts) -> x`.

`fn(x, sigma[B]) -> x̂0` is a DenoiseFn (cond and guidance already bound); `x` enters at noise
level sigmas[0] in σ-space (x0 + σε); `sigmas` is decreasing and ends in 0; `noise(x)` returns a
standard normal tensor shaped like x (per-sample seeded in `generate`); `callback(info)` receives
a dict with i, x, sigma, sigma_next and denoised after every step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.registry import Registry
from difflab.core.schedules import check_sigmas

SAMPLERS = Registry("sampler")
DenoiseFn = Callable[[Tensor, Tensor], Tensor]
Noise = Callable[[Tensor], Tensor]


def denoise(fn: DenoiseFn, x: Tensor, sigma: Tensor) -> Tensor:
    """Call fn with the scalar σ broadcast to the batch: σ [] → [B]."""
    return fn(x, sigma.to(x.dtype) * x.new_ones(x.shape[0]))


def slope(fn: DenoiseFn, x: Tensor, sigma: Tensor) -> Tensor:
    """d = (x − D(x; σ))/σ, the probability-flow ODE's dx/dσ (Karras et al. 2022, Eq. 3)."""
    return (x - denoise(fn, x, sigma)) / sigma


def check_order(order: int, max_order: int) -> int:
    """Raise a UsageError unless `order` is an integer in 1..max_order; return it."""
    if not isinstance(order, int) or isinstance(order, bool) or not 1 <= order <= max_order:
        raise UsageError(
            f"sampler option order must be an integer in 1..{max_order}, got {order!r}"
        )
    return order


def report(callback, i: int, x: Tensor, sigmas: Tensor, denoised: Tensor) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigmas[i], "sigma_next": sigmas[i + 1],
                  "denoised": denoised})  # fmt: skip


def sample(
    name: str,
    fn: DenoiseFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: Noise | None = None,
    callback=None,
    **opts,
) -> Tensor:
    """Run the sampler `name` after checking its options and the σ grid."""
    SAMPLERS.check_options(name, opts, skip=3)
    check_sigmas(sigmas)
    for key in ("eta", "s_noise", "s_churn"):
        if key in opts and not float(opts[key]) >= 0:
            raise UsageError(f"sampler option {key} must be >= 0, got {opts[key]!r}")
    noise = noise or torch.randn_like
    return SAMPLERS.get(name)(fn, x, sigmas, noise=noise, callback=callback, **opts)
