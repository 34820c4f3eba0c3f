"""Datasets: digits, IDX (MNIST format) files, Fashion-MNIST, image folders, 2-D toys; a loader.

Images are stored uint8 [N, C, H, W] (0..255) and enter the model as float32 in [-1, 1]
(`uint8_to_pixels`); 2-D toy points are stored float32 [N, 2], already in model space; latents
(a latent cache, data/latents.py) float32 [N, C, h, w], already in a codec's model space.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.imageio import image_files, load_image, uint8_to_pixels
from difflab.core.registry import Registry

DATASETS = Registry("dataset")

KINDS = ("image", "points", "latents")
RESIZE_MODES = ("bilinear", "nearest", "pad")
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist
_FASHION = "T-shirt/top|Trouser|Pullover|Dress|Coat|Sandal|Shirt|Sneaker|Bag|Ankle boot"
FASHION_MNIST_CLASSES = _FASHION.split("|")
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@dataclass
class Dataset:
    """An in-memory dataset: uint8 images [N, C, H, W] or float32 points [N, 2], optional labels."""

    x: Tensor
    labels: Tensor | None = None  # int64 [N]
    class_names: list[str] | None = None
    kind: str = "image"  # "image" or "points"
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. mixture means for oracle tests

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, KINDS)
        if self.kind == "image" and (self.x.dtype != torch.uint8 or self.x.ndim != 4):
            raise UsageError(
                f"image datasets hold uint8 [N, C, H, W], got {self.x.dtype} {tuple(self.x.shape)}; "
                "convert with pixels_to_uint8"
            )
        if self.kind == "points" and (not self.x.is_floating_point() or self.x.ndim != 2):
            raise UsageError(
                f"point datasets hold float [N, D], got {self.x.dtype} {tuple(self.x.shape)}; "
                "pass a 2-D float tensor"
            )
        if self.kind == "latents" and (not self.x.is_floating_point() or self.x.ndim != 4):
            raise UsageError(
                f"latent datasets hold float [N, C, h, w], got {self.x.dtype} "
                f"{tuple(self.x.shape)}; pass a 4-D float tensor"
            )
        if self.labels is not None:
            self.labels = self.labels.to(torch.int64)
            if self.labels.shape != (len(self.x),):
                raise UsageError(
                    f"labels have shape {tuple(self.labels.shape)} for {len(self.x)} items; "
                    "pass one label per item"
                )

    def __len__(self) -> int:
        return len(self.x)

    @property
    def shape(self) -> tuple[int, ...]:
        """Per-item shape: (C, H, W) for images, (D,) for points, (C, h, w) for latents."""
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        """Number of classes (0 when unlabelled)."""
        if self.class_names is not None:
            return len(self.class_names)
        if self.labels is None or len(self.labels) == 0:
            return 0
        return int(self.labels.max()) + 1

    def to_model(self, x: Tensor) -> Tensor:
        """A stored batch → model space (images to [-1, 1]; points and latents unchanged)."""
        return uint8_to_pixels(x) if self.kind == "image" else x.to(torch.float32)


def load_dataset(spec: str | dict[str, Any]) -> Dataset:
    """Build a dataset from "name" or {"name": ..., **options}."""
    return DATASETS.build(spec)


# ---------------------------------------------------------------- option checks and resizing


def check_choice(option: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        valid = ", ".join(map(repr, choices))
        raise UsageError(f"{option}={value!r} is invalid; use one of: {valid}")


def check_positive(option: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UsageError(f"{option}={value!r} is invalid; pass a positive integer")


def _resize(x: Tensor, size: int | None, mode: str) -> Tensor:
    """Resize uint8 [N, C, H, W] to size×size by interpolation or by centred zero padding."""
    check_choice("resize", mode, RESIZE_MODES)
    if size is None:
        return x
    check_positive("size", size)
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    if mode == "pad":
        if h > size or w > size:
            raise UsageError(f"cannot pad {h}×{w} images to {size}; use resize='bilinear'")
        top, left = (size - h) // 2, (size - w) // 2
        return F.pad(x, (left, size - w - left, top, size - h - top))  # [N, C, size, size]
    out = F.interpolate(
        x.float(),
        size=(size, size),
        mode=mode,
        **({"antialias": True} if mode == "bilinear" else {}),
    )
    return out.round().clamp(0, 255).to(torch.uint8)  # [N, C, size, size]


# ---------------------------------------------------------------- digits


@DATASETS.register("digits", kind="image")
def digits(*, size: int = 8, resize: str = "bilinear", split: str = "all") -> Dataset:
    """scikit-learn's 8×8 handwritten digits (1797 images), 0..16 scaled to 0..255."""
    from sklearn.datasets import load_digits

    check_choice("split", split, ("train", "test", "all"))
    raw = load_digits()
    x = torch.from_numpy(raw.images * (255.0 / 16.0)).round().to(torch.uint8)[:, None]  # [N,1,8,8]
    labels = torch.from_numpy(raw.target).to(torch.int64)
    if split != "all":
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        n_test = len(x) // 5
        keep = (perm[-n_test:] if split == "test" else perm[:-n_test]).sort().values
        x, labels = x[keep], labels[keep]
    return Dataset(_resize(x, size, resize), labels, list(DIGIT_NAMES), "image")


