"""bits/dim by the discrete variational bound of a VP model (Ho et al. 2020, Eq. 5; Nichol &
Dhariwal 2021, §2–3): Gaussian KL terms, the discretised-Gaussian decoder and the prior term,
all from the posterior formulas in difflab.posterior. The ODE estimate is in likelihood_ode.

x̂0 is clipped to the data range [−1, 1] by default (`clip_denoised`=True, the default of
improved-diffusion's image_nll.py, whose numbers Nichol & Dhariwal 2021 report): the bound is then
that of the reverse chain a clipping DDPM sampler draws from. Clipping projects x̂0 onto a box that
holds x0, so no KL term can grow (each is ∝ ‖x0 − x̂0‖²); `clip_denoised`=False bounds the raw
network, which a briefly trained ε-model can make far looser (almost all in the last KL terms)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.posterior import (
    StepPair,
    _per_dim_bits,
    alpha_bar,
    log_variance,
    normal_kl,
    vlb_step_bits,
)
from difflab.core.schedules import Schedule, discretize
from difflab.samplers.base import require_variance, variance_head, with_variance


def check_vlb_schedule(schedule: Schedule) -> None:
    """UsageError unless the model has a discrete VP (DDPM) schedule, which the VLB needs."""
    if not (schedule.discrete and schedule.vp):
        raise UsageError(
            f"the variational bound needs a discrete VP (DDPM) schedule, not {schedule.name!r}; "
            "use `method=\"ode\"` for this model"
        )


def vlb_grid(schedule: Schedule, steps: int | None = None) -> Tensor:
    """σ grid [K + 1] for the bound: all T steps, or K evenly respaced ones including t = 0."""
    check_vlb_schedule(schedule)
    T = schedule.num_timesteps
    return discretize(schedule, {"name": "uniform", "spacing": "linspace"}, steps or T)


def vlb_terms(
    fn: Callable,
    x0: Tensor,
    sigmas: Tensor,
    *,
    variance: str | None = None,
    clip_denoised: bool = True,
    generator: torch.Generator | None = None,
    callback: Callable | None = None,
) -> dict[str, Tensor]:
    """Per-sample bits/dim of L_T (prior), Σ L_{t−1} (KL terms) and L_0 (decoder) over the
    decreasing σ grid `sigmas` ending in 0 (Ho et al. 2020, Eq. 5; Nichol & Dhariwal 2021, Eq. 4).

    x0 [B, ...] lies on the 256-level grid in [−1, 1]; fn(x, σ) → x̂0 in σ-space, and with
    variance "learned" its declared head (samplers.LearnedVariance). Each KL term uses one fresh x_t.
    The decoder's β̃ (= 0) is clipped to β̃ of the previous pair, as in improved-diffusion;
    `clip_denoised` clips x̂0 to [−1, 1] (improved-diffusion's `clip_denoised`).
    """
    variance = variance or ("learned" if variance_head(fn) is not None else "small")
    head = require_variance(fn) if variance == "learned" else None
    sigmas = sigmas.double()
    x0 = x0.double()
    ones = x0.new_ones(x0.shape[0])  # [B]
    a_first = alpha_bar(sigmas[0])
    prior_logvar = (1 - a_first).log() * torch.ones_like(x0)
    zeros = torch.zeros_like(x0)
    prior = _per_dim_bits(normal_kl(a_first.sqrt() * x0, prior_logvar, zeros, zeros))
    kl, decoder = torch.zeros_like(ones), None
    K = len(sigmas) - 1
    for i in range(K):
        pair = StepPair(alpha_bar(sigmas[i]), alpha_bar(sigmas[i + 1]))
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)  # [B, ...]
        x = x0 + sigmas[i] * eps  # σ-space x_t
        sigma_b = (sigmas[i] * ones).to(x0.dtype)
        if head is not None:
            denoised, extra = head(x, sigma_b)
            extra = extra.double()
        else:
            denoised, extra = fn(x, sigma_b), None
        if clip_denoised:
            denoised = denoised.clamp(-1, 1)  # [B, ...] the data range
        last = i == K - 1
        clip = None
        if last:
            clip = StepPair(alpha_bar(sigmas[i - 1]), pair.a_t).beta_tilde if K > 1 else pair.beta
        logvar = log_variance(pair, variance, extra, clip=clip) * torch.ones_like(x0)
        bits = vlb_step_bits(pair, pair.a_t.sqrt() * x, x0, denoised.double(), logvar,
                             torch.full_like(ones, last, dtype=torch.bool))  # fmt: skip
        if last:
            decoder = bits
        else:
            kl = kl + bits
        if callback is not None:
            callback({"i": i, "steps": K})
    return {"prior": prior, "kl": kl, "decoder": decoder, "total": prior + kl + decoder}


def check_images(images: Tensor, shape: tuple | list) -> None:
    """UsageError unless uint8 images [N, C, H, W] match the model's (C, H, W)."""
    if tuple(images.shape[1:]) != tuple(shape):
        raise UsageError(
            f"data of shape {tuple(images.shape[1:])} does not fit the model's {tuple(shape)}; "
            "pick data with the model's channels and size (e.g. size=... in the data spec)"
        )


def summarize(values: Tensor) -> dict:
    """Mean, standard deviation and the 95% interval half-width 1.96·std/√n of per-sample values."""
    v = values.double()
    n = len(v)
    std = v.std().item() if n > 1 else float("nan")
    return {"mean": v.mean().item(), "std": std, "ci95": 1.96 * std / math.sqrt(n), "n": n}


def _in_dtype(fn: Callable, dtype: torch.dtype) -> Callable:
    """fn evaluated in the network's dtype, its outputs cast back to the caller's dtype."""

    def cast(x: Tensor, sigma: Tensor) -> Tensor:
        return fn(x.to(dtype), sigma.to(dtype)).to(x.dtype)

    head = variance_head(fn)
    if head is None:
        return cast
    return with_variance(
        cast, lambda x, sigma: tuple(t.to(x.dtype) for t in head(x.to(dtype), sigma.to(dtype)))
    )


def bits_per_dim(
    denoiser,
    images: Tensor,
    shape: tuple | list,
    *,
    method: str = "both",
    batch_size: int = 64,
    steps: int | None = None,
    seed: int = 0,
    clip_denoised: bool = True,
    callback: Callable | None = None,
    **ode_opts,
) -> dict:
    """bits/dim of uint8 images [N, C, H, W] (the model's `shape`) by the VLB and/or the
    probability-flow ODE, per term with 95% intervals; callback({"method", "done", "total"}) after
    every network pass. `clip_denoised` applies to the VLB, `ode_opts` (probe, probes, rtol, atol,
    max_steps) to the ODE; each method's "options" in the report record what was used."""
    from difflab.evaluation.likelihood_ode import ode_bits_per_dim
    from difflab.inference.generate import plain

    if method not in ("vlb", "ode", "both"):
        raise UsageError(f"unknown method {method!r}; choose one of: vlb, ode, both")
    check_images(images, shape)
    methods = ["vlb", "ode"] if method == "both" else [method]
    if "vlb" in methods:
        check_vlb_schedule(denoiser.schedule)
    param = next(denoiser.parameters(), torch.empty(0))
    fn = _in_dtype(plain(denoiser, {}), param.dtype)
    device = param.device
    report = {"n": len(images), "dims": images[0].numel()}
    for name in methods:
        g = torch.Generator().manual_seed(seed)
        grid = vlb_grid(denoiser.schedule, steps) if name == "vlb" else None
        per_batch = len(grid) - 1 if name == "vlb" else 1
        total, done, parts = -(-len(images) // batch_size) * per_batch, 0, {}
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].to(device)  # [b, C, H, W] uint8
            if name == "vlb":
                x0 = batch.double() / 127.5 - 1
                with torch.inference_mode():
                    step_cb = None if callback is None else (lambda info, d=done: callback(
                        {"method": name, "done": d + info["i"] + 1, "total": total}))  # fmt: skip
                    out = vlb_terms(fn, x0, grid.to(device), clip_denoised=clip_denoised,
                                    generator=g, callback=step_cb)  # fmt: skip
            else:
                out = ode_bits_per_dim(fn, batch, denoiser.schedule, generator=g, **ode_opts)
                out["nfe"] = out["nfe"].double().expand(len(batch))
            for key, value in out.items():
                parts.setdefault(key, []).append(value.double().cpu())
            done += per_batch
            if callback is not None:
                callback({"method": name, "done": done, "total": total})
        report[name] = {key: summarize(torch.cat(v)) for key, v in parts.items()}
        report[name]["options"] = (
            {"steps": len(grid) - 1, "clip_denoised": bool(clip_denoised)} if name == "vlb"
            else ode_options(ode_opts)
        )  # fmt: skip
    return report


def ode_options(given: dict) -> dict:
    """The ODE estimate's options as used: `given` over `ode_log_likelihood`'s defaults."""
    import inspect

    from difflab.evaluation.likelihood_ode import ode_log_likelihood

    params = inspect.signature(ode_log_likelihood).parameters
    keys = ("probe", "probes", "rtol", "atol", "max_steps")
    used = {k: params[k].default for k in keys} | dict(given)
    if used["probe"] == "exact":
        used.pop("probes")  # the exact trace draws no probes
    return used
