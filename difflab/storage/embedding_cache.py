"""Embedding caches: a dataset's CLIP image embeddings computed once by a Clip, the (caption,
image embedding) pairs the unCLIP prior trains on (Ramesh et al. 2022, §2.2); read back as the
dataset `{name = "clip_embeddings", path = ...}` (difflab.data.embeddings).

A cache is keyed by the Clip's id (its file's sha256) and the source dataset spec: a cache with the
same key is reused, never recomputed; a new one is written atomically (temp file + rename).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.data.datasets import Dataset, load_dataset
from difflab.data.embeddings import KIND, read_cache_meta
from difflab.data.emoji import cache_dir
from difflab.storage import checkpoint as ckpt


@torch.no_grad()
def embed_images(data: Dataset, clip: Any, *, batch_size: int = 256,
                 device: str | torch.device = "cpu",
                 callback: Callable[[dict], None] | None = None) -> Tensor:  # fmt: skip
    """Unit CLIP image embeddings [N, D] of an image dataset (`clip.embed_images` on pixels in
    [-1, 1], `batch_size` at a time); `callback({"done", "total"})` after each batch."""
    if data.kind != "image":
        raise UsageError(f"only image datasets can be embedded; these data hold {data.kind}")
    if batch_size < 1:
        raise UsageError(f"`batch_size` must be >= 1, got {batch_size}")
    parts = []
    for i in range(0, len(data), batch_size):
        pixels = data.to_model(data.x[i : i + batch_size]).to(device)  # [b, C, H, W]
        e = clip.embed_images(pixels).float().cpu()  # [b, D]
        parts.append(torch.nn.functional.normalize(e, dim=-1))
        if callback is not None:
            callback({"done": min(len(data), i + batch_size), "total": len(data)})
    return torch.cat(parts)  # [N, D]


def cache_key(dataset_spec: dict, clip_sha256: str) -> str:
    """The cache's identity: a hash of the Clip's sha256 and the source dataset spec."""
    text = json.dumps({"clip": clip_sha256, "dataset": dataset_spec}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def embedding_cache(dataset_spec: str | dict[str, Any], clip: Any, *, clip_sha256: str,
                    path: str | Path | None = None, batch_size: int = 256,
                    device: str | torch.device = "cpu",
                    callback: Callable[[dict], None] | None = None) -> Path:  # fmt: skip
    """The embedding cache of (dataset, Clip): reused when `path` (default: a file named by the
    key in $DIFFLAB_CACHE) holds this key, else every image embedded once by `clip` and written
    atomically with the labels, class names and the Clip's text encoder; returns the path."""
    spec = {"name": dataset_spec} if isinstance(dataset_spec, str) else dict(dataset_spec)
    key = cache_key(spec, clip_sha256)
    path = Path(path) if path is not None else cache_dir() / f"clip-embeddings-{key}.safetensors"
    if path.is_dir():
        raise UsageError(f"`cache` {path} is a directory; give a .safetensors file path")
    if path.exists():
        if read_cache_meta(path).get("key") == key:
            return path  # computed once: reused
        raise UsageError(
            f"`cache` {path} holds the embeddings of another dataset or Clip; pass a new `cache` "
            "path or delete that file"
        )
    data = load_dataset(spec)
    if data.labels is None:
        raise UsageError(f"dataset {spec['name']!r} has no labels to caption its images; use a "
                         "labelled dataset (emoji with label = \"name\", fashion_mnist, ...)")  # fmt: skip
    embeddings = embed_images(data, clip, batch_size=batch_size, device=device, callback=callback)
    class_names = list(data.class_names or map(str, range(data.num_classes)))
    text_encoder = getattr(clip, "meta", {}).get("text_encoder", "minilm")
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt.save_tensors(path, {"embeddings": embeddings, "labels": data.labels}, {
        "kind": KIND, "key": key, "dataset": spec, "class_names": class_names,
        "dim": int(embeddings.shape[1]),
        "clip": {"sha256": clip_sha256, "text_encoder": text_encoder},
    })  # fmt: skip
    return path
