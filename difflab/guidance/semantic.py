"""Semantic guidance with a noise-aware image encoder (Liu et al. 2023, "More control for free").

Each term is a score F(x_σ, σ) [B] whose gradient s·σ²·∇_x F is added to x̂0 (difflab.guidance):
content = cosine similarity of the embeddings of x_σ and of the reference noised to the same σ;
structure = −feature-map distance; style = −Gram-matrix distance; text = cosine similarity of the
embedding of x_σ and a text embedding. The reference noise ε_ref is fixed per run by `seed`.
On latent models the reference is read at the pixel shape; an encoder trained on the model's
latents compares it encoded by the codec, a pixel encoder compares decoded x̂0 with the reference
image (guidance.noise_aware).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.guidance.chain import GUIDANCES, Context, Term, bcast, finite, gradient_term, require
from difflab.guidance.noise_aware import load_checkpoint, net_term

Objective = Callable[[Tensor, Tensor], Tensor]  # F(x [B, ...], σ [B]) -> [B]
TRAIN_ENCODER = "train one with `train_encoder(data, out)`"


def load_reference(path: str | Path, shape: tuple[int, ...], *, resize: bool = False) -> Tensor:
    """A reference image file as pixels [1, C, H, W] ([−1, 1]) for images of `shape` [C, H, W]."""
    from difflab.core.imageio import load_image, uint8_to_pixels

    path = Path(path)
    if len(shape) != 3:
        raise UsageError(
            f"reference image {path} cannot guide a model of {list(shape)} points; "
            "image guidance needs an image model"
        )
    if not path.is_file():
        raise UsageError(f"reference image {path} does not exist; pass ref= an existing image file")
    c, h, w = shape
    try:
        image = load_image(path, c, h if resize and h == w else None)  # [C, H', W'] uint8
    except UsageError:
        raise UsageError(
            f"cannot read reference image {path}; pass ref= a readable PNG or JPEG file"
        ) from None
    if image.shape[1:] != (h, w):
        raise UsageError(
            f"reference image {path} is {image.shape[2]}×{image.shape[1]} but the model makes "
            f"{w}×{h}; resize it to {w}×{h} or pass resize=true"
        )
    return uint8_to_pixels(image)[None]  # [1, C, H, W]


class NoisedReference:
    """x_ref,σ = x_ref + σ·ε_ref with ε_ref drawn once from `seed` (Liu et al. 2023, §3.2)."""

    def __init__(self, reference: Tensor, seed: int = 0):
        g = torch.Generator().manual_seed(int(seed))
        self.reference = reference  # [1, C, H, W]
        self.eps = torch.randn(reference.shape, generator=g).to(reference)  # [1, C, H, W]

    def at(self, sigma: Tensor, like: Tensor) -> Tensor:
        """The noised reference for each σ [B]: [1, ...] when σ is shared by the batch, else [B, ...]."""
        ref, eps = self.reference.to(like), self.eps.to(like)
        sigma = sigma[:1] if bool((sigma == sigma[0]).all()) else sigma
        return ref + bcast(sigma.to(like), ref) * eps  # [1 or B, C, H, W]


def gram(f: Tensor) -> Tensor:
    """Gram matrix f·fᵀ/(C·H·W) of feature maps [B, C, H, W] → [B, C, C] (Gatys et al. 2016, Eq. 3)."""
    b, c, h, w = f.shape
    f = f.reshape(b, c, h * w)  # [B, C, HW]
    return f @ f.transpose(1, 2) / (c * h * w)  # [B, C, C]


def content_score(encoder, ref: NoisedReference) -> Objective:
    """F = cos(E(x_σ, σ), E(x_ref,σ, σ)) (Liu et al. 2023, image content guidance)."""

    def score(x: Tensor, sigma: Tensor) -> Tensor:
        r = ref.at(sigma, x)
        with torch.no_grad():
            target = encoder.embed(r, sigma[: len(r)])  # [1 or B, D]
        return F.cosine_similarity(encoder.embed(x, sigma), target, dim=-1)  # [B]

    return score


def _feature_score(encoder, ref: NoisedReference, distance: Callable) -> Objective:
    """F = −Σ_l distance(f_l(x_σ), f_l(x_ref,σ)) over the encoder's feature maps."""

    def score(x: Tensor, sigma: Tensor) -> Tensor:
        r = ref.at(sigma, x)
        with torch.no_grad():
            targets = encoder.features(r, sigma[: len(r)])  # list of [1 or B, C, H, W]
        feats = encoder.features(x, sigma)  # list of [B, C, H, W]
        return -sum(distance(f, t) for f, t in zip(feats, targets))  # [B]

    return score


def structure_score(encoder, ref: NoisedReference) -> Objective:
    """F = −Σ_l mean‖f_l(x_σ) − f_l(x_ref,σ)‖² (Liu et al. 2023, structure guidance)."""
    return _feature_score(encoder, ref, lambda f, t: (f - t).pow(2).flatten(1).mean(1))


def relative_gram_distance(f: Tensor, t: Tensor) -> Tensor:
    """‖G(f) − G(t)‖²_F / ‖G(t)‖²_F per item [B]: scale-free, so a style scale is comparable to
    the other terms' (raw Gram distances of small feature maps are ~1e-5 of them)."""
    gt = gram(t)  # [1 or B, C, C]
    energy = gt.pow(2).flatten(1).sum(1).clamp_min(1e-12)  # [1 or B]
    return (gram(f) - gt).pow(2).flatten(1).sum(1) / energy  # [B]


