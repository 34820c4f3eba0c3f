"""Training the unCLIP prior (Ramesh et al. 2022, §2.2) through the one training loop: the
embedding cache of (dataset, Clip) is the data, the built-in `prior` config the model."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from difflab.conditioning.captions import captions
from difflab.conditioning.text_encoder import load_text_encoder
from difflab.core.config import Config, apply_overrides, from_dict, load_config
from difflab.core.errors import UsageError
from difflab.data.embeddings import read_cache_meta
from difflab.storage.embedding_cache import embedding_cache
from difflab.training.loop import train

CHECK_PROMPTS = 4  # captions whose Clip text embedding is checked against the prior's condition


def prior_config(cache: str | Path, overrides: Sequence[str] = ()) -> Config:
    """The built-in `prior` config trained on the embedding cache `cache`: its data, and a text
    condition by the Clip's frozen text encoder with the source data's caption templates; then
    `overrides` ("train.steps=100", "model.net.width=128", ...)."""
    meta = read_cache_meta(cache)
    cfg = load_config("prior")
    cfg.data.dataset = {"name": "clip_embeddings", "path": str(Path(cache).resolve())}
    cfg.model.cond |= {"encoder": meta["clip"]["text_encoder"], "dataset": meta["dataset"]["name"]}
    return from_dict(apply_overrides(cfg.to_dict(), list(overrides))).validate()


def check_text_space(clip: Any, text_encoder: str, dataset: str, class_names: list[str]) -> None:
    """UsageError unless `clip.embed_texts` is the pooled vector of `text_encoder` (the prior's
    text condition, Ramesh et al. 2022 §2.2: the CLIP text embedding), on a few captions."""
    prompts = [per_class[0] for per_class in captions(dataset, class_names[:CHECK_PROMPTS])]
    pooled = load_text_encoder(text_encoder).encode(prompts)["pooled"].float()  # [k, D]
    given = clip.embed_texts(prompts).float().cpu()  # [k, D]
    if given.shape != pooled.shape or not torch.allclose(given, pooled, atol=1e-4):
        raise UsageError(
            f"the Clip's text embeddings are not the pooled vectors of its text encoder "
            f"{text_encoder!r} that the prior is conditioned on; give a Clip whose `embed_texts` "
            "is its frozen text encoder's pooled output"
        )


def prepare_prior(dataset_spec: str | dict[str, Any], clip: Any, *, clip_sha256: str,
                  cache: str | Path | None = None, overrides: Sequence[str] = (),
                  device: str | torch.device = "cpu",
                  callback: Callable[[dict], None] | None = None) -> Config:  # fmt: skip
    """The prior's config on the embedding cache of (dataset, Clip), computed once and reused
    (storage.embedding_cache), after checking the Clip's text space."""
    path = embedding_cache(dataset_spec, clip, clip_sha256=clip_sha256, path=cache,
                           device=device, callback=callback)  # fmt: skip
    meta = read_cache_meta(path)
    check_text_space(clip, meta["clip"]["text_encoder"], meta["dataset"]["name"],
                     meta["class_names"])  # fmt: skip
    return prior_config(path, overrides)


def train_prior(dataset_spec: str | dict[str, Any], clip: Any, out: str | os.PathLike, *,
                clip_sha256: str, cache: str | Path | None = None,
                overrides: Sequence[str] = (), resume: bool = False,
                callback: Callable[[dict], None] | None = None) -> Path:  # fmt: skip
    """Train the unCLIP prior on `clip`'s embeddings of the dataset into the run dir `out`
    (resumable with `resume=True`, like every run); returns the newest model checkpoint."""
    cfg = prepare_prior(dataset_spec, clip, clip_sha256=clip_sha256, cache=cache,
                        overrides=overrides)  # fmt: skip
    return train(cfg, out, resume=resume, callback=callback)
