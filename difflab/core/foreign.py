"""Reading other libraries' saved model folders (diffusers / transformers layout), offline.

Every reader here opens local files only: `offline()` sets HF_HUB_OFFLINE before diffusers or
transformers is imported, and weights come from safetensors; pickled `.bin` / `.ckpt` weights are
read only when the caller opts in with `allow_pickle=True`, and then through
`torch.load(weights_only=True)`, which unpickles tensors and plain containers only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch import Tensor

from difflab.core.errors import UsageError

PICKLED = (".bin", ".ckpt", ".pt", ".pth")


def offline() -> None:
    """Make the Hugging Face libraries refuse the network (set before importing them)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def foreign_module(name: str):
    """diffusers or transformers, imported offline; missing → UsageError with the install."""
    offline()
    import importlib

    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        raise UsageError(
            "diffusers-format models need the packages diffusers and transformers; run "
            "`pip install diffusers transformers`"
        ) from None


def require_file(folder: Path, name: str, what: str) -> Path:
    """folder/name, or a UsageError naming the missing file."""
    path = Path(folder) / name
    if not path.is_file():
        raise UsageError(
            f"{what} folder {folder} is incomplete: {name} is missing; copy the whole saved "
            "folder (nothing is downloaded)"
        )
    return path


def read_json(folder: Path, name: str, what: str) -> dict:
    """The JSON file folder/name (missing → UsageError naming it)."""
    path = require_file(folder, name, what)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UsageError(f"{path} is not valid JSON ({err}); restore the saved file") from None


def weight_file(folder: Path, stems: tuple[str, ...], allow_pickle: bool) -> Path:
    """The weights file of a saved model folder: `<stem>.safetensors`, else a pickled file when
    `allow_pickle`; none → UsageError naming the expected file."""
    folder = Path(folder)
    for stem in stems:
        if (folder / f"{stem}.safetensors").is_file():
            return folder / f"{stem}.safetensors"
    pickled = [folder / f"{stem}{ext}" for stem in stems for ext in PICKLED]
    found = next((p for p in pickled if p.is_file()), None)
    if found is not None and not allow_pickle:
        raise UsageError(
            f"{found} holds pickled weights, which can run code when loaded; convert it to "
            f"{stems[0]}.safetensors, or pass `allow_pickle=True` to read it with "
            "torch.load(weights_only=True)"
        )
    if found is None:
        require_file(folder, f"{stems[0]}.safetensors", "model")
    return found


def read_weights(path: Path) -> dict[str, Tensor]:
    """Tensors of a safetensors file, or of a pickled file via torch.load(weights_only=True)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # an unpickling error: objects other than tensors
        raise UsageError(
            f"{path} holds objects other than tensors, refused by torch.load(weights_only=True) "
            f"({str(err).splitlines()[0][:120]}); convert it to safetensors"
        ) from None
    return state.get("state_dict", state) if isinstance(state, dict) else state
