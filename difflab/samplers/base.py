"""The sampler contract: one signature for generation, editing and inversion.

    sampler(fn, x, sigmas, *, noise, callback=None, step_hook=None, **opts) -> x

- `fn(x, sigma[B]) -> x̂0` is a DenoiseFn (cond and guidance already bound).
- `x` enters at noise level sigmas[0] in σ-space (x0 + σε), whatever it is: σ_max·z to generate,
  x0 + σε for SDEdit/img2img, an image at a small σ to invert.
- `sigmas` is strictly monotone with finite entries >= 0 (`check_sigmas`). Decreasing grids may
  end at 0 (the last step lands on x̂0) or above 0: then the state at sigmas[-1] is returned, with
  no final denoising step. Increasing grids (DDIM inversion, x0 → noise) start above 0 and are
  taken only by samplers registered `reversible=True` (the deterministic ODE solvers, with their
  noise options `eta`/`s_churn` at 0); `sample` refuses the others.
- `noise(x)` returns a standard normal tensor shaped like x (per-sample seeded in `generate`).
- After every step i (σ_i → σ_{i+1}) `step_hook(x, i, sigma_next)` may return a tensor shaped like
  x that replaces x for the following steps (RePaint, inpainting); None keeps x. Never change x
  in place. Then `callback(info)` gets {i, x (after the hook), sigma, sigma_next, denoised}.
  After a replacement, samplers without a history equal a fresh `sample` from the returned x on
  the remaining grid (singlestep DPM-Solver starts a new group; `ode_adaptive`, whose step is one
  grid interval however many RK45 sub-steps it takes, restarts its step-size control). Samplers
  registered `history=True` (multistep: LMS, PLMS, PNDM, DEIS, UniPC, DPM-Solver++ kM) replace
  only the state and keep their past denoiser outputs (and UniPC its pending correction), as
  diffusers' inpainting pipelines do: a hook returning an equal tensor changes nothing, and a
  masked replacement keeps their order; split the `sample` call to restart one from scratch.
- A sampler's user options are its keyword parameters beyond these contract arguments
  (`CONTRACT_ARGUMENTS`: fn, x, sigmas, noise, callback, step_hook), with their defaults:
  `sampler_options(name)`; `check_sampler_options` refuses any other name, contract arguments too.
- Learned variance is a capability a DenoiseFn declares (`LearnedVariance`): `with_variance`
  attaches it, guidance wrappers forward it, and the ddpm sampler and the VLB read it through
  `require_variance`, which names the fix when it is missing.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.registry import Registry
from difflab.core.schedules import DISCRETIZATIONS, check_sigmas

SAMPLERS = Registry("sampler")
DenoiseFn = Callable[[Tensor, Tensor], Tensor]
Noise = Callable[[Tensor], Tensor]
StepHook = Callable[[Tensor, int, Tensor], "Tensor | None"]  # (x, i, sigma_next) -> x' or None
VarianceHead = Callable[[Tensor, Tensor], "tuple[Tensor, Tensor]"]  # (x, σ[B]) -> (x̂0, raw v)
NOISE_OPTIONS = ("eta", "s_churn")  # options that add noise; 0 on an increasing grid
CONTRACT_ARGUMENTS = ("fn", "x", "sigmas", "noise", "callback", "step_hook")  # not user options


# ---- learned variance: a declared capability of a DenoiseFn --------------------------------------


class LearnedVariance(Protocol):
    """A DenoiseFn that also returns its learned-variance head: `with_extra(x, σ) -> (x̂0, raw v)`
    in one network call, v ∈ [−1, 1] the log-space interpolation weight between β and β̃
    (Nichol & Dhariwal 2021, Eq. 15)."""

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor: ...

    def with_extra(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]: ...


@dataclass(frozen=True)
class WithVariance:
    """`fn` declaring the learned-variance head `with_extra` (implements LearnedVariance)."""

    fn: DenoiseFn
    with_extra: VarianceHead

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.fn(x, sigma)


def with_variance(fn: DenoiseFn, head: VarianceHead | None) -> DenoiseFn:
    """`fn` declaring `head` as its learned variance; `fn` itself when head is None."""
    return fn if head is None else WithVariance(fn, head)


def variance_head(fn: DenoiseFn) -> VarianceHead | None:
    """The learned-variance head `fn` declares, or None."""
    head = getattr(fn, "with_extra", None)
    return head if callable(head) else None


def require_variance(fn: DenoiseFn) -> VarianceHead:
    """The learned-variance head of `fn`; a UsageError naming the fix when it declares none."""
    head = variance_head(fn)
    if head is None:
        raise UsageError(
            "variance 'learned' needs a DenoiseFn with a learned-variance head (a model with "
            "`learned_variance`=True, bridged by guidance plain or cfg); "
            "use variance 'small' or 'large'"
        )
    return head


# ---- shared step helpers --------------------------------------------------------------------------


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


def report(
    callback, step_hook: StepHook | None, i: int, x: Tensor, sigmas: Tensor, denoised: Tensor
) -> Tensor:
    """End of step i: `step_hook` may replace x, `callback` sees the result; returns the x the next
    step starts from (the same object unless replaced)."""
    if step_hook is not None:
        new = step_hook(x, i, sigmas[i + 1])
        if new is not None:
            if not isinstance(new, Tensor) or new.shape != x.shape:
                got = tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__
                raise UsageError(
                    f"`step_hook` returned {got} at step {i}; return a tensor shaped like x "
                    f"{tuple(x.shape)}, or None to keep x"
                )
            x = new
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigmas[i], "sigma_next": sigmas[i + 1],
                  "denoised": denoised})  # fmt: skip
    return x


# ---- user options ---------------------------------------------------------------------------------


def sampler_options(name: str) -> dict:
    """The user options of sampler `name` and their defaults: its keyword parameters beyond the
    contract's arguments (`CONTRACT_ARGUMENTS`)."""
    return SAMPLERS.options(name, internal=CONTRACT_ARGUMENTS)


