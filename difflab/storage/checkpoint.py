"""Checkpoints: safetensors weights with the resolved config in their metadata, written atomically.

A model file (`step-0001000.safetensors`) holds the EMA weights and the config, enough for
`difflab sample`. Its resume state (`step-0001000.state.safetensors`) holds the raw weights,
optimizer, step, RNG states and data position. Nothing here unpickles anything.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.files import atomic_write  # also used as ckpt.atomic_write
from difflab.storage import integrity

FORMAT = "difflab-1"
MAX_HEADER = 100 * 2**20  # a sane safetensors JSON header is far smaller


def save_tensors(path: Path, tensors: dict[str, Tensor], meta: dict) -> None:
    """Atomically write tensors plus JSON metadata (every value JSON-encoded under 'difflab')."""
    tensors = {k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}
    metadata = {"format": FORMAT, "difflab": json.dumps(meta)}
    metadata[integrity.CHECKSUM_KEY] = integrity.payload_digest(tensors, metadata["difflab"])
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_header(path: Path) -> dict:
    """The safetensors JSON header, checked for sane sizes before anything else is read."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist; give a .safetensors file or a run dir")
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise UsageError(f"{path} is not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > min(MAX_HEADER, size - 8):
            raise UsageError(f"{path} is not a safetensors file or is truncated (bad header size)")
        try:
            return json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UsageError(f"{path} is not a safetensors file (header is not JSON)") from None


def _raw_metadata(path: Path) -> dict:
    """The safetensors __metadata__ of a difflab file (strings); else a UsageError."""
    meta = read_header(path).get("__metadata__") or {}
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "difflab" not in meta:
        raise UsageError(
            f"{path} is a safetensors file but not a difflab checkpoint (no difflab metadata); "
            "train one with `difflab train`"
        )
    return meta


def _parse(path: Path, text) -> dict:
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        meta = None
    if not isinstance(meta, dict) or not isinstance(meta.get("kind", ""), str):
        raise UsageError(f"checkpoint {path} has corrupt difflab metadata; re-save it")
    return meta


def read_metadata(path: Path) -> dict:
    """The difflab metadata of a file written by `save_tensors` (header only); else a UsageError."""
    return _parse(path, _raw_metadata(path)["difflab"])


def load_tensors(path: Path) -> tuple[dict[str, Tensor], dict]:
    """(tensors, difflab metadata) of a file written by `save_tensors`, checked against its
    checksum (files from before checksums: unchecked) and for NaN/inf; else a UsageError
    (integrity.CorruptCheckpoint when the bytes changed or the weights are not finite)."""
    raw = _raw_metadata(path)
    meta = _parse(path, raw["difflab"])
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise UsageError(f"checkpoint {path} is corrupt or truncated: {err}") from None
    integrity.verify(path, tensors, raw["difflab"], raw.get(integrity.CHECKSUM_KEY))
    integrity.check_finite(path, tensors)
    return tensors, meta


KIND_HINT = {
    "model": "a diffusion model checkpoint (use it as the model, not as this)",
    "classifier": "a noise-aware classifier (from `difflab train-classifier`)",
    "encoder": "a noise-aware image encoder (from `difflab train-encoder`)",
    "clip": "a CLIP image–text model (from `difflab train-clip`)",
    "feature_net": "a metrics feature net (from `difflab train-features`)",
    "codec": "an autoencoder (codec) checkpoint (from `difflab train-autoencoder`)",
}


def read_kind(path: Path, kind: str, *, wanted: str, fix: str) -> tuple[dict[str, Tensor], dict]:
    """(tensors, metadata) of a difflab file of `kind`: the one reader behind model files,
    noise-aware nets and feature nets; another kind → a UsageError naming both kinds and `fix`."""
    meta = read_metadata(path)
    found = meta.get("kind")
    if found != kind:
        what = KIND_HINT.get(found, f"a difflab {found!r} file")
        raise UsageError(f"{path} is {what}, not {wanted}; {fix}")
    config = meta.get("config", {})
    if kind == "model" and not (isinstance(config, dict) and isinstance(config.get("model"), dict)
                                and isinstance(meta.get("info", {}), dict)):  # fmt: skip
        raise UsageError(f"checkpoint {path} has corrupt difflab metadata (no model config); "
                         "re-save it or use another checkpoint")  # fmt: skip
    return load_tensors(path)


def load_weights(module, state: dict[str, Tensor], path: Path, fix: str):
    """module.load_state_dict(state); a mismatch → UsageError naming the first bad key."""
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        detail = next((ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()), str(err))
        raise UsageError(f"{path} does not fit its own config ({detail[:160]}); {fix}") from None
    return module


def save_model(path: Path, state_dict: dict[str, Tensor], config: dict, info: dict) -> None:
    """Model file: weights + {"config": resolved config, "info": step, metrics...}."""
    save_tensors(path, state_dict, {"kind": "model", "config": config, "info": info})


def resolve_model_path(path: Path) -> Path:
    """A model file as given, or the newest model file of a run dir."""
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise UsageError(f"run dir {path} holds no checkpoint; train first or give a file")
        return found
    return path


def load_model_file(path: Path) -> tuple[dict[str, Tensor], dict, dict]:
    """(state_dict, config dict, info) of a difflab model file or of a run dir's newest one."""
    path = resolve_model_path(path)
    tensors, meta = read_kind(path, "model", wanted="a model checkpoint",
                              fix="give a model file from `difflab train`")  # fmt: skip
    return tensors, meta["config"], meta.get("info", {})


def checkpoint_dir(run: Path) -> Path:
    return Path(run) / "checkpoints"


def model_path(run: Path, step: int) -> Path:
    return checkpoint_dir(run) / f"step-{step:07d}.safetensors"


def state_path(model_file: Path) -> Path:
    return model_file.with_name(model_file.name.replace(".safetensors", ".state.safetensors"))


def list_checkpoints(run: Path) -> list[Path]:
    """Model files of a run, oldest first."""
    return sorted(checkpoint_dir(run).glob("step-*[0-9].safetensors"))


def latest_checkpoint(run: Path) -> Path | None:
    found = list_checkpoints(run)
    return found[-1] if found else None


def mark_best(model_file: Path) -> None:
    """Atomically copy a model file to checkpoints/best.safetensors."""
    data = Path(model_file).read_bytes()
    atomic_write(
        Path(model_file).with_name("best.safetensors"), lambda t: Path(t).write_bytes(data)
    )


def prune(run: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (model file and resume state)."""
    for old in list_checkpoints(run)[:-keep]:
        state_path(old).unlink(missing_ok=True)
        old.unlink(missing_ok=True)


def remove_stale_tmp(run: Path) -> list[Path]:
    """Delete half-written `.NAME.*.tmp` files (from `atomic_write`s killed mid-write) and resume
    states whose model file never landed; call only while holding the run's lock."""
    run = Path(run)
    dirs = (run, checkpoint_dir(run), run / "progress")  # progress: the grids of a watched run
    stale = [p for d in dirs if d.is_dir() for p in d.glob(".*.tmp")]
    stale += [s for s in checkpoint_dir(run).glob("step-*.state.safetensors")
              if not s.with_name(s.name.replace(".state.", ".")).exists()]  # fmt: skip
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
