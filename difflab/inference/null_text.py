"""Null-text inversion (Mokady et al. 2023): reconstruction that holds at CFG scale w > 1.

DDIM inversion at w = 1 gives a pivot trajectory x*_σ; sampling back at w > 1 drifts from it.
Per step σ → σ' (from σ_max down), the null condition ∅_σ that CFG uses for its unconditional
branch is optimised so that one CFG step from the current state lands on the pivot:
min_∅ ‖x*_σ' − step(x̄_σ, ∅; c, w)‖² (their Eq. 4, Alg. 1), starting from the previous step's
∅. The condition carries its null as cond["null.<slot>"] (core.types.null_cond), so every
guidance chain and every single-step reversible sampler takes it unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.types import NULL_PREFIX, Cond, null_cond
from difflab.guidance.chain import parse_guidance
from difflab.inference.edit_base import EditRun
from difflab.inference.inversion import (
    NULL_SLOTS,
    Inversion,
    inversion_run,
    invert,
    require_single_step,
)
from difflab.inference.pipeline import Pipeline
from difflab.samplers.base import sample


def with_null(cond: Cond, null: Cond) -> Cond:
    """cond whose CFG null branch uses `null` (slot → tensor) instead of zeros."""
    return {**cond, **{NULL_PREFIX + k: v for k, v in null.items()}}


def step_loss(run: EditRun, idx: slice, null: Cond, x: Tensor, sigmas: Tensor,
              target: Tensor) -> Tensor:  # fmt: skip
    """‖target − step(x, ∅ = null)‖² per element (mean) for one sampler step sigmas[0] → sigmas[1]
    (Mokady et al. 2023, Eq. 4)."""
    name, opts = run.sampler
    x_next = sample(name, run.fn(idx, with_null(run.cond, null)), x, sigmas, **opts)  # no callback
    return (x_next - target).pow(2).mean()


def null_gradient(run: EditRun, idx: slice, null: Cond, x: Tensor, sigmas: Tensor,
                  target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:  # fmt: skip
    """(loss, ∂loss/∂null per slot) of `step_loss`; exactly zero at CFG scale 1, where the null
    branch cancels: D̃ = D(x|∅) + 1·(D(x|c) − D(x|∅)) = D(x|c)."""
    with torch.inference_mode(False), torch.enable_grad():
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in null.items()}
        loss = step_loss(run, idx, leaves, x.detach().clone(), sigmas, target.detach().clone())
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    return loss.detach(), {k: torch.zeros_like(v) if g is None else g
                           for (k, v), g in zip(leaves.items(), grads)}  # fmt: skip


def optimise_null(run: EditRun, idx: slice, null: Cond, x: Tensor, sigmas: Tensor,
                  target: Tensor, *, inner_steps: int, lr: float, tol: float) -> Cond:  # fmt: skip
    """Adam on the null condition for one step (Mokady et al. 2023, Alg. 1, inner loop), stopping
    early once the loss, scaled to the VP data range by 1/(1 + σ'²), is below `tol`."""
    with torch.inference_mode(False):
        params = {k: v.detach().clone().requires_grad_(True) for k, v in null.items()}
        opt = torch.optim.Adam(list(params.values()), lr=lr)
        scale = 1.0 / (1.0 + float(sigmas[1]) ** 2)
        for _ in range(inner_steps):
            loss, grads = null_gradient(run, idx, params, x, sigmas, target)
            if float(loss) * scale < tol:
                break
            for k, p in params.items():
                p.grad = grads[k]
            opt.step()
        return {k: v.detach() for k, v in params.items()}


def guidance_at(scale: float, guidance) -> list:
    """CFG at `scale` followed by the caller's guidance terms (a bridge among them is refused)."""
    terms = parse_guidance(guidance) if isinstance(guidance, str) else list(guidance or [])
    terms = [t for g in terms for t in (parse_guidance(g) if isinstance(g, str) else [dict(g)])]
    if any(t["name"] in ("cfg", "plain") for t in terms):
        raise UsageError(
            "null-text inversion sets classifier-free guidance itself; pass its scale as "
            "`scale` and drop cfg from `guidance`"
        )
    return [{"name": "cfg", "scale": float(scale)}, *terms]


def null_text_inversion(
    pipe: Pipeline,
    images: Tensor,
    *,
    scale: float,
    inner_steps: int = 10,
    lr: float = 1e-2,
    tol: float = 1e-5,
    **options,
) -> Inversion:
    """Null-text inversion (Mokady et al. 2023, Alg. 1): the pivot is DDIM inversion at CFG 1,
    then per step (σ_max first) the null condition is optimised so CFG at `scale` follows it.

    Returns an Inversion whose `nulls` make `reconstruct(pipe, inv)` sample at CFG `scale` back
    to ≈ the images. `options` as `invert` (a condition, `classes` or `prompts`, is needed).
    """
    if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) or inner_steps < 0:
        raise UsageError(f"`inner_steps` must be an integer >= 0, got {inner_steps!r}")
    guidance = options.pop("guidance", None)
    pivot = invert(pipe, images, keep_trajectory=True,
                   guidance=guidance_at(1.0, guidance), **options)  # fmt: skip
    target_guidance = guidance_at(scale, guidance)
    n = len(pivot.x)
    run, sigmas = inversion_run(pipe, n, {**options, "guidance": target_guidance})
    require_single_step(run.sampler[0])
    down = sigmas.flip(0)  # σ_max .. σ_min
    steps = len(down) - 1
    slots = [k for k in NULL_SLOTS if k in run.cond]
    if not slots:
        raise UsageError(
            "null-text inversion needs a model with a class or text condition; pass `classes` "
            "or `prompts`"
        )
    zero = null_cond(run.cond)
    per_batch = []
    for idx, _, noise in run.batches():
        x = pivot.x[idx].to(run.device)
        null = {k: zero[k][idx].to(run.device) for k in slots}
        nulls = []
        for i in range(steps):
            target = pivot.trajectory[steps - 1 - i][idx].to(run.device)  # x* at down[i + 1]
            null = optimise_null(run, idx, null, x, down[i : i + 2], target,
                                 inner_steps=inner_steps, lr=lr, tol=tol)  # fmt: skip
            nulls.append({k: v.cpu() for k, v in null.items()})
            with torch.inference_mode():
                fn = run.fn(idx, with_null(run.cond, null))
                x = run.sample(fn, x, down[i : i + 2], noise, idx, offset=i)
        per_batch.append(nulls)
    merged = [{k: torch.cat([b[i][k] for b in per_batch]) for k in slots} for i in range(steps)]
    request = {**pivot.request, "guidance": target_guidance}
    return Inversion(pivot.x, pivot.sigmas, request, merged, pivot.trajectory)
