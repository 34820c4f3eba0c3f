"""Codecs with their networks and files: build a learned codec (its nets from nets.autoencoder),
save and load autoencoder checkpoints, and resolve a diffusion config's `model.codec`.

A codec file is safetensors (the codec's state dict: networks, codebook, scale and shift) with
{"kind": "codec", "codec": spec, "image_shape", "latent_shape", "info"} metadata: everything it
needs to rebuild itself. A diffusion config names one as `model.codec = {ckpt = "ae.safetensors"}`;
training resolves that to {"name", "ckpt" (absolute), "sha256"} and every later load checks that
the file is still there and unchanged.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from difflab.codecs.base import CODECS, Codec, codec_spec
from difflab.codecs.base import build_codec as build_plain_codec
from difflab.core.errors import UsageError
from difflab.nets.autoencoder import build_autoencoder
from difflab.storage import checkpoint as ckpt

KIND = "codec"
NET_OPTIONS = ("ch", "channel_mult", "num_res_blocks", "attention", "dropout")
SHAPE_OPTIONS = ("channels", "z_channels", "factor")
FILE_KEYS = {"ckpt", "sha256", "name"}
_FIX = "train one with `train_autoencoder(data, out)`"


def build_codec(spec: str | Mapping[str, Any] | None) -> Codec:
    """The codec of `spec`: a codec file ({ckpt = PATH}), a learned codec with fresh networks
    ({name = "kl", net = {...}, ...}) or a plain registered codec ("identity")."""
    spec = codec_spec(spec)
    if "ckpt" in spec:
        return load_codec_file(spec["ckpt"], sha256=spec.get("sha256"))[0]
    name = spec["name"]
    moments = CODECS.meta(name).get("moments")
    if not moments:
        return build_plain_codec(spec)
    options = {k: v for k, v in spec.items() if k != "name"}
    net = dict(options.pop("net", None) or {})
    unknown = sorted(set(net) - set(NET_OPTIONS))
    if unknown:
        raise UsageError(f"codec `net` takes no option {unknown}; valid: {', '.join(NET_OPTIONS)}")
    params = inspect.signature(CODECS.get(name)).parameters
    shape = {k: options.get(k, params[k].default) for k in SHAPE_OPTIONS}
    encoder, decoder = build_autoencoder(**shape, moments=moments, **net)
    return CODECS.build({"name": name, **options}, encoder=encoder, decoder=decoder)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_codec(path: str | Path, codec: Codec, spec: Mapping[str, Any],
               image_shape: Sequence[int], info: dict | None = None) -> Path:  # fmt: skip
    """Atomically write `codec` (weights, scale, shift) with the spec that rebuilds it."""
    spec = dict(spec)
    if isinstance(codec, nn.Module) and hasattr(codec, "scale"):
        spec |= {"scale": float(codec.scale), "shift": float(codec.shift)}
    state = codec.state_dict() if isinstance(codec, nn.Module) else {}
    meta = {"kind": KIND, "codec": spec, "image_shape": list(image_shape),
            "latent_shape": list(codec.latent_shape(image_shape)), "info": dict(info or {})}  # fmt: skip
    ckpt.save_tensors(Path(path), state, meta)
    return Path(path)


def read_codec_meta(path: str | Path) -> dict:
    """The metadata of a codec file (header only); UsageError if it is missing or another kind."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(
            f"codec file {path} does not exist; restore the autoencoder checkpoint there, or "
            f"set `model.codec.ckpt` to where it is now, or {_FIX}"
        )
    meta = ckpt.read_metadata(path)
    if meta.get("kind") != KIND:
        what = ckpt.KIND_HINT.get(meta.get("kind"), f"a difflab {meta.get('kind')!r} file")
        raise UsageError(f"{path} is {what}, not an autoencoder (codec) checkpoint; {_FIX}")
    return meta


def load_codec_file(path: str | Path, *, sha256: str | None = None) -> tuple[Codec, dict]:
    """(codec in eval mode without parameter gradients, metadata) of a codec file; with `sha256`
    a file changed since then is a UsageError."""
    path = Path(path)
    meta = read_codec_meta(path)
    if sha256 is not None and file_sha256(path) != sha256:
        raise UsageError(
            f"codec file {path} changed since the diffusion model was trained on it (sha256 "
            f"differs); put back the autoencoder checkpoint it was trained with, or retrain the "
            "diffusion model on this one"
        )
    tensors, meta = ckpt.load_tensors(path)
    codec = build_codec(meta["codec"])
    if isinstance(codec, nn.Module):
        ckpt.load_weights(codec, tensors, path, "re-save it with `save_codec`")
        codec.eval().requires_grad_(False)
    return codec, meta


def resolve_codec(spec: str | Mapping[str, Any] | None, image_shape: Sequence[int]) -> dict:
    """The spec a diffusion run stores: a codec file becomes {"name", "ckpt" (absolute),
    "sha256"} after checking that it encodes images of `image_shape`; other specs as given."""
    spec = codec_spec(spec)
    if "ckpt" not in spec:
        return spec
    extra = sorted(set(spec) - FILE_KEYS)
    if extra:
        raise UsageError(
            f"`model.codec` with `ckpt` takes no other option ({', '.join(extra)}); the codec "
            "file describes itself"
        )
    path = Path(spec["ckpt"]).expanduser().resolve()
    meta = read_codec_meta(path)
    if [int(s) for s in meta["image_shape"]] != [int(s) for s in image_shape]:
        raise UsageError(
            f"codec file {path} encodes images {meta['image_shape']} but the data are "
            f"{list(image_shape)}; train an autoencoder on this data (`train_autoencoder`) or "
            "use data of the codec's shape"
        )
    sha = file_sha256(path)
    if spec.get("sha256", sha) != sha:
        raise UsageError(
            f"codec file {path} changed since this run started (sha256 differs); put back the "
            "autoencoder checkpoint it was started with, or start a new run"
        )
    return {"name": meta["codec"]["name"], "ckpt": str(path), "sha256": sha}

