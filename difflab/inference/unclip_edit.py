"""unCLIP image manipulations (Ramesh et al. 2022 §3) with an embedding-conditioned decoder.

    rows = variations(pipe, images, n=8)                          # §3.1: new noise, same z_i
    row = interpolate_embeddings(pipe, images[:2], frames=8)      # §3.2: slerp(z_i1, z_i2, θ)
    row = text_diff_edit(pipe, image, "a cat", "a dog", strengths=torch.linspace(0, .5, 6))  # §3.3

The decoder is a Pipeline whose conditioner is `conditioning.embedding` (its CLIP file embeds
the images and the texts). Interpolations and text diffs decode every frame from the same noise
x_T (seed `seed`), as the paper fixes the decoder's DDIM latent; variations give sample i the
seed seed + i. Options: those of every edit (inference.edit_base.OPTIONS: seed, sampler, steps,
discretization, guidance, batch_size, device, callback); classes and prompts are refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from difflab.conditioning.embedding import EmbeddingConditioner
from difflab.core.errors import UsageError
from difflab.core.schedules import discretize
from difflab.core.spherical import slerp, text_diff, unit
from difflab.inference.edit_base import OPTIONS, as_pixels
from difflab.inference.generate import generate
from difflab.inference.pipeline import Pipeline

TEXT_DIFF_STRENGTHS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)  # θ of §3.3 (the paper shows 0.25–0.5)


def decoder(pipe: Pipeline) -> EmbeddingConditioner:
    """The pipeline's embedding conditioner, or a UsageError for any other model."""
    cond = pipe.conditioner
    if not isinstance(cond, EmbeddingConditioner):
        raise UsageError(
            f"this model {getattr(cond, 'summary', 'is unconditional')}, not an unCLIP decoder; "
            'train one with model.cond = {name = "embedding", clip = "clip.safetensors"}'
        )
    return cond


@torch.no_grad()
def image_embeddings(pipe: Pipeline, images: Tensor) -> Tensor:
    """Unit CLIP image embeddings z_i [n, D] of uint8 images or pixels [n, C, H, W] (CPU)."""
    x0 = pipe.encode(as_pixels(pipe, images))  # [n, *shape] model space
    return decoder(pipe).clip.embed_images(x0).cpu()


def text_embeddings(pipe: Pipeline, texts: Sequence[str]) -> Tensor:
    """Unit text embeddings z_t [n, D] of the decoder's CLIP text encoder."""
    return decoder(pipe).clip.embed_texts(list(texts)).cpu()


def decode(pipe: Pipeline, z: Tensor, *, same_noise: bool = False, **options) -> Tensor:
    """Decode image embeddings z [n, D] to uint8 images [n, C, H, W] (the request input
    `embeddings` of `Pipeline.stream`); `same_noise`: every sample uses seed's noise (x_T and a
    stochastic sampler's steps), else sample i uses seed + i's."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UsageError(f"unknown option `{unknown[0]}`; the options are: {', '.join(OPTIONS)}")
    for key in ("classes", "prompts", "negative_prompts"):  # the edit options of other models
        if options.get(key):
            raise UsageError(f"`{key}` given but an unCLIP edit is conditioned on image "
                             f"embeddings only; drop `{key}`")  # fmt: skip
    decoder(pipe)
    s = pipe.settings(sampler=options.get("sampler"), steps=options.get("steps"),
                      discretization=options.get("discretization"),
                      guidance=options.get("guidance"), batch_size=options.get("batch_size"),
                      seed=options.get("seed"))  # fmt: skip
    n = len(z)
    cond, chain, _ = pipe.conditions(n, s, options.get("device"), embeddings=z)
    device = pipe.device
    sigmas = discretize(pipe.denoiser.schedule, s.discretization, s.steps)
    run = dict(sampler=s.sampler, sigmas=sigmas, guidance=chain, device=device,
               callback=options.get("callback"))  # fmt: skip
    if same_noise:  # the paper's fixed decoder latent x_T, and one noise stream for every frame
        batches = (b for i in range(n) for b in generate(
            pipe.denoiser, pipe.shape, n=1, seed=s.seed,
            cond={k: v[i : i + 1] for k, v in cond.items()}, **run))  # fmt: skip
    else:  # sample i from seed + i
        batches = generate(pipe.denoiser, pipe.shape, n=n, seed=s.seed, batch_size=s.batch_size,
                           cond=cond, **run)  # fmt: skip
    return pipe.to_images(torch.cat([b.cpu() for b in batches]))


def variations(pipe: Pipeline, images: Tensor, *, n: int = 8, **options) -> Tensor:
    """n decodes of each image's embedding with new noise (§3.1): uint8 [k·n, C, H, W], the n
    variations of image j at j·n … j·n + n − 1."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UsageError(f"`n` must be an integer >= 1, got {n!r}")
    pixels = as_pixels(pipe, images)  # [k, C, H, W]
    z = image_embeddings(pipe, pixels).repeat_interleave(n, 0)  # [k·n, D]
    return decode(pipe, z, **options)


def _frames(frames: int, what: str = "frames") -> int:
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 2:
        raise UsageError(f"`{what}` must be an integer >= 2, got {frames!r}")
    return frames


def interpolate_embeddings(pipe: Pipeline, images: Tensor, *, frames: int = 8,
                           **options) -> Tensor:  # fmt: skip
    """Decode slerp(z_i1, z_i2, θ) for θ = 0 … 1 from one fixed x_T (§3.2): uint8
    [frames, C, H, W]; the ends are variations of the two images."""
    pixels = as_pixels(pipe, images)
    if len(pixels) != 2:
        raise UsageError(f"interpolation takes 2 `images` (the two ends), got {len(pixels)}")
    za, zb = image_embeddings(pipe, pixels)  # [D] each
    z = unit(slerp(za, zb, torch.linspace(0, 1, _frames(frames))))  # [T, D]
    return decode(pipe, z, same_noise=True, **options)


def text_diff_edit(pipe: Pipeline, image: Tensor, source: str, target: str, *,
                   strengths: Sequence[float] | Tensor = TEXT_DIFF_STRENGTHS,
                   **options) -> Tensor:  # fmt: skip
    """Move the image's embedding toward the text diff norm(z_t − z_t0) of `target` vs `source`
    by slerp at each θ in `strengths` (§3.3) and decode from one fixed x_T: uint8
    [len(strengths), C, H, W] (θ = 0: a reconstruction-like variation)."""
    pixels = as_pixels(pipe, image)
    if len(pixels) != 1:
        raise UsageError(f"a text diff edits one image; `image` holds {len(pixels)}")
    theta = torch.as_tensor(strengths, dtype=torch.float64).reshape(-1)
    if not len(theta) or theta.min() < 0 or theta.max() > 1:
        raise UsageError(f"`strengths` must be values in [0, 1], got {theta.tolist()}")
    z_i = image_embeddings(pipe, pixels)[0]  # [D]
    z_t0, z_t = text_embeddings(pipe, [source, target])  # [D] each
    z = text_diff(z_i, z_t0, z_t, theta.float())  # [T, D]
    return decode(pipe, z, same_noise=True, **options)
