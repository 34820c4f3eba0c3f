"""Gradient guidance by noise-aware nets (classifier, semantic encoder) in the model's space.

A noise-aware net reads σ-space x = x0 + σ·ε. On a latent model (a learned codec) a net trained
on this model's latents (its meta names the codec file's sha256: `train_classifier(data, out,
codec=...)`, `train_encoder(...)`) reads x directly, as a pixel net does on a pixel model. A net
trained on pixels cannot read x: the decoded noisy latent decode(x_σ) is not a noisy image at any
σ. It reads the decoded x̂0 = decode(D(x; σ)) at its smallest training σ instead, its gradient
taken through the decoder and the denoiser (`decoded_gradient_term`). The identity codec is pixel
space: those models take the direct path, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from difflab.codecs.base import Codec
from difflab.core.errors import UsageError
from difflab.core.types import bcast
from difflab.guidance.chain import (
    GUIDANCES,
    Context,
    DenoiseFn,
    Term,
    classifier_guidance,
    finite,
    gradient_term,
    require,
    wrap,
)


def decoded_gradient_term(
    fn: DenoiseFn, objective: Callable[[Tensor, Tensor], Tensor], scale: float, codec: Codec,
    sigma_eval: float,
) -> DenoiseFn:  # fmt: skip
    """D̃ = D + s·σ²·∇_x F(decode(D(x; σ)), σ_eval) for a pixel-space F [B] on a latent model:
    F read at the decoded x̂0 (universal guidance's forward term, Bansal et al. 2023, Eq. 6; the
    x̂0 approximation p(y | x_σ) ≈ p(y | x̂0) of DPS, Chung et al. 2023, Eq. 11), its gradient
    taken through the decoder and the denoiser (one more forward and a backward per call)."""

    def modify(x: Tensor, sigma: Tensor, denoised: Tensor) -> Tensor:
        with torch.inference_mode(False), torch.enable_grad():
            x_in = x.detach().clone().requires_grad_(True)  # [B, *latent]
            sigma_in = sigma.detach().clone()  # [B]
            pixels = codec.decode(fn(x_in, sigma_in))  # [B, C, H, W]
            level = torch.full_like(sigma_in, sigma_eval)  # [B]: x̂0 is (nearly) clean
            (grad,) = torch.autograd.grad(objective(pixels, level).sum(), x_in)
        return denoised + scale * bcast(sigma, x) ** 2 * grad.to(denoised.dtype)

    return wrap(fn, modify)


def load_checkpoint(ctx: Context, kind: str, path: str):
    """Load (once per build) a noise-aware classifier/encoder, moved to ctx.device, checked to
    read this model's space (`net_space`)."""
    key = (kind, str(path))
    if key not in ctx.cache:
        if kind == "classifier":
            from difflab.storage.noise_aware import load_classifier as load
        else:
            from difflab.storage.noise_aware import load_encoder as load
        model = load(path).to(ctx.device)
        net_space(ctx, model)
        ctx.cache[key] = model
    return ctx.cache[key]


def net_space(ctx: Context, net) -> str:
    """The space `net` reads: "model" when the noise-aware `net` was trained in this model's space (pixels, or the
    latents of the same codec file: meta["codec"]["sha256"]), "pixels" for a pixel net on a
    latent model (read at the decoded x̂0); shape-checked; another codec's net is a UsageError."""
    trained_on = (net.meta.get("codec") or {}).get("sha256")  # None: trained on pixels
    model = getattr(ctx.codec, "file_sha256", "a codec without a file") if ctx.latent else None
    if trained_on == model:
        net.check_compatible(ctx.shape)
        return "model"
    if trained_on is None:
        net.check_compatible(ctx.image_shape)
        return "pixels"
    space = "pixels" if model is None else f"the latents of codec sha256 {model[:12]}…"
    raise UsageError(
        f"this {net.kind} was trained on the latents of codec sha256 {trained_on[:12]}… but this "
        f"model works in {space}; train the {net.kind} on this model's space "
        f"(`train_{net.kind}(data, out)` with `codec` = the model's codec file, or without for "
        "a pixel model)"
    )


def net_term(ctx: Context, net) -> Callable:
    """through(fn, objective, scale) → DenoiseFn for a noise-aware net's score F(x, σ):
    `gradient_term` on x in the net's own space, `decoded_gradient_term` for a pixel net on a
    latent model (F at decode(x̂0) and the net's smallest training σ)."""
    if net_space(ctx, net) == "model":
        return gradient_term
    sigma_eval = float(net.meta.get("sigma_range", [0.002])[0])
    return lambda fn, objective, scale: decoded_gradient_term(
        fn, objective, scale, ctx.codec, sigma_eval
    )


@GUIDANCES.register("classifier", kind="term", options={
    "ckpt": "noise-aware classifier checkpoint (`train_classifier`)",
    "scale": "gradient weight s of ∇ log p(y | x_σ)",
    "label": "class y to guide towards (default: each sample's class)"})  # fmt: skip
def _classifier(ctx: Context, *, ckpt: str | None = None, scale: float = 1.0,
                label: int | None = None) -> Term:  # fmt: skip
    """Classifier guidance by a noise-aware classifier checkpoint (difflab train-classifier)."""
    finite("classifier", "scale", scale)
    require("classifier", "ckpt", ckpt, "train one with `train_classifier(data, out)`")
    clf = load_checkpoint(ctx, "classifier", ckpt)
    through = net_term(ctx, clf)
    return lambda fn, cond: classifier_guidance(fn, cond, clf, scale=scale, label=label,
                                                through=through)  # fmt: skip
