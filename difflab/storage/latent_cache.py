"""Latent caches: a dataset encoded once by a codec file (`difflab encode`), so latent diffusion
does not re-encode every step; read back as the dataset `{name = "latents", path = ...}`
(difflab.data.latents), which the training loop accepts only with the codec that made it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from difflab.core.errors import UsageError
from difflab.data.datasets import Dataset, load_dataset
from difflab.data.latents import KIND
from difflab.storage import checkpoint as ckpt
from difflab.storage.codecs import load_codec_file


@torch.no_grad()
def encode_data(data: Dataset, codec_ckpt: str | os.PathLike, *, batch_size: int = 256,
                device: str | torch.device = "cpu",
                callback: Callable[[dict], None] | None = None) -> Dataset:  # fmt: skip
    """The image dataset `data` encoded by a codec file into model space (after scale and shift):
    a "latents" Dataset with labels, class names and meta {"codec": {"name", "sha256", "ckpt"},
    "image_shape"}. Already-encoded data must come from the same codec file."""
    path = Path(codec_ckpt).expanduser().resolve()
    codec, meta = load_codec_file(path)
    info = {"name": meta["codec"]["name"], "sha256": codec.file_sha256, "ckpt": str(path)}
    if data.kind == "latents":
        check_cache(data, info)
        return data
    if data.kind != "image":
        raise UsageError(f"only image datasets can be encoded; these data hold {data.kind}")
    if [int(s) for s in meta["image_shape"]] != list(data.shape):
        raise UsageError(
            f"codec file {path} encodes images {meta['image_shape']} but the data are "
            f"{list(data.shape)}; use a codec trained on this data (`train_autoencoder(data, out)`)"
        )
    if batch_size < 1:
        raise UsageError(f"`batch_size` must be >= 1, got {batch_size}")
    codec = codec.to(device)
    parts = []
    for i in range(0, len(data), batch_size):
        pixels = data.to_model(data.x[i : i + batch_size]).to(device)  # [b, C, H, W]
        parts.append(codec.encode(pixels).float().cpu())  # [b, *latent]
        if callback is not None:
            callback({"done": min(len(data), i + batch_size), "total": len(data)})
    meta = {"codec": info, "image_shape": list(data.shape), "path": None}
    return Dataset(torch.cat(parts), data.labels, data.class_names, "latents", meta)


def encode_dataset(
    dataset_spec: str | dict[str, Any],
    codec_ckpt: str | os.PathLike,
    out: str | os.PathLike,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    force: bool = False,
    callback: Callable[[dict], None] | None = None,
) -> Path:
    """Encode every image of the dataset with the codec file (`encode_data`) and atomically
    write latents, labels and the codec's sha256 to `out` (a latent cache); returns `out`."""
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"`out` {out} is a directory; give a .safetensors file path")
    if out.exists() and not force:
        raise UsageError(f"`out` {out} exists; pick a new path or pass `force=True` to overwrite")
    spec = {"name": dataset_spec} if isinstance(dataset_spec, str) else dict(dataset_spec)
    data = load_dataset(spec)
    if data.kind != "image":
        raise UsageError(f"only image datasets can be encoded; {spec['name']!r} holds {data.kind}")
    latents = encode_data(data, codec_ckpt, batch_size=batch_size, device=device,
                          callback=callback)  # fmt: skip
    tensors = {"latents": latents.x}  # [N, *latent]
    if data.labels is not None:
        tensors["labels"] = data.labels
    ckpt.save_tensors(out, tensors, {
        "kind": KIND, "codec": latents.meta["codec"], "image_shape": list(data.shape),
        "dataset": spec, "class_names": data.class_names, "latent_shape": list(latents.shape),
    })  # fmt: skip
    return out


def check_cache(dataset: Dataset, codec: Mapping[str, Any]) -> None:
    """UsageError unless the latent cache `dataset` was encoded by the resolved codec file spec
    `codec` ({"ckpt", "sha256"}): latents of another codec are another space."""
    made = dataset.meta["codec"]
    if codec.get("sha256") != made["sha256"]:
        where = dataset.meta.get("path") or "these data"
        given = f"codec file {codec['ckpt']}" if "ckpt" in codec else f"codec {codec['name']!r}"
        raise UsageError(
            f"latent cache {where} was encoded by codec file {made['ckpt']} "
            f"(sha256 {made['sha256'][:12]}…) but `model.codec` is {given}; set `model.codec` "
            f"to {{ckpt = \"{made['ckpt']}\"}} or re-encode the data with this codec "
            "(`encode_dataset(data, codec_ckpt, out)`)"
        )