def style_score(encoder, ref: NoisedReference) -> Objective:
    """F = −Σ_l ‖G(f_l(x_σ)) − G(f_l(x_ref,σ))‖² / ‖G(f_l(x_ref,σ))‖² (Liu et al. 2023, style
    guidance, with the Gram distance of Gatys et al. 2016 normalised by the reference's)."""
    return _feature_score(encoder, ref, relative_gram_distance)


def text_score(encoder, text_embedding: Tensor, index: Tensor | None = None) -> Objective:
    """F = cos(E(x_σ, σ), E_text(prompt)) (Liu et al. 2023, language guidance); text_embedding
    [P, D] holds P prompts' embeddings, sample i aims at row index[i] (default: row 0)."""

    def score(x: Tensor, sigma: Tensor) -> Tensor:  # runs outside inference mode (gradient_term)
        targets = F.normalize(text_embedding.float(), dim=-1)  # [P, D]
        target = targets[:1] if index is None else targets[index.to(targets.device)]  # [1|B, D]
        return (encoder.embed(x, sigma) * target.to(x.device)).sum(-1)  # [B]

    return score


def semantic_guidance(fn, objective: Objective, *, scale: float = 1.0, through=gradient_term):
    """D̃ = D + s·σ²·∇_x F(x_σ, σ) for a semantic score F (Liu et al. 2023, Eq. 6 in σ-space);
    `through` builds the term (guidance.noise_aware.net_term: through the decoder if needed)."""
    return through(fn, objective, scale)


def text_embedding(encoder, prompts: str | list[str]) -> Tensor:
    """Pooled prompt embeddings [P, D] from the text encoder the image encoder was trained with."""
    from difflab.conditioning.text_encoder import load_text_encoder

    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    pooled = load_text_encoder(encoder.text_encoder).encode(prompts)["pooled"].float()  # [P, D]
    if pooled.shape[-1] != encoder.dim:
        raise UsageError(
            f"text encoder {encoder.text_encoder!r} gives {pooled.shape[-1]}-d embeddings but the "
            f"image encoder makes {encoder.dim}-d ones; use the encoder's own text encoder"
        )
    return pooled


def _image_term(name: str, make: Callable) -> Callable:
    """Register `name`: a reference-image term built from `make(encoder, NoisedReference)`."""

    def factory(ctx: Context, *, ckpt: str | None = None, ref: str | None = None,
                scale: float = 1.0, seed: int = 0, resize: bool = False) -> Term:  # fmt: skip
        finite(name, "scale", scale)
        require(name, "ckpt", ckpt, TRAIN_ENCODER)
        require(name, "ref", ref, "pass the reference image file, e.g. ref=img.png")
        reference = load_reference(ref, ctx.image_shape, resize=resize).to(ctx.device)
        encoder = load_checkpoint(ctx, "encoder", ckpt)
        through = net_term(ctx, encoder)
        if through is gradient_term and ctx.latent:  # a latent encoder: compare latents
            with torch.no_grad():
                reference = ctx.codec.encode(reference)  # [1, *latent]
        objective = make(encoder, NoisedReference(reference, seed))
        return lambda fn, cond: semantic_guidance(fn, objective, scale=scale, through=through)

    factory.__doc__ = f"Semantic {name} guidance by a reference image and a noise-aware encoder."
    return GUIDANCES.register(name, kind="term", options={
        "ckpt": "noise-aware image encoder checkpoint (`train_encoder`)",
        "ref": "reference image file",
        "scale": f"gradient weight s of the {name} similarity to the reference",
        "seed": "seed of the noise added to the reference at each σ",
        "resize": "resize a square reference to the model's size (else sizes must match)",
    })(factory)  # fmt: skip


_image_term("content", content_score)
_image_term("structure", structure_score)
_image_term("style", style_score)


@GUIDANCES.register("text", kind="term", options={
    "ckpt": "noise-aware image encoder checkpoint with a text encoder (`train_encoder`)",
    "prompt": "text to guide towards (default: each sample's prompt)",
    "scale": "gradient weight s of the image–text similarity"})  # fmt: skip
def _text(ctx: Context, *, ckpt: str | None = None, prompt: str | None = None,
          scale: float = 1.0) -> Term:  # fmt: skip
    """Semantic text guidance toward `prompt`, or else toward each sample's own prompt."""
    finite("text", "scale", scale)
    require("text", "ckpt", ckpt, TRAIN_ENCODER)
    prompts = [prompt] if prompt else ctx.prompts
    require("text", "prompt", prompts or None, "or pass `prompts`")
    encoder = load_checkpoint(ctx, "encoder", ckpt)
    through = net_term(ctx, encoder)
    targets = text_embedding(encoder, prompts).to(ctx.device)  # [P, D]

    def term(fn, cond):
        index = cond.get("prompt_index") if not prompt else None  # [B] or None: one prompt
        objective = text_score(encoder, targets, index)
        return semantic_guidance(fn, objective, scale=scale, through=through)

    return term
