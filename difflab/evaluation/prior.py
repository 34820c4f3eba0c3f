"""Prior quality: cosine similarity of sampled vs true CLIP image embeddings on held-out captions,
next to the baseline of Ramesh et al. 2022 (§5.1/Fig. 7 discussion): the caption's own text
embedding used as the image embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from difflab.core.errors import UsageError
from difflab.data.datasets import Dataset
from difflab.data.embeddings import to_unit
from difflab.inference.pipeline import Pipeline
from difflab.inference.unclip import prior_embeddings


@torch.no_grad()
def prior_cosine(prior: Pipeline, data: Dataset, *, n: int | None = None, seed: int = 0,
                 scale: float = 1.0, steps: int | None = None,
                 sampler: str | dict | None = None,
                 mean: torch.Tensor | None = None) -> dict[str, float]:  # fmt: skip
    """{"prior", "baseline", "n"}: mean cos(prior sample, true embedding) over the first `n`
    items of an embedding dataset (each captioned by its class's first template), and mean
    cos(caption's text embedding, true embedding); with `mean` [D] (e.g. the training set's
    mean embedding) also "mean": cos(mean, true embedding), the score of ignoring the caption."""
    n = len(data) if n is None else min(n, len(data))
    if n < 1 or data.labels is None:
        raise UsageError("prior_cosine needs labelled embedding data; pass a `clip_embeddings` set")
    truth = to_unit(data.x[:n])  # [n, D]
    prompts = prior.conditioner.class_prompts(data.labels[:n], data.class_names)
    sampled = prior_embeddings(prior, prompts, seed=seed, scale=scale, steps=steps,
                               sampler=sampler)  # [n, D]  # fmt: skip
    text = prior.conditioner.encode_prompts(prompts)["vector"].float()  # [n, D]
    cos = lambda a, b: F.cosine_similarity(a.float(), b.float(), dim=-1).mean().item()  # noqa: E731
    out = {"prior": cos(sampled, truth), "baseline": cos(text, truth), "n": n}
    if mean is not None:
        out["mean"] = cos(mean.reshape(1, -1).expand_as(truth), truth)
    return out
