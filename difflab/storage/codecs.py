"""Codecs with their networks and files: build a learned codec (its nets from nets.autoencoder),
save and load autoencoder checkpoints, and resolve a diffusion config's `model.codec`.

A codec file is safetensors (the codec's state dict: networks, codebook, scale and shift) with
{"kind": "codec", "codec": spec, "image_shape", "latent_shape", "info"} metadata: everything it
needs to rebuild itself. A diffusion config names one as `model.codec = {ckpt = "ae.safetensors"}`;
training copies that file into the run (RUN/codec.safetensors) and stores {"name", "ckpt":
"codec.safetensors", "sha256"}: the path is relative to the run, so a run dir moved or copied as a
whole still loads. A relative `ckpt` in a model file is looked up next to the model file, then in
its run dir (the parent of RUN/checkpoints); an absolute one (runs from before the copy) as is.
Every load checks that the file is there and unchanged (sha256).
"""

from __future__ import annotations

import hashlib
import inspect
import shutil
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
RUN_CODEC = "codec.safetensors"  # the run's own copy of its codec file
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
            f"codec file {path} does not exist; restore the autoencoder checkpoint there (a run "
            f"keeps its own as RUN/{RUN_CODEC}: move whole run dirs), or set `model.codec.ckpt` "
            f"to where it is now, or {_FIX}"
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
    sha = file_sha256(path)
    if sha256 is not None and sha != sha256:
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
    codec.file_sha256 = sha  # which latents it makes: noise-aware nets and caches compare it
    return codec, meta


def resolve_codec(spec: str | Mapping[str, Any] | None, image_shape: Sequence[int],
                  run_dir: str | Path | None = None) -> dict:  # fmt: skip
    """A codec file spec as {"name", "ckpt" (absolute), "sha256"} after checking that it encodes
    images of `image_shape`; other specs as given. A relative `ckpt` that exists in `run_dir`
    (a resumed run's own copy) is that file, else it is relative to the working directory."""
    spec = codec_spec(spec)
    if "ckpt" not in spec:
        return spec
    extra = sorted(set(spec) - FILE_KEYS)
    if extra:
        raise UsageError(
            f"`model.codec` with `ckpt` takes no other option ({', '.join(extra)}); the codec "
            "file describes itself"
        )
    path = Path(spec["ckpt"]).expanduser()
    if run_dir is not None and not path.is_absolute() and (Path(run_dir) / path).is_file():
        path = Path(run_dir) / path
    path = path.resolve()
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



def run_codec_spec(spec: Mapping[str, Any]) -> dict:
    """The spec a run stores for a resolved codec spec: a file becomes its run copy's relative
    name {"name", "ckpt": "codec.safetensors", "sha256"}; other specs as given."""
    spec = dict(spec)
    return spec | {"ckpt": RUN_CODEC} if "ckpt" in spec else spec


def copy_codec(spec: Mapping[str, Any], run_dir: str | Path) -> Path | None:
    """Atomically copy a resolved codec file into `run_dir` as codec.safetensors (kept when the
    run already holds that file); None for specs without a file."""
    if "ckpt" not in spec:
        return None
    source, dest = Path(spec["ckpt"]), Path(run_dir) / RUN_CODEC
    if dest.is_file() and file_sha256(dest) == spec["sha256"]:
        return dest
    if dest.exists():
        raise UsageError(
            f"{dest} is another codec file than the run's (sha256 differs); move it away or "
            "start a new `out`"
        )
    ckpt.atomic_write(dest, lambda tmp: shutil.copyfile(source, tmp))
    if file_sha256(dest) != spec["sha256"]:
        dest.unlink()
        raise UsageError(f"codec file {source} changed while it was copied; start the run again")
    return dest


def locate_codec(spec: Mapping[str, Any], model_file: str | Path) -> dict:
    """A model file's codec spec with a relative `ckpt` made absolute: the file next to the model
    file, else in its run dir (model files sit in RUN/checkpoints); absolute paths stay. A file
    in neither place is reported at the run dir (`read_codec_meta` says it is missing)."""
    spec = dict(spec)
    if "ckpt" not in spec or Path(spec["ckpt"]).is_absolute():
        return spec
    here = Path(model_file).resolve().parent
    run = here.parent if here.name == ckpt.checkpoint_dir(here.parent).name else here
    places = [here / spec["ckpt"], run / spec["ckpt"]]
    found = next((p for p in places if p.is_file()), places[-1])
    return spec | {"ckpt": str(found)}
