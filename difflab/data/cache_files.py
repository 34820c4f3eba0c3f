"""Cache files of encoded datasets (latents, CLIP embeddings): read their difflab metadata."""

from __future__ import annotations

import json
from pathlib import Path

from difflab.core.errors import UsageError


def read_cache_meta(path: str | Path, kind: str, what: str, fix: str) -> dict:
    """The difflab metadata of a safetensors cache file of `kind` ("<what> cache"); UsageError
    naming `fix` if the file is missing or is another kind of file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} cache {path} does not exist; {fix}")
    try:
        with safe_open(str(path), "pt") as f:
            raw = (f.metadata() or {}).get("difflab")
        meta = json.loads(raw) if raw else {}
    except (SafetensorError, OSError, ValueError):
        meta = {}
    if meta.get("kind") != kind:
        raise UsageError(f"{path} is not {'an' if what[0] in 'aeiou' else 'a'} {what} cache; {fix}")
    return meta
