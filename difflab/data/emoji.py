"""The `emoji` dataset: Noto Color Emoji glyphs as RGB images, named and grouped by Unicode.

Glyphs: Debian's fonts-noto-color-emoji (colour bitmaps at one size, 109 px → 136×128 px),
drawn by Pillow; with libraqm, sequences (ZWJ families, flags, keycaps, skin tones) shape into one
glyph. Names and groups: Unicode's emoji-test.txt (UTS #51; Debian unicode-data) — the CLDR short
name, lower-case ("red apple", "flag: japan"), and one of the nine emoji groups (Smileys &
Emotion … Flags). Every fully-qualified emoji outside the Component group that the font draws as
one non-empty glyph is kept. Rendered once per (font, list, size, options) into a cache
(env DIFFLAB_CACHE, default ~/.cache/difflab), rebuilt when the font or the list changes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.files import atomic_write
from difflab.data.datasets import DATASETS, Dataset, check_choice, check_positive

EMOJI_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"  # Debian fonts-noto-color-emoji
EMOJI_TEST = "/usr/share/unicode/emoji/emoji-test.txt"  # Debian unicode-data
EMOJI_GROUPS = (
    "Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink", "Travel & Places",
    "Activities", "Objects", "Symbols", "Flags",
)  # fmt: skip
CACHE_ENV = "DIFFLAB_CACHE"
GLYPH_PX = 109  # the one pixel size of the font's colour bitmaps
CANVAS = 136  # each bitmap (136×128) is drawn centred on a 136×136 square, then downscaled
TEST_EVERY = 10  # one emoji in ten (by a hash of its code points) is held out
SKIN_TONES = frozenset(range(0x1F3FB, 0x1F400))  # the five Fitzpatrick modifiers
RENDER_VERSION = 1  # bump when rendering changes: caches of older versions are then ignored
_SOURCES = {  # option → (default path, Debian package)
    "font": (EMOJI_FONT, "fonts-noto-color-emoji"),
    "emoji_test": (EMOJI_TEST, "unicode-data"),
}


@dataclass(frozen=True)
class Emoji:
    """One emoji: code points ("1F34E", "1F468 200D 1F469"), lower-case name, group."""

    codepoints: str
    name: str
    group: str

    @property
    def text(self) -> str:
        return "".join(chr(int(c, 16)) for c in self.codepoints.split())


def read_emoji_test(path: str | os.PathLike, skin_tones: bool = False) -> list[Emoji]:
    """Fully-qualified emoji of an emoji-test.txt in file (CLDR) order, Component group left out;
    skin-tone variants only when `skin_tones`."""
    out, group = [], None
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif "; fully-qualified" in line and group in EMOJI_GROUPS:
            codes, comment = line.split(";", 1)[0].strip(), line.split("#", 1)[1].split()
            if not skin_tones and any(int(c, 16) in SKIN_TONES for c in codes.split()):
                continue
            name = " ".join(comment[2:]).lower()  # comment: "🍎 E0.6 red apple"
            out.append(Emoji(codes, name, group))
    return out


def is_held_out(codepoints: str) -> bool:
    """The fixed test split: sha256 of the code points, one in TEST_EVERY."""
    digest = hashlib.sha256(codepoints.encode()).digest()
    return int.from_bytes(digest[:8], "little") % TEST_EVERY == 0


def render_emoji(texts: list[str], font_path: str | os.PathLike, size: int):
    """(RGBA uint8 [N, 4, size, size] with straight alpha, drawn bool [N]): each text on a
    transparent CANVAS² square, Lanczos-downscaled; not drawn = empty or more than one glyph."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.truetype(str(font_path), GLYPH_PX)
    except OSError as e:
        raise UsageError(
            f"cannot load emoji font {font_path} at {GLYPH_PX} px ({e}); pass `font` = the path of "
            "NotoColorEmoji.ttf (Debian package fonts-noto-color-emoji)"
        ) from None
    advance = font.getlength("\U0001f600")  # one glyph's width
    out = np.zeros((len(texts), 4, size, size), np.uint8)
    drawn = np.zeros(len(texts), bool)
    for i, text in enumerate(texts):
        if font.getlength(text) > 1.5 * advance:  # not shaped into one glyph
            continue
        left, top, right, bottom = font.getbbox(text)
        im = Image.new("RGBA", (CANVAS, CANVAS), (0, 0, 0, 0))
        xy = ((CANVAS - right + left) // 2 - left, (CANVAS - bottom + top) // 2 - top)
        ImageDraw.Draw(im).text(xy, text, font=font, embedded_color=True)
        if im.getbbox() is None:  # .notdef draws nothing in this font
            continue
        small = im.resize((size, size), Image.Resampling.LANCZOS)  # premultiplied inside Pillow
        out[i], drawn[i] = np.asarray(small).transpose(2, 0, 1), True
    return out, drawn


def cache_dir() -> Path:
    """$DIFFLAB_CACHE, or ~/.cache/difflab."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "difflab")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rendered_emoji(
    font: Path, emoji_test: Path, size: int, skin_tones: bool
) -> tuple[np.ndarray, list[Emoji]]:
    """(RGBA uint8 [N, 4, size, size], emoji [N]) from the cache, rendered and cached on a miss;
    the cache file is keyed by the font's and the list's sha256, the size and the options."""
    from PIL import __version__ as pillow
    from PIL import features

    key = {"font": _sha256(font), "emoji_test": _sha256(emoji_test), "size": size,
           "skin_tones": skin_tones, "version": RENDER_VERSION, "pillow": pillow,
           "raqm": bool(features.check("raqm"))}  # fmt: skip
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"emoji-{size}px-{digest}.safetensors"
    cached = _read_cache(path)
    if cached is not None:
        return cached
    items = read_emoji_test(emoji_test, skin_tones)
    rgba, drawn = render_emoji([e.text for e in items], font, size)
    items = [e for e, ok in zip(items, drawn) if ok]
    if not items:
        raise UsageError(
            f"emoji font {font} draws none of the emoji in {emoji_test}; pass `font` = the path of "
            "NotoColorEmoji.ttf (Debian package fonts-noto-color-emoji)"
        )
    _write_cache(path, rgba[drawn], items, key)
    return rgba[drawn], items


def _write_cache(path: Path, rgba: np.ndarray, items: list[Emoji], key: dict) -> None:
    from safetensors.numpy import save_file

    table = [[e.codepoints, e.name, e.group] for e in items]
    meta = {"emoji": json.dumps(table, ensure_ascii=False), "key": json.dumps(key)}
    try:
        atomic_write(path, lambda tmp: save_file({"rgba": rgba}, tmp, metadata=meta))
    except OSError as e:
        raise UsageError(
            f"cannot write the emoji cache {path} ({e.strerror or e}); set {CACHE_ENV} to a "
            "writable folder"
        ) from None


def _read_cache(path: Path) -> tuple[np.ndarray, list[Emoji]] | None:
    """The cached (rgba, emoji), or None when absent or unreadable (then it is rendered again)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="numpy") as f:
            table = json.loads(f.metadata()["emoji"])
            rgba = f.get_tensor("rgba")
    except (SafetensorError, OSError, KeyError, TypeError, ValueError):
        return None
    if rgba.dtype != np.uint8 or rgba.ndim != 4 or len(rgba) != len(table):
        return None
    return rgba, [Emoji(*row) for row in table]


