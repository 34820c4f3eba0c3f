"""Checkpoint integrity: a sha256 of the whole payload (every tensor's name, dtype, shape and bytes,
plus the difflab metadata) stored in the safetensors header at write time and verified on load,
and a refusal of non-finite weights. Files written before checksums existed still load.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import Tensor

from difflab.core.errors import UsageError

CHECKSUM_KEY = "sha256"  # in the safetensors __metadata__, beside "format" and "difflab"


class CorruptCheckpoint(UsageError):
    """A file's bytes changed after it was written (checksum mismatch) or hold NaN/inf weights."""


def payload_digest(tensors: dict[str, Tensor], meta_text: str) -> str:
    """sha256 over the metadata text and, by sorted name, each tensor's dtype, shape and bytes."""
    h = hashlib.sha256(meta_text.encode())
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"\0{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def verify(path: Path, tensors: dict[str, Tensor], meta_text: str, stored: str | None) -> None:
    """Raise CorruptCheckpoint if `stored` (None: an old file, not checked) does not match."""
    if stored is not None and payload_digest(tensors, meta_text) != stored:
        raise CorruptCheckpoint(
            f"checkpoint {path} is corrupt: its contents no longer match the checksum written "
            "with it (bytes changed on disk); use an earlier checkpoint or retrain"
        )


def check_finite(path: Path, tensors: dict[str, Tensor]) -> None:
    """Raise CorruptCheckpoint naming the first tensor that holds NaN or inf."""
    for key, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CorruptCheckpoint(
                f"checkpoint {path} holds non-finite weights (NaN or inf in {key!r}); it cannot "
                "be used; use an earlier checkpoint or retrain"
            )
