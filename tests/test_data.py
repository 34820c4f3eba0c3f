"""Tests for difflab.data: loaders, IDX files, image folders, toys, the resumable loader."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from requires import require_fashion_mnist

from difflab.core.errors import UsageError
from difflab.core.imageio import pixels_to_uint8, uint8_to_pixels
from difflab.data.datasets import (
    DATASETS,
    Dataset,
    load_dataset,
    read_idx,
    write_idx,
)
from difflab.data.loader import InfiniteLoader


def test_registry_names():
    expected = {"digits", "idx", "fashion_mnist", "folder", "swiss_roll", "gaussian_mixture"}
    assert expected <= set(DATASETS.names())


def test_images_round_trip_exact():
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)  # [1, 1, 16, 16]
    m = uint8_to_pixels(x)
    assert m.dtype == torch.float32 and m.min() == -1 and m.max() == 1
    assert torch.equal(pixels_to_uint8(m), x)
    assert torch.equal(pixels_to_uint8(torch.tensor([-3.0, 3.0])), torch.tensor([0, 255]).byte())
    with pytest.raises(UsageError):
        uint8_to_pixels(m)


# ---------------------------------------------------------------- digits


def test_digits_shapes_labels_range():
    ds = load_dataset("digits")
    assert len(ds) == 1797 and ds.shape == (1, 8, 8) and ds.kind == "image"
    assert ds.x.dtype == torch.uint8 and int(ds.x.max()) == 255 and int(ds.x.min()) == 0
    assert ds.num_classes == 10 and ds.class_names[0] == "zero" and ds.class_names[9] == "nine"
    assert set(ds.labels.tolist()) == set(range(10))
    big = load_dataset({"name": "digits", "size": 16, "resize": "nearest"})
    assert big.shape == (1, 16, 16)
    assert torch.equal(big.x[:, :, ::2, ::2], ds.x)
    assert load_dataset({"name": "digits", "size": 32}).shape == (1, 32, 32)
    assert load_dataset({"name": "digits", "size": 12, "resize": "pad"}).shape == (1, 12, 12)


def test_digits_split_disjoint_and_deterministic():
    train, test = (load_dataset({"name": "digits", "split": s}) for s in ("train", "test"))
    full = load_dataset("digits")
    assert len(train) + len(test) == len(full) and len(test) == len(full) // 5
    rows = {tuple(r) for r in full.x.flatten(1).tolist()}  # digits has duplicate images
    train_rows = {tuple(r) for r in train.x.flatten(1).tolist()}
    test_rows = {tuple(r) for r in test.x.flatten(1).tolist()}
    assert train_rows | test_rows == rows
    assert torch.equal(load_dataset({"name": "digits", "split": "test"}).x, test.x)


def test_bad_options_are_usage_errors():
    with pytest.raises(UsageError, match="split"):
        load_dataset({"name": "digits", "split": "val"})
    with pytest.raises(UsageError, match="resize"):
        load_dataset({"name": "digits", "size": 16, "resize": "cubic"})
    with pytest.raises(UsageError, match="pad"):
        load_dataset({"name": "digits", "size": 4, "resize": "pad"})
    with pytest.raises(UsageError, match="no option"):
        load_dataset({"name": "digits", "sise": 16})


# ---------------------------------------------------------------- IDX


def _raw_idx(array: np.ndarray) -> bytes:
    """IDX bytes written by hand (independent of write_idx)."""
    return (
        bytes([0, 0, 0x08, array.ndim])
        + struct.pack(f">{array.ndim}I", *array.shape)
        + (array.astype(np.uint8).tobytes())
    )


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 5, 6), dtype=np.uint8)
    labels = rng.integers(0, 3, 7, dtype=np.uint8)
    ext = ".gz" if gz else ""
    (tmp_path / f"img{ext}").write_bytes(
        gzip.compress(_raw_idx(images)) if gz else _raw_idx(images)
    )
    write_idx(tmp_path / f"lab{ext}", labels)
    assert np.array_equal(read_idx(tmp_path / f"lab{ext}"), labels)
    ds = load_dataset(
        {
            "name": "idx",
            "images": str(tmp_path / f"img{ext}"),
            "labels": str(tmp_path / f"lab{ext}"),
        }
    )
    assert ds.shape == (1, 5, 6) and ds.x.dtype == torch.uint8
    assert np.array_equal(ds.x[:, 0].numpy(), images)
    assert np.array_equal(ds.labels.numpy(), labels)
    limited = load_dataset({"name": "idx", "images": str(tmp_path / f"img{ext}"), "limit": 3})
    assert len(limited) == 3 and limited.labels is None


def test_idx_write_read_other_dtypes(tmp_path):
    for arr in (np.arange(6, dtype=np.int32).reshape(2, 3), np.linspace(0, 1, 4, dtype=np.float32)):
        write_idx(tmp_path / "a.idx", arr)
        out = read_idx(tmp_path / "a.idx")
        assert out.dtype == arr.dtype and np.array_equal(out, arr)


def test_idx_bad_files(tmp_path):
    images = np.zeros((4, 3, 3), dtype=np.uint8)
    raw = _raw_idx(images)
    cases = {
        "trunc": (raw[:-5], "truncated"),
        "trunc.gz": (gzip.compress(raw[:-1]), "truncated"),
        "header": (raw[:9], "truncated"),
        "long": (raw + b"\0", "longer"),
        "magic": (b"\x12\x34" + raw[2:], "magic"),
        "empty": (b"", "magic"),
        "badgz.gz": (gzip.compress(raw)[:-12], "gzip"),
    }
    for name, (data, what) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UsageError, match=what) as err:
            load_dataset({"name": "idx", "images": str(tmp_path / name)})
        assert name in str(err.value)
    write_idx(tmp_path / "lab", np.zeros(5, dtype=np.uint8))
    (tmp_path / "img").write_bytes(raw)
    with pytest.raises(UsageError, match="labels"):
        load_dataset(
            {"name": "idx", "images": str(tmp_path / "img"), "labels": str(tmp_path / "lab")}
        )
    with pytest.raises(UsageError, match="does not exist"):
        load_dataset({"name": "idx", "images": str(tmp_path / "missing")})
    with pytest.raises(UsageError, match="uint8"):
        load_dataset({"name": "idx", "images": str(tmp_path / "lab")})  # 1-D labels as images


def test_fashion_mnist():
    require_fashion_mnist()
    ds = load_dataset({"name": "fashion_mnist", "split": "test", "size": 32, "limit": 100})
    assert len(ds) == 100 and ds.shape == (1, 32, 32) and ds.num_classes == 10
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert int(ds.x[:, :, :2].max()) == 0  # zero padding 28 → 32


def test_fashion_mnist_missing_root(tmp_path):
    with pytest.raises(UsageError, match="apt-get install dataset-fashion-mnist"):
        load_dataset({"name": "fashion_mnist", "root": str(tmp_path)})


# ---------------------------------------------------------------- image folders


def _png(path: Path, size: tuple[int, int], color, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_folder_labels_and_resize(tmp_path):
    _png(tmp_path / "cats" / "a.png", (20, 10), (255, 0, 0))
    _png(tmp_path / "cats" / "deep" / "b.png", (10, 10), (0, 255, 0))
    _png(tmp_path / "dogs" / "c.jpg", (10, 30), 128, "L")
    ds = load_dataset({"name": "folder", "path": str(tmp_path), "size": 8})
    assert ds.shape == (3, 8, 8) and len(ds) == 3 and ds.class_names == ["cats", "dogs"]
    assert ds.labels.tolist() == [0, 0, 1]
    assert ds.x[0, :, 4, 4].tolist() == [255, 0, 0]
    assert ds.x[2].float().sub(128).abs().max() <= 2  # grayscale JPEG → RGB
    gray = load_dataset({"name": "folder", "path": str(tmp_path), "size": 8, "channels": 1})
    assert gray.shape == (1, 8, 8)


def test_folder_no_labels_and_same_size(tmp_path):
    _png(tmp_path / "only" / "a.png", (6, 5), (1, 2, 3))
    _png(tmp_path / "b.png", (6, 5), 7, "L")
    ds = load_dataset({"name": "folder", "path": str(tmp_path), "channels": 1})
    assert ds.labels is None and ds.class_names is None and ds.shape == (1, 5, 6)
    _png(tmp_path / "c.png", (4, 4), 7, "L")
    with pytest.raises(UsageError, match="size="):
        load_dataset({"name": "folder", "path": str(tmp_path)})


def test_folder_errors(tmp_path):
    with pytest.raises(UsageError, match="path="):
        load_dataset("folder")
    with pytest.raises(UsageError, match="images="):
        load_dataset("idx")
    with pytest.raises(UsageError, match="does not exist"):
        load_dataset({"name": "folder", "path": str(tmp_path / "nope")})
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(UsageError, match="no images"):
        load_dataset({"name": "folder", "path": str(tmp_path)})
    _png(tmp_path / "good.png", (4, 4), (0, 0, 0))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(UsageError, match="bad.png"):
        load_dataset({"name": "folder", "path": str(tmp_path)})
    with pytest.raises(UsageError, match="channels"):
        load_dataset({"name": "folder", "path": str(tmp_path), "channels": 4})


# ---------------------------------------------------------------- 2-D toys


@pytest.mark.parametrize("name", ["swiss_roll", "gaussian_mixture"])
def test_toys_deterministic(name):
    a, b = (load_dataset({"name": name, "n": 500, "seed": 3}) for _ in range(2))
    c = load_dataset({"name": name, "n": 500, "seed": 4})
    assert a.kind == "points" and a.shape == (2,) and len(a) == 500 and a.x.dtype == torch.float32
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert 0.5 < float(a.x.std()) < 1.5


def test_gaussian_mixture_labels():
    ds = load_dataset({"name": "gaussian_mixture", "n": 4000, "modes": 4, "std": 0.01})
    assert ds.num_classes == 4 and set(ds.labels.tolist()) == {0, 1, 2, 3}
    err = ds.x - ds.meta["means"][ds.labels]  # [N, 2]
    assert float(err.abs().max()) < 0.1


# ---------------------------------------------------------------- loader


def _batches(loader: InfiniteLoader, k: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    return [next(loader) for _ in range(k)]


@pytest.mark.parametrize("hflip", [False, True])
def test_loader_resume_exact(hflip):
    ds = load_dataset({"name": "digits", "split": "test"})  # 359 items
    ref = InfiniteLoader(ds, 64, seed=5, hflip=hflip)
    first = _batches(ref, 7)  # crosses an epoch boundary
    state = ref.state_dict()
    assert set(state) == {"epoch", "index", "seed"} and state["epoch"] == 1
    expected = _batches(ref, 9)
    resumed = InfiniteLoader(ds, 64, seed=0, hflip=hflip)
    resumed.load_state_dict(dict(state))
    for (x1, y1), (x2, y2) in zip(expected, _batches(resumed, 9)):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x, y = first[0]
    assert x.shape == (64, 1, 8, 8) and x.dtype == torch.float32 and y.shape == (64,)
    assert -1 <= float(x.min()) and float(x.max()) <= 1


def test_loader_epochs_cover_dataset():
    ds = Dataset(torch.arange(10.0)[:, None].repeat(1, 2), None, None, "points")
    loader = InfiniteLoader(ds, 4, seed=1)
    seen = torch.cat([next(loader)[0][:, 0] for _ in range(5)])  # 20 items = 2 epochs
    assert sorted(seen[:10].tolist()) == list(range(10)) == sorted(seen[10:].tolist())
    assert not torch.equal(seen[:10], seen[10:])  # reshuffled each epoch
    big = InfiniteLoader(ds, 25, seed=1)  # batch larger than the dataset
    assert next(big)[0].shape == (25, 2) and big.state_dict()["epoch"] == 2


def test_loader_hflip():
    x = torch.zeros(64, 1, 2, 2, dtype=torch.uint8)
    x[:, :, :, 0] = 255
    loader = InfiniteLoader(Dataset(x), 64, seed=0, hflip=True)
    out, labels = next(loader)
    flipped = out[:, 0, 0, 0] < 0  # [B]
    assert labels is None and 0 < int(flipped.sum()) < 64
    with pytest.raises(UsageError, match="hflip"):
        InfiniteLoader(load_dataset({"name": "swiss_roll", "n": 10}), 4, hflip=True)
    with pytest.raises(UsageError, match="resume"):
        loader.load_state_dict({"epoch": 0, "index": 64, "seed": 0})