def check_sampler_options(name: str, opts) -> None:
    """UsageError unless every key of `opts` is a user option of sampler `name`; the message names
    its options, and sends an option of the σ grid (e.g. `sigma_max`) to `discretization`."""
    grid = sorted(
        {k for d in DISCRETIZATIONS.names() for k in DISCRETIZATIONS.options(d, skip=2)}
        & set(opts) - set(sampler_options(name))
    )
    if grid:
        raise UsageError(
            f"{', '.join(grid)} is an option of the sigma grid, not of sampler {name!r}; set it "
            f"in `discretization` next to the grid's name (sampler {name!r} takes: "
            f"{', '.join(sampler_options(name)) or '(none)'})"
        )
    SAMPLERS.check_options(name, opts, internal=CONTRACT_ARGUMENTS)


# ---- the entry point ------------------------------------------------------------------------------


def reversible_names() -> list[str]:
    """Samplers that integrate increasing σ grids (inversion)."""
    return [n for n in SAMPLERS.names() if SAMPLERS.meta(n).get("reversible")]


def check_reversible(name: str, opts: dict) -> None:
    """UsageError unless sampler `name` with `opts` can integrate an increasing σ grid."""
    if not SAMPLERS.meta(name).get("reversible"):
        raise UsageError(
            f"sampler {name!r} cannot integrate an increasing sigma grid (inversion); "
            f"use one of: {', '.join(reversible_names())}"
        )
    params = inspect.signature(SAMPLERS.get(name)).parameters
    for key in NOISE_OPTIONS:
        if key in params and float(opts.get(key, params[key].default)) != 0:
            raise UsageError(
                f"sampler {name!r} inverts an increasing sigma grid only without noise; "
                f"set `{key}`=0"
            )


def sample(
    name: str,
    fn: DenoiseFn,
    x: Tensor,
    sigmas: Tensor,
    *,
    noise: Noise | None = None,
    callback=None,
    step_hook: StepHook | None = None,
    **opts,
) -> Tensor:
    """Run the sampler `name` from x at sigmas[0] to sigmas[-1] after checking its options and the
    σ grid (direction included) against the contract above."""
    check_sampler_options(name, opts)
    direction = check_sigmas(sigmas)
    for key in ("eta", "s_noise", "s_churn"):
        if key in opts and not float(opts[key]) >= 0:
            raise UsageError(f"sampler option {key} must be >= 0, got {opts[key]!r}")
    if direction > 0:
        check_reversible(name, opts)
    noise = noise or torch.randn_like
    return SAMPLERS.get(name)(
        fn, x, sigmas, noise=noise, callback=callback, step_hook=step_hook, **opts
    )
