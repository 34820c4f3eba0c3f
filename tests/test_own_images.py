"""Evaluation on a user's own folder: which files are samples, a feature net trained with or
without labels (SimCLR), metric names that carry the folder's name, and the CLI end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from difflab.core.errors import UsageError
from difflab.core.sample_set import INCOMPLETE
from difflab.evaluation.evaluate import sample_files, sample_images
from difflab.evaluation.feature_training import train_feature_net
from difflab.evaluation.features import load_feature_net
from difflab.training.augment import blur_noise, colour_jitter, resized_crop_flip, simclr_view


def _blobs(folder, n: int, size: int = 12, seed: int = 0, channels: int = 1) -> None:
    """n images of one bright square each, at a random place and size (a tiny 'photo' folder)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im = np.zeros((size, size, channels), np.uint8)
        w, y, x = rng.integers(3, 7), rng.integers(0, size - 6), rng.integers(0, size - 6)
        im[y : y + w, x : x + w] = rng.integers(120, 256, channels)
        Image.fromarray(im[..., 0] if channels == 1 else im).save(folder / f"photo_{i}.png")


def _sample_set(folder, n: int, size: int = 12) -> None:
    """A sample set as `difflab sample` writes it: images/NNNNNN.png and grid.png."""
    from difflab.cli.outputs import SampleDir

    out = SampleDir(folder)
    out.add_images(torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8).numpy())
    out.finish()


def test_sample_files_are_the_numbered_pngs_only(tmp_path):
    _sample_set(tmp_path / "s", 5)
    files, skipped = sample_files(tmp_path / "s")
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(5)]
    assert [f.name for f in skipped] == ["grid.png"]
    images, _ = sample_images(tmp_path / "s", channels=1)
    assert images.shape == (5, 1, 12, 12)
    assert len(sample_files(tmp_path / "s" / "images")[0]) == 5  # the images/ folder itself
    _blobs(tmp_path / "mine", 4)  # someone else's names: all images but difflab's figures
    Image.new("L", (40, 40)).save(tmp_path / "mine" / "loss.png")
    files, skipped = sample_files(tmp_path / "mine")
    assert len(files) == 4 and [f.name for f in skipped] == ["loss.png"]
    (tmp_path / "s" / INCOMPLETE).write_text("")
    with pytest.raises(UsageError, match="interrupted sample set"):
        sample_files(tmp_path / "s")


def test_identity_crop_is_the_image_or_its_mirror():
    """Crop of the whole area at aspect 1: every output is x or x flipped, both occur."""
    x = torch.rand(64, 1, 6, 6) * 2 - 1
    y = resized_crop_flip(x, torch.Generator().manual_seed(0), scale=(1, 1), ratio=(1, 1))
    same = (y - x).abs().amax((1, 2, 3)) < 1e-5
    mirrored = (y - x.flip(-1)).abs().amax((1, 2, 3)) < 1e-5
    assert (same | mirrored).all() and same.any() and mirrored.any()


def test_augmentations_keep_shape_range_and_seed():
    x = torch.rand(16, 3, 8, 8) * 2 - 1
    for fn in (resized_crop_flip, colour_jitter, blur_noise, simclr_view):
        a, b = (fn(x, torch.Generator().manual_seed(3)) for _ in range(2))
        assert a.shape == x.shape and a.abs().max() <= 1 and torch.equal(a, b)
    gray = colour_jitter(x, torch.Generator().manual_seed(0), p=0.0, p_gray=1.0)
    assert torch.equal(gray, x)  # p = 0: no colour distortion at all


def test_unlabelled_folder_trains_self_supervised_and_names_the_metric(tmp_path):
    """300 unlabelled digits in a folder: SimCLR lowers NT-Xent well below chance, log(2B − 1)."""
    from difflab.data.datasets import load_dataset

    (tmp_path / "myfaces").mkdir()
    for i, im in enumerate(load_dataset("digits").x[:300]):
        Image.fromarray(im[0].numpy()).save(tmp_path / "myfaces" / f"{i}.png")
    spec = {"name": "folder", "path": str(tmp_path / "myfaces"), "channels": 1}
    losses = []
    path = train_feature_net(spec, steps=60, batch_size=64, width=8, feat_dim=16,
                             out_path=tmp_path / "f.safetensors",
                             callback=lambda r: losses.append(r["loss"]))  # fmt: skip
    assert np.mean(losses[:5]) > 0.99 * np.log(127) and np.mean(losses[-10:]) < np.log(127) - 0.2
    net = load_feature_net({"name": "domain", "path": str(path)})
    assert net.fd_name == "FD-myfaces" and net.num_classes == 0
    assert net.info["train"]["objective"] == "simclr" and 0 <= net.info["view_accuracy"] <= 1
    with pytest.raises(UsageError, match="trained without labels"):
        net.probs(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))


def test_labelled_folder_trains_a_classifier_as_before(tmp_path):
    _blobs(tmp_path / "pets" / "cats", 20, seed=1)
    _blobs(tmp_path / "pets" / "dogs", 20, seed=2)
    spec = {"name": "folder", "path": str(tmp_path / "pets"), "channels": 1}
    path = train_feature_net(spec, steps=3, batch_size=8, width=8, feat_dim=16,
                             out_path=tmp_path / "f.safetensors")  # fmt: skip
    net = load_feature_net({"name": "domain", "path": str(path)})
    assert net.fd_name == "FD-pets" and net.num_classes == 2 and "test_accuracy" in net.info
    with pytest.raises(UsageError, match="objective='classification'"):
        train_feature_net({**spec, "path": str(tmp_path / "pets" / "cats")}, steps=1,
                          objective="classification", out_path=tmp_path / "g.safetensors")  # fmt: skip


def _difflab(*args, cwd):
    return subprocess.run([sys.executable, "-m", "difflab", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)  # fmt: skip


def test_cli_train_features_ref_stats_and_eval_on_a_folder(tmp_path):
    _blobs(tmp_path / "myfaces", 120)
    _sample_set(tmp_path / "samples", 60)
    r = _difflab("train-features", "myfaces", "--out", "f.safetensors", "--steps", "3",
                 "--batch-size", "16", "--quiet", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "FD-myfaces" in r.stdout and "self-supervised" in r.stdout
    r = _difflab("ref-stats", "myfaces", "--features", "f.safetensors", "--out", "ref.npz",
                 "--quiet", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = _difflab("eval", "samples", "--ref", "ref.npz", "--features", "f.safetensors",
                 cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["n"] == 60 and report["skipped"] == ["grid.png"]  # grid.png is no sample
    assert report["fd_name"] == "FD-myfaces" and report["kid_name"] == "KID-myfaces"
    assert report["fd_small_n"] and "n = 60 < 2048" in report["note"]
    assert report["fd"] is None and report["kid_se"] > 0  # 60 items, 128-d: no covariance
    first = r.stderr.splitlines()[0]
    assert first.startswith("n = 60 vs 120 reference: KID-myfaces = ")
    assert first.index("KID-myfaces") < first.index("FD-myfaces = n/a")
    assert "note: n = 60 < 2048" in r.stderr
