"""The `clip_embeddings` dataset: CLIP image embeddings of a dataset, computed once by a Clip
(difflab.storage.embedding_cache), the training data of the unCLIP prior (Ramesh et al. 2022).

The file is safetensors: "embeddings" float32 [N, D] unit vectors, "labels" int64 [N] (each item's
class; its captions are the class's caption templates) and difflab metadata {"kind":
"embedding_cache", "key", "clip": {"sha256", "text_encoder"}, "dataset" (the source spec),
"class_names", "dim"}. The dataset scales the unit vectors by √D, so each coordinate has an RMS of
1 (a unit vector's coordinates have mean square 1/D), the data scale diffusion schedules assume.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from difflab.core.errors import UsageError
from difflab.data import cache_files
from difflab.data.datasets import DATASETS, Dataset, check_choice
from difflab.data.splits import holdout_split

KIND = "embedding_cache"
FIX = "make one with `embedding_cache(data, clip)`"
TEST_FRACTION = 0.1  # a fixed (seed-0) tenth of the items is held out


def read_cache_meta(path: str | Path) -> dict:
    """The difflab metadata of an embedding cache file; UsageError if missing or another file."""
    return cache_files.read_cache_meta(path, KIND, "embedding", FIX)


@DATASETS.register("clip_embeddings", kind="points")
def clip_embeddings(*, path: str | None = None, split: str = "train") -> Dataset:
    """An embedding cache as points √D·e [N, D] with the items' class labels; `split`: a fixed
    (seed-0) 10% "test" of the items (held-out captions when each item is its own class, as in
    emoji with label = "name"), the rest "train", or "all"."""
    from safetensors.torch import load_file

    if path is None:
        raise UsageError(f"dataset 'clip_embeddings' needs path=; pass an embedding cache ({FIX})")
    check_choice("split", split, ("train", "test", "all"))
    stored = read_cache_meta(path)
    tensors = load_file(str(path))
    dim = int(stored["dim"])
    meta = {k: stored[k] for k in ("clip", "dataset", "dim")} | {"path": str(path)}
    data = Dataset(tensors["embeddings"].float() * math.sqrt(dim), tensors["labels"],
                   stored["class_names"], "points", meta)  # fmt: skip
    if split == "all":
        return data
    train, test = holdout_split(data, TEST_FRACTION)
    return train if split == "train" else test


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Model-space points [N, D] → unit embeddings (undoes the √D scale; renormalises samples)."""
    return torch.nn.functional.normalize(x.float(), dim=-1)
