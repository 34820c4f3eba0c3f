"""Outputs are never lost: sample sets stream to disk, are marked INCOMPLETE until done, and replace
an old set only with --overwrite; 16-bit PNGs and image folders are read as images."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_train import TINY_UNET

from difflab import train
from difflab.cli import outputs
from difflab.cli.main import main
from difflab.core.config import load_config
from difflab.data.datasets import load_dataset
from difflab.inference.pipeline import load
from difflab.storage import checkpoint as ckpt


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("out") / "run"
    train(load_config("digits", [TINY_UNET, "train.steps=1", "train.batch_size=4"]), d)
    return d


def _sample(run, out, *extra):
    return main(["sample", str(run), "--out", str(out), "--quiet", "--steps", "2", *extra])


def test_samples_stream_to_disk_equal_one_call_and_cap_the_grid(run, tmp_path):
    assert _sample(run, tmp_path / "s", "-n", "300", "--batch-size", "128") == 0
    files = sorted((tmp_path / "s" / "images").glob("*.png"))
    assert len(files) == 300 and not (tmp_path / "s" / outputs.INCOMPLETE).exists()
    grid = Image.open(tmp_path / "s" / "grid.png")
    assert grid.size == ((16 * 10 + 2) * 4,) * 2  # 256 tiles of 8 px (+2 pad) ×4, not 300
    ref = load(run)(300, steps=2, batch_size=100).numpy()  # another batch size: same samples
    for i in (0, 127, 128, 299):
        assert np.array_equal(np.asarray(Image.open(files[i])), ref[i, 0])


def test_an_old_sample_set_is_replaced_only_with_overwrite(run, tmp_path, capsys):
    out = tmp_path / "s"
    assert _sample(run, out, "-n", "6", "--class", "3") == 2  # unconditional: refused
    assert _sample(run, out, "-n", "6") == 0
    before = sorted(p.read_bytes() for p in (out / "images").glob("*.png"))
    (out / "labels.json").write_text(json.dumps({"classes": [1] * 6}))  # a stale label file
    capsys.readouterr()
    assert _sample(run, out, "-n", "3", "--seed", "7") == 2
    assert "already holds files; pass --overwrite" in capsys.readouterr().err
    assert sorted(p.read_bytes() for p in (out / "images").glob("*.png")) == before
    assert _sample(run, out, "-n", "3", "--seed", "7", "--overwrite") == 0
    assert len(list((out / "images").glob("*.png"))) == 3 and not (out / "labels.json").exists()


def test_an_interrupted_sample_set_is_marked_incomplete(run, tmp_path, monkeypatch, capsys):
    real = outputs.SampleDir.add_images

    def stop_after_first_batch(self, images, meta=None):
        if self.count:
            raise KeyboardInterrupt
        real(self, images, meta)

    monkeypatch.setattr(outputs.SampleDir, "add_images", stop_after_first_batch)
    assert _sample(run, tmp_path / "s", "-n", "8", "--batch-size", "4") == 130
    assert capsys.readouterr().err.strip() == "difflab: interrupted"
    assert (tmp_path / "s" / outputs.INCOMPLETE).exists()
    assert len(list((tmp_path / "s" / "images").glob("*.png"))) == 4


def test_output_files_are_checked_before_any_work(run, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("difflab.storage.models.load_denoiser", lambda *a: calls.append(a))
    (tmp_path / "r.json").write_text("old")
    assert main(["nll", str(run), "--data", "digits", "--json", str(tmp_path / "r.json")]) == 2
    assert calls == [] and (tmp_path / "r.json").read_text() == "old"


def test_sixteen_bit_pngs_keep_their_grey_levels(tmp_path):
    levels = np.arange(64, dtype=np.uint16).reshape(8, 8) * 4  # 0..252
    Image.fromarray(levels * 257).save(tmp_path / "a.png")  # 16-bit: 0..64764
    assert Image.open(tmp_path / "a.png").mode.startswith("I")
    x = load_dataset({"name": "folder", "path": str(tmp_path), "channels": 1}).x
    assert torch.equal(x[0, 0], torch.from_numpy(levels.astype(np.uint8)))


@pytest.fixture(scope="module")
def gray_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("gray")
    digits = load_dataset("digits")
    for i in range(40):
        sub = d / f"c{int(digits.labels[i]) % 2}"
        sub.mkdir(exist_ok=True)
        Image.fromarray(digits.x[i, 0].numpy()).save(sub / f"{i}.png")
    return d


def test_train_features_accepts_an_image_folder(gray_folder, tmp_path):
    out = tmp_path / "f.safetensors"
    argv = ["train-features", str(gray_folder), "--out", str(out), "--steps", "2", "--quiet"]
    assert main(argv) == 0
    assert ckpt.read_metadata(out)["config"]["in_channels"] == 1  # grayscale folder: 1 channel
    assert main(argv) == 2 and main([*argv, "--overwrite"]) == 0


def test_train_classifier_accepts_an_image_folder(gray_folder, tmp_path):
    out = tmp_path / "c.safetensors"
    argv = ["train-classifier", str(gray_folder), "--out", str(out), "--steps", "1", "--quiet",
            "--batch-size", "8", "--device", "cpu", "--set", "net.model_channels=8"]  # fmt: skip
    assert main(argv) == 0
    assert ckpt.read_metadata(out)["shape"] == [1, 8, 8]
    assert main([*argv, "--overwrite"]) == 0
