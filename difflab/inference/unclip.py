"""unCLIP (Ramesh et al. 2022): prompts → the prior's image embeddings → a decoder's images.

    prior = difflab.load("runs/prior")                      # a `train-prior` run
    images = unclip_sample(prior, ["red apple emoji"], decode, n=8, prior_scale=2)

The prior samples unit CLIP image embeddings from the caption's text condition (tokens and text
embedding of the Clip's frozen text encoder) with CFG; `decode(image_embeddings, n, seed)` makes
images from them, so any decoder fits (`pipeline_decoder` adapts a Pipeline whose conditioner
takes `embeddings`, e.g. the `embedding` conditioner).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor

from difflab.core.errors import UsageError
from difflab.data.embeddings import to_unit
from difflab.inference.pipeline import Pipeline

Decode = Callable[[Tensor, int, int], Tensor]  # (image embeddings [n, D], n, seed) → images


def cfg_guidance(scale: float) -> list[str]:
    """The guidance specs of CFG at `scale` (none at 1: the conditional model alone)."""
    return [] if float(scale) == 1.0 else [f"cfg:scale={float(scale)}"]


def prior_embeddings(prior: Pipeline, prompts: Sequence[str], *, n: int | None = None,
                     seed: int = 0, scale: float = 1.0, sampler: str | dict | None = None,
                     steps: int | None = None, discretization: str | dict | None = None,
                     batch_size: int | None = None,
                     callback: Callable[[dict], None] | None = None) -> Tensor:  # fmt: skip
    """Unit image embeddings [n, D] sampled by the prior for `prompts` (cycled over n; default
    one each) with CFG `scale` (Ho & Salimans 2022), renormalised (the prior's data are √D·e)."""
    if not prompts:
        raise UsageError("the prior is conditioned on text; pass `prompts`")
    n = len(prompts) if n is None else n
    x = prior.sample(n, prompts=list(prompts), seed=seed, guidance=cfg_guidance(scale),
                     sampler=sampler, steps=steps, discretization=discretization,
                     batch_size=batch_size, callback=callback).x  # [n, D]  # fmt: skip
    return to_unit(x)


@dataclass
class UnclipSamples:
    """Images, the image embeddings they were decoded from [n, D], and each sample's prompt."""

    images: Tensor
    embeddings: Tensor
    prompts: list[str]


def unclip_sample(prior: Pipeline, prompts: Sequence[str], decode: Decode, *,
                  n: int | None = None, seed: int = 0, prior_scale: float = 1.0,
                  prior_steps: int | None = None,
                  prior_sampler: str | dict | None = None) -> UnclipSamples:  # fmt: skip
    """Text → prior → decoder (Ramesh et al. 2022, §2): sample i's embedding and image both
    depend on seed + i only."""
    n = len(prompts) if n is None else n
    embeddings = prior_embeddings(prior, prompts, n=n, seed=seed, scale=prior_scale,
                                  steps=prior_steps, sampler=prior_sampler)  # fmt: skip
    images = decode(embeddings, n, seed)
    return UnclipSamples(images, embeddings, [prompts[i % len(prompts)] for i in range(n)])


def pipeline_decoder(decoder: Pipeline, *, scale: float = 1.0, sampler: str | dict | None = None,
                     steps: int | None = None, discretization: str | dict | None = None,
                     batch_size: int | None = None, guidance: Sequence = ()) -> Decode:  # fmt: skip
    """`decode` for a decoder Pipeline conditioned on image embeddings (the request input
    `embeddings` of `Pipeline.stream`), with CFG at `scale` and any further `guidance` specs."""

    def decode(embeddings: Tensor, n: int, seed: int) -> Tensor:
        if len(embeddings) != n:
            raise UsageError(
                f"{len(embeddings)} image embeddings for n={n} samples; pass n of each"
            )
        return decoder(n, embeddings=embeddings, seed=seed,
                       guidance=[*cfg_guidance(scale), *guidance],
                       sampler=sampler, steps=steps, discretization=discretization,
                       batch_size=batch_size)  # fmt: skip

    return decode
