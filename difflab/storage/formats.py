"""Model-checkpoint formats: the native `difflab-1` files, and foreign weights as plug-ins.

A format detects its files, reads their tensors and metadata, maps each tensor name to a difflab
state-dict key and translates its config into a difflab config; `load_model` picks the format
that detects the file. Adding one (e.g. diffusers UNet weights) is a subclass registered in
FORMATS, in its own `storage/<format>.py`.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from difflab.codecs.base import codec_spec
from difflab.core.errors import UsageError
from difflab.core.registry import Registry
from difflab.storage import checkpoint as ckpt
from difflab.storage.codecs import locate_codec

FORMATS = Registry("checkpoint format")


class CheckpointFormat:
    """One model-checkpoint format: `detect`, `read`, `key_map` and `translate` (subclass these)."""

    allow_pickle = False  # set by `load_model`: a foreign format may read pickled weights

    def detect(self, path: Path) -> bool:
        """True when `path` (a file, or a folder for folder formats) is in this format."""
        raise NotImplementedError

    def read(self, path: Path) -> tuple[dict[str, Tensor], dict]:
        """(tensors under their stored names, the stored metadata / config)."""
        raise NotImplementedError

    def key_map(self, key: str) -> str | None:
        """The difflab state-dict key of a stored tensor name (None: not part of the model)."""
        return key

    def translate(self, meta: dict) -> tuple[dict, dict]:
        """(difflab config dict with model and sample sections, info) from the stored metadata."""
        raise NotImplementedError

    def load(self, path: Path) -> tuple[dict[str, Tensor], dict, dict]:
        """(state_dict, config, info): read, rename by `key_map`, translate the config."""
        tensors, meta = self.read(path)
        state = {new: v for k, v in tensors.items() if (new := self.key_map(k)) is not None}
        config, info = self.translate(meta)
        codec = codec_spec(config["model"].get("codec"))
        config["model"]["codec"] = locate_codec(codec, path)  # a run's codec copy, found
        return state, config, info


@FORMATS.register("difflab-1")
class Difflab1(CheckpointFormat):
    """difflab's own model files: safetensors with {"kind": "model", "config", "info"} metadata."""

    def detect(self, path: Path) -> bool:
        if not path.is_file():
            return False
        try:
            meta = ckpt.read_header(path).get("__metadata__") or {}
        except UsageError:
            return False
        return meta.get("format") == ckpt.FORMAT

    def read(self, path: Path) -> tuple[dict[str, Tensor], dict]:
        return ckpt.read_kind(path, "model", wanted="a model checkpoint",
                              fix="give a model file from `difflab train`")  # fmt: skip

    def translate(self, meta: dict) -> tuple[dict, dict]:
        return meta["config"], meta.get("info", {})


def find_format(path: Path) -> CheckpointFormat:
    """The registered format that detects `path`; none → UsageError saying what the file is."""
    for name in FORMATS.names():
        fmt = FORMATS.build(name)
        if fmt.detect(path):
            return fmt
    known = ", ".join(FORMATS.names())
    if path.is_dir():
        raise UsageError(f"run dir {path} holds no checkpoint; train first or give a file")
    stored = (ckpt.read_header(path).get("__metadata__") or {}).get("format")  # not safetensors:
    if stored is None:  # ↑ a UsageError saying so
        raise UsageError(
            f"{path} is a safetensors file but not a difflab checkpoint (no difflab metadata) and "
            f"no registered checkpoint format ({known}) detects it; give a model file from "
            "`difflab train` or register its format in difflab.storage.formats.FORMATS"
        )
    raise UsageError(
        f"{path} is in checkpoint format {stored!r}, which this difflab does not read (it reads: "
        f"{known}); convert it, update difflab, or register a reader in "
        "difflab.storage.formats.FORMATS"
    )


def load_model(
    path: str | Path, *, allow_pickle: bool = False
) -> tuple[dict[str, Tensor], dict, dict]:
    """(state_dict, config, info) of a model file in any registered format, or of a run dir's
    newest checkpoint (a folder that a folder format detects is that format's); `allow_pickle`
    lets a foreign format read pickled weights, through torch.load(weights_only=True)."""
    path = Path(path)
    if path.is_dir() and ckpt.checkpoint_dir(path).is_dir():
        path = ckpt.resolve_model_path(path)
    fmt = find_format(path)
    fmt.allow_pickle = bool(allow_pickle)
    return fmt.load(path)