def _source(option: str, value: str | None) -> Path:
    """The path given for `option`, or its Debian default; missing → the package to install."""
    default, package = _SOURCES[option]
    path = Path(value if value is not None else default)
    if not path.is_file():
        raise UsageError(
            f"{path} not found (dataset 'emoji' needs it); install the Debian package {package} "
            f"(`sudo apt-get install {package}`) or pass `{option}` = its path"
        )
    return path


def composite(rgba: Tensor, background: str) -> Tensor:
    """RGBA uint8 [N, 4, H, W] (straight alpha) over white or black → RGB uint8 [N, 3, H, W]."""
    alpha = rgba[:, 3:].float() / 255.0  # [N, 1, H, W]
    under = 255.0 if background == "white" else 0.0
    rgb = rgba[:, :3].float() * alpha + under * (1.0 - alpha)  # [N, 3, H, W]
    return rgb.round().clamp(0, 255).to(torch.uint8)


@DATASETS.register("emoji", kind="image")
def emoji(
    *,
    size: int = 32,
    background: str = "white",
    label: str = "group",
    split: str = "train",
    skin_tones: bool = False,
    limit: int | None = None,
    font: str | None = None,
    emoji_test: str | None = None,
) -> Dataset:
    """Noto colour emoji, RGB uint8 [N, 3, size, size] composited on `background` (white or
    black); meta["mask"] holds the alpha [N, 1, size, size]. `label`="group": the nine Unicode
    emoji groups; "name": each emoji its own class named by its lower-case CLDR name (captions
    for text conditioning). `split`: a fixed ~10% "test" by a hash of the code points, the rest
    "train", or "all". `limit` keeps that many, evenly spaced through the CLDR order."""
    check_positive("size", size)
    if size > CANVAS:
        raise UsageError(f"size={size} is invalid for emoji; pass at most {CANVAS} (no upscaling)")
    check_choice("background", background, ("white", "black"))
    check_choice("label", label, ("group", "name"))
    check_choice("split", split, ("train", "test", "all"))
    rgba, items = rendered_emoji(
        _source("font", font), _source("emoji_test", emoji_test), size, bool(skin_tones)
    )
    keep = [i for i, e in enumerate(items)
            if split == "all" or is_held_out(e.codepoints) == (split == "test")]  # fmt: skip
    if limit is not None:
        check_positive("limit", limit)
        if limit < len(keep):
            keep = [keep[round(j)] for j in np.linspace(0, len(keep) - 1, limit)]
    items = [items[i] for i in keep]
    rgba_t = torch.from_numpy(rgba[keep])  # [N, 4, size, size]
    groups = torch.tensor([EMOJI_GROUPS.index(e.group) for e in items], dtype=torch.int64)
    names = [e.name for e in items]
    if label == "group":
        labels, class_names = groups, list(EMOJI_GROUPS)
    else:
        labels, class_names = torch.arange(len(items)), list(names)
    meta = {"mask": rgba_t[:, 3:].clone(), "groups": groups, "group_names": list(EMOJI_GROUPS),
            "names": names, "codepoints": [e.codepoints for e in items]}  # fmt: skip
    return Dataset(composite(rgba_t, background), labels, class_names, "image", meta)
