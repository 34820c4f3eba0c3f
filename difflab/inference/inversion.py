"""DDIM inversion, reconstruction and null-text inversion on any Pipeline.

    inv = invert(pipe, images, classes=[3], steps=50)        # the ODE run upward: x0 → x(σ_max)
    images = reconstruct(pipe, inv)                          # and back down: ≈ images
    inv = null_text_inversion(pipe, images, scale=7.5, classes=[3])
    images = reconstruct(pipe, inv)                          # ≈ images at CFG 7.5 too

The inversion grid is the model's grid of `steps` intervals without its final 0, run upward
from its smallest σ, where x = E(image) (the ODE's slope is undefined at σ = 0); reconstruction
runs it back down and returns the state there. Only reversible samplers with their noise off
(`samplers.base.check_reversible`) are accepted, for both directions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.types import NULL_PREFIX, Cond
from difflab.inference.edit_base import EditRun, as_pixels, prepare
from difflab.inference.pipeline import Pipeline
from difflab.samplers.base import SAMPLERS, check_reversible

NULL_SLOTS = ("vector", "tokens")  # the float slots whose null embedding null-text optimises
DEFAULT_SAMPLER = "ddim"  # DDIM (η = 0) = Euler in σ-space


@dataclass
class Inversion:
    """Model-space states x [n, *shape] at σ_max of the increasing grid `sigmas` [steps + 1], what
    produced them, and (null-text) one optimised null cond per reconstruction step."""

    x: Tensor
    sigmas: Tensor
    request: dict  # classes, prompts, sampler, steps, discretization, guidance, seed
    nulls: list[Cond] | None = (
        None  # nulls[i]: slot → [n, ...] for the step σ_{k+1} → σ_k, i = 0 first
    )
    trajectory: list[Tensor] = field(default_factory=list)  # states at sigmas[0..] [n, *shape]


def inversion_run(pipe: Pipeline, n: int, options: dict) -> tuple[EditRun, Tensor]:
    """(run, increasing grid [steps + 1] > 0) with a reversible sampler, `ddim` by default."""
    options = {**options, "sampler": options.get("sampler") or DEFAULT_SAMPLER}
    run = prepare(pipe, n, **options)
    name, opts = run.sampler
    check_reversible(name, opts)
    sigmas = run.grid(run.settings.steps + 1)[:-1].flip(0)  # σ_min .. σ_max, without the 0
    return run, sigmas


def _request(options: dict) -> dict:
    keep = ("classes", "prompts", "sampler", "steps", "discretization", "guidance", "seed")
    return {k: options[k] for k in keep if options.get(k) is not None}


@torch.inference_mode()
def invert(
    pipe: Pipeline, images: Tensor, *, keep_trajectory: bool = False, **options
) -> Inversion:
    """DDIM inversion (Song et al. 2021a, §4.3; Dhariwal & Nichol 2021, App. F): the probability-
    flow ODE integrated upward from x = E(image) at the grid's smallest σ to σ_max.

    `options` as `edit_base.prepare`; the sampler defaults to `ddim` and must be reversible.
    `keep_trajectory` keeps every intermediate state (null-text's pivot)."""
    pixels = as_pixels(pipe, images)
    run, sigmas = inversion_run(pipe, len(pixels), options)
    x0 = pipe.encode(pixels)
    xs, traj = [], []
    for idx, fn, noise in run.batches():
        states = [x0[idx].to(run.device)]
        keep = (lambda info: states.append(info["x"])) if keep_trajectory else None
        xs.append(run.sample(fn, states[0], sigmas, noise, idx, on_step=keep).cpu())
        traj.append([s.cpu() for s in states])
    trajectory = [torch.cat(t) for t in zip(*traj)] if keep_trajectory else []
    return Inversion(torch.cat(xs), sigmas.cpu(), _request(options), None, trajectory)


def _step_fns(run: EditRun, inv: Inversion, idx: slice) -> list:
    """Per reconstruction step, the DenoiseFn of the samples idx (null-text: each with its null)."""
    if inv.nulls is None:
        return [run.fn(idx)] * (len(inv.sigmas) - 1)
    return [run.fn(idx, {**run.cond, **{NULL_PREFIX + k: v for k, v in null.items()}})
            for null in inv.nulls]  # fmt: skip


def reconstruct(pipe: Pipeline, inv: Inversion, **options) -> Tensor:
    """`reconstruct_x` decoded: uint8 images [n, C, H, W]."""
    return pipe.to_images(reconstruct_x(pipe, inv, **options))


@torch.inference_mode()
def reconstruct_x(pipe: Pipeline, inv: Inversion, **options) -> Tensor:
    """Run an inversion back down its grid with the same sampler and condition: model-space
    states [n, *shape] at the grid's smallest σ (CPU).

    `options` override the inversion's request (e.g. `guidance`="cfg:scale=3"); with null-text
    nulls each step uses its own null condition, one sampler call per step (samplers without a
    history only)."""
    request = {**inv.request, **options}
    run, sigmas = inversion_run(pipe, len(inv.x), request)
    if sigmas.shape != inv.sigmas.shape or not torch.allclose(sigmas.cpu(), inv.sigmas):
        raise UsageError(
            "the reconstruction grid differs from the inversion's; pass the same `steps` and "
            "`discretization` as to `invert`"
        )
    down = sigmas.flip(0)  # σ_max .. σ_min
    out = []
    for idx, _, noise in run.batches():
        x, fns = inv.x[idx].to(run.device), _step_fns(run, inv, idx)
        if inv.nulls is None:
            x = run.sample(fns[0], x, down, noise, idx)
        else:
            require_single_step(run.sampler[0])
            for i, fn in enumerate(fns):
                x = run.sample(fn, x, down[i : i + 2], noise, idx, offset=i)
        out.append(x.cpu())
    return torch.cat(out)


def require_single_step(name: str) -> None:
    """UsageError for a sampler with a history (null-text restarts the sampler every step)."""
    if SAMPLERS.meta(name).get("history"):
        raise UsageError(
            f"null-text inversion runs one sampler call per step, which restarts sampler "
            f"{name!r} (it keeps a history); use a single-step sampler such as ddim, euler or heun"
        )


def with_inversion(inv: Inversion, **changes) -> Inversion:
    """A copy of `inv` with fields replaced (e.g. x for interpolated states)."""
    return replace(inv, **changes)


def save_inversion(path, inv: Inversion) -> None:
    """Write an Inversion as safetensors (x, sigmas, per-step nulls) + its request, atomically."""
    from difflab.storage.checkpoint import save_tensors

    tensors = {"x": inv.x, "sigmas": inv.sigmas}
    for i, null in enumerate(inv.nulls or []):
        tensors.update({f"null.{i}.{k}": v for k, v in null.items()})
    meta = {"kind": "inversion", "request": inv.request, "steps": len(inv.nulls or [])}
    save_tensors(path, tensors, meta)


def load_inversion(path) -> Inversion:
    """An Inversion written by `save_inversion`; any other file is a UsageError."""
    from difflab.storage.checkpoint import load_tensors

    tensors, meta = load_tensors(path)
    if meta.get("kind") != "inversion":
        raise UsageError(f"{path} is not an inversion; make one with `invert` and `save_inversion`")
    nulls = [{k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"null.{i}.")}
             for i in range(meta["steps"])]  # fmt: skip
    return Inversion(tensors["x"], tensors["sigmas"], meta["request"], nulls or None)
