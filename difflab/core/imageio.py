"""Pixels in and out: uint8 ↔ float pixels in [-1, 1], image files, PNG grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.pngmeta import png_info


def uint8_to_pixels(x: Tensor) -> Tensor:
    """uint8 images in 0..255 → float32 pixels in [-1, 1]."""
    if x.dtype != torch.uint8:
        raise UsageError(
            f"expected uint8 images (0..255), got {x.dtype}; store images as uint8"
        )
    return x.to(torch.float32) / 127.5 - 1.0


def pixels_to_uint8(x: Tensor) -> Tensor:
    """Float pixels in [-1, 1] → uint8 images in 0..255 (clamped and rounded)."""
    return ((x.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


# The names from before codecs: model space was pixel space. Pixels are a codec's output now.


def image_files(root: Path) -> list[Path]:
    from PIL import Image

    Image.init()
    exts = {e.lower() for e, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in exts and not p.name.startswith(".")
    )


def fit_image(im: Image.Image, size: int, resample=Image.Resampling.BICUBIC) -> Image.Image:
    """Resize the shorter side of `im` to `size` and centre-crop it to size × size."""
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), resample)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def _to_8bit(im):
    """16/32-bit grayscale (PIL modes I;16*, I) scaled 0..65535 → 0..255; other modes as they are
    (PIL's own convert("L") would clip them to 0 or 255)."""
    if not (im.mode.startswith("I;16") or im.mode == "I"):
        return im
    arr = np.asarray(im).astype(np.float64)  # [H, W]
    return Image.fromarray(np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8), "L")


def load_image(path: Path, channels: int, size: int | None) -> Tensor:
    """Read one image as uint8 [C, H, W]; resize the shorter side to size and centre-crop."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = _to_8bit(im).convert("L" if channels == 1 else "RGB")
    except (OSError, SyntaxError, ValueError) as e:
        raise UsageError(f"cannot read image {path} ({e}); remove or replace the file") from None
    if size is not None:
        im = fit_image(im, size)
    arr = np.asarray(im, dtype=np.uint8).reshape(im.size[1], im.size[0], channels)  # [H, W, C]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)  # [C, H, W]


def image_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2, upscale: int = 1):
    """PIL image of a grid of uint8 images [N, C, H, W] (C = 1 or 3), each upscaled by nearest."""
    n, c, h, w = images.shape
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / nrow))
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y : y + h, x : x + w] = img.transpose(1, 2, 0)
    pil = Image.fromarray(grid[..., 0] if c == 1 else grid)
    return pil.resize((pil.width * upscale, pil.height * upscale), Image.NEAREST)


def save_grid(
    images: np.ndarray, path: str | Path, nrow: int | None = None, meta: dict | None = None
) -> Path:
    """Write a PNG grid, upscaled so that each cell is at least 32 px; `meta` (the settings that
    made it) goes into its text chunks (core.pngmeta)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = image_grid(images, nrow, upscale=max(1, 32 // images.shape[-1]))
    grid.save(path, pnginfo=png_info(meta))
    return path


def to_pil(image: np.ndarray) -> Image.Image:
    """One uint8 image [C, H, W] (C = 1 or 3) as a PIL image."""
    return Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))


def save_images(
    images: np.ndarray, folder: str | Path, first_index: int = 0,
    meta: list[dict] | None = None,
) -> list[Path]:  # fmt: skip
    """Write each uint8 image [C, H, W] as folder/{index:06d}.png, image i with the settings
    meta[i] in its text chunks (core.pngmeta); returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        paths.append(folder / f"{first_index + i:06d}.png")
        to_pil(img).save(paths[-1], pnginfo=png_info(None if meta is None else meta[i]))
    return paths
