"""Settings inside PNG files: a JSON text chunk `difflab` (what made the image) and a one-line
human-readable `parameters` chunk, the key other diffusion tools write and read."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, PngImagePlugin

from difflab.core.errors import UsageError

KEY = "difflab"  # the JSON chunk; `parameters` is for people (and other tools)


def png_info(meta: dict | None) -> PngImagePlugin.PngInfo | None:
    """The PNG text chunks of `meta` (None → no chunks); keys are sorted, so equal settings give
    equal bytes."""
    if meta is None:
        return None
    info = PngImagePlugin.PngInfo()
    info.add_itxt(KEY, json.dumps(meta, sort_keys=True, separators=(",", ":")))
    info.add_itxt("parameters", ", ".join(f"{k}: {_short(v)}" for k, v in sorted(meta.items())))
    return info


def _short(value) -> str:
    if isinstance(value, dict) and "name" in value:
        opts = ",".join(f"{k}={v}" for k, v in value.items() if k != "name")
        return value["name"] + (f":{opts}" if opts else "")
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else str(value)


def read_png_meta(source: str | Path | Image.Image) -> dict:
    """The `difflab` settings a PNG carries; a UsageError when it carries none."""
    try:
        im = source if isinstance(source, Image.Image) else Image.open(source)
        text = getattr(im, "text", None) or im.info
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read image {source} ({e}); give a PNG written by difflab") from None
    if KEY not in text:
        raise UsageError(
            f"{getattr(source, 'filename', None) or source} carries no difflab settings (no "
            f"'{KEY}' PNG text chunk); give a PNG written by difflab sample or the web UI"
        )
    try:
        return json.loads(text[KEY])
    except json.JSONDecodeError as e:
        raise UsageError(f"the '{KEY}' PNG text chunk is not JSON ({e}); re-sample the image") from None
