"""The `latents` dataset: a latent cache (Rombach et al. 2022 train on E(x0); encoding once
instead of every step) written by difflab.storage.latent_cache.encode_dataset.

The file is safetensors: "latents" float32 [N, C, h, w] in the codec's model space (after scale
and shift), optional "labels" int64 [N], and difflab metadata {"kind": "latent_cache", "codec":
{"name", "sha256", "ckpt"}, "image_shape", "dataset" (the source spec), "class_names"}. The
training loop checks the codec's sha256 against `model.codec` before it trains on the latents.
"""

from __future__ import annotations

from pathlib import Path

from difflab.core.errors import UsageError
from difflab.data import cache_files
from difflab.data.datasets import DATASETS, Dataset

KIND = "latent_cache"
FIX = "make one with `encode_dataset(data, codec_ckpt, out)`"


def read_cache_meta(path: str | Path) -> dict:
    """The difflab metadata of a latent cache file; UsageError if missing or another file."""
    return cache_files.read_cache_meta(path, KIND, "latent", FIX)


@DATASETS.register("latents", kind="latents")
def latents(*, path: str | None = None) -> Dataset:
    """A latent cache file: model-space latents [N, C, h, w] of a dataset, its labels and the
    codec that made them (meta: codec, image_shape, dataset, path)."""
    from safetensors.torch import load_file

    if path is None:
        raise UsageError(f"dataset 'latents' needs path=; pass a latent cache file ({FIX})")
    stored = read_cache_meta(path)
    tensors = load_file(str(path))
    meta = {k: stored[k] for k in ("codec", "image_shape", "dataset")} | {"path": str(path)}
    return Dataset(tensors["latents"].float(), tensors.get("labels"), stored.get("class_names"),
                   "latents", meta)  # fmt: skip


def source_name(dataset: Dataset, name: str) -> str:
    """The name of the data behind `dataset`: a latent cache's source dataset, else `name`."""
    return dataset.meta["dataset"]["name"] if dataset.kind == "latents" else name