# ---------------------------------------------------------------- IDX (MNIST format)

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzip), validating its magic number, dimensions and length."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"IDX file {path} does not exist; check the path")
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise UsageError(f"IDX file {path} is a corrupt gzip ({e}); re-download it") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise UsageError(
            f"IDX file {path} has a bad magic number {data[:4].hex() or '(empty)'}; "
            "pass an MNIST-format IDX file (magic 0000 08 03 for images)"
        )
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UsageError(f"IDX file {path} is truncated inside its header; re-download it")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise UsageError(
            f"IDX file {path} is {what}: {len(data)} bytes for dims {dims} "
            f"({expected} expected); re-download it"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an array as an IDX file, gzip-compressed when the name ends in .gz."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    array = np.asarray(array)
    if array.dtype not in codes:
        raise UsageError(f"IDX cannot store {array.dtype}; cast to uint8, int32 or float32")
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    Path(path).write_bytes(gzip.compress(data) if str(path).endswith(".gz") else data)


@DATASETS.register("idx", kind="image")
def idx(
    *,
    images: str | None = None,
    labels: str | None = None,
    class_names: list[str] | None = None,
    size: int | None = None,
    resize: str = "bilinear",
    limit: int | None = None,
) -> Dataset:
    """MNIST-format IDX images [N, H, W] uint8 with optional labels [N] uint8."""
    if images is None:
        raise UsageError("dataset 'idx' needs images=; pass the path of an IDX images file")
    arr = read_idx(images)
    if arr.dtype != np.uint8 or arr.ndim != 3:
        raise UsageError(
            f"IDX images {images} hold {arr.dtype} with dims {arr.shape}; "
            "pass a uint8 [N, H, W] images file (magic 00000803)"
        )
    x = torch.from_numpy(arr)[:, None]  # [N, 1, H, W]
    y = None
    if labels is not None:
        lab = read_idx(labels)
        if lab.ndim != 1 or lab.dtype.kind not in "iu" or len(lab) != len(x):
            raise UsageError(
                f"IDX labels {labels} hold {lab.dtype} with dims {lab.shape} for {len(x)} images; "
                "pass the labels file that matches the images (magic 00000801)"
            )
        y = torch.from_numpy(lab.astype(np.int64))
        if class_names is not None and len(y) and int(y.max()) >= len(class_names):
            raise UsageError(
                f"IDX labels {labels} range over {int(y.min())}..{int(y.max())} but "
                f"{len(class_names)} class names were given; pass one name per class"
            )
    if limit is not None:
        check_positive("limit", limit)
        x, y = x[:limit], (None if y is None else y[:limit])
    return Dataset(_resize(x, size, resize), y, class_names, "image")


@DATASETS.register("fashion_mnist", kind="image")
def fashion_mnist(
    *,
    split: str = "train",
    root: str | None = None,
    size: int | None = None,
    resize: str = "pad",
    limit: int | None = None,
) -> Dataset:
    """Fashion-MNIST (Xiao et al. 2017) from the Debian package dataset-fashion-mnist or root."""
    check_choice("split", split, ("train", "test"))
    base = Path(root if root is not None else FASHION_MNIST_ROOT)
    prefix = "train" if split == "train" else "t10k"
    paths = []
    for part in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        found = [base / f"{prefix}-{part}{ext}" for ext in (".gz", "")]
        found = [p for p in found if p.is_file()]
        if not found:
            raise UsageError(
                f"Fashion-MNIST file {prefix}-{part}[.gz] not found in {base}; "
                "run `apt-get install dataset-fashion-mnist` or pass root="
            )
        paths.append(str(found[0]))
    return idx(
        images=paths[0],
        labels=paths[1],
        class_names=list(FASHION_MNIST_CLASSES),
        size=size,
        resize=resize,
        limit=limit,
    )


# ---------------------------------------------------------------- image folders


def folder_images(path: str | Path) -> tuple[Path, list[Path]]:
    """(the folder, its image files in a fixed order); UsageError if it is missing or empty."""
    root = Path(path)
    if not root.is_dir():
        raise UsageError(f"image folder {root} does not exist; check `path`")
    files = image_files(root)
    if not files:
        raise UsageError(f"image folder {root} holds no images; add PNG/JPEG files or fix `path`")
    return root, files


@DATASETS.register("folder", kind="image")
def folder(*, path: str | None = None, channels: int = 3, size: int | None = None) -> Dataset:
    """A folder of images (recursive); labels from ≥2 immediate subfolders, sorted by name."""
    if path is None:
        raise UsageError("dataset 'folder' needs path=; pass the image folder's path")
    check_choice("channels", channels, (1, 3))
    if size is not None:
        check_positive("size", size)
    root, files = folder_images(path)
    top = [f.relative_to(root).parts for f in files]
    classes = sorted({parts[0] for parts in top if len(parts) > 1})
    y = None
    if len(classes) >= 2:
        loose = [f for f, parts in zip(files, top) if len(parts) == 1]
        if loose:
            raise UsageError(
                f"image folder {root} mixes class subfolders with top-level images ({loose[0]}); "
                "move every image into a class subfolder"
            )
        y = torch.tensor([classes.index(parts[0]) for parts in top], dtype=torch.int64)
    else:
        classes = None
    images = [load_image(f, channels, size) for f in files]
    first = images[0].shape
    for f, im in zip(files, images):
        if im.shape != first:
            raise UsageError(
                f"image {f} is {im.shape[2]}×{im.shape[1]} but {files[0]} is "
                f"{first[2]}×{first[1]}; pass size= to resize and centre-crop"
            )
    return Dataset(torch.stack(images), y, classes, "image")  # [N, C, H, W]


# ---------------------------------------------------------------- 2-D toys

_SWISS_MEAN, _SWISS_STD = (2.0, 0.21), 6.85  # moments of the noiseless roll, t ∈ [1.5π, 4.5π]


@DATASETS.register("swiss_roll", kind="points")
def swiss_roll(*, n: int = 10000, noise: float = 0.05, seed: int = 0) -> Dataset:
    """2-D swiss roll (x, y) = t·(cos t, sin t), centred and scaled to about unit std."""
    check_positive("n", n)
    g = torch.Generator().manual_seed(seed)
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g, dtype=torch.float64))  # [N]
    x = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1)  # [N, 2]
    x = (x - torch.tensor(_SWISS_MEAN, dtype=torch.float64)) / _SWISS_STD
    x = x + noise * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return Dataset(x.to(torch.float32), None, None, "points")


@DATASETS.register("gaussian_mixture", kind="points")
def gaussian_mixture(
    *, n: int = 10000, modes: int = 8, radius: float = 2**0.5, std: float = 0.1, seed: int = 0
) -> Dataset:
    """Equal-weight isotropic Gaussians with means evenly spaced on a circle; label = component."""
    check_positive("n", n)
    check_positive("modes", modes)
    if std < 0:
        raise UsageError(f"std={std!r} is invalid; pass a non-negative float")
    angle = 2 * math.pi * torch.arange(modes, dtype=torch.float64) / modes  # [K]
    means = radius * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)  # [K, 2]
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(modes, (n,), generator=g)  # [N]
    x = means[y] + std * torch.randn(n, 2, generator=g, dtype=torch.float64)  # [N, 2]
    names = [f"mode {k}" for k in range(modes)]
    meta = {"means": means.to(torch.float32), "std": float(std)}
    return Dataset(x.to(torch.float32), y, names, "points", meta)


# ---------------------------------------------------------------- training loader


