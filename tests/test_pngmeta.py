"""Every PNG difflab writes carries its settings, and `difflab sample --from-png` re-makes it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from tiny_models import save_run

from difflab.cli.main import main
from difflab.core.errors import UsageError
from difflab.core.imageio import save_images
from difflab.core.pngmeta import read_png_meta


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    return save_run(tmp_path_factory.mktemp("png") / "run", "class")


def _sample(run, out, *extra):
    argv = ["sample", str(run), "--out", str(out), "-n", "5", "--steps", "4", "--quiet", *extra]
    assert main(argv) == 0


def test_settings_round_trip_and_equal_settings_give_equal_bytes(tmp_path):
    images = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    meta = [{"seed": 1, "sampler": {"name": "euler"}}, {"seed": 2, "prompt": "a bag ✓"}]
    a = save_images(images, tmp_path / "a", meta=meta)
    b = save_images(images, tmp_path / "b", meta=meta)
    assert [read_png_meta(p) for p in a] == meta
    assert a[1].read_bytes() == b[1].read_bytes()
    assert "sampler: euler" in Image.open(a[0]).text["parameters"]  # the human-readable chunk


def test_cli_images_carry_their_settings(class_run, tmp_path):
    _sample(class_run, tmp_path / "s", "--sampler", "euler_ancestral", "--class", "3,7",
            "--guidance", "cfg:scale=2")  # fmt: skip
    meta = read_png_meta(tmp_path / "s" / "images" / "000002.png")
    assert meta["sampler"] == {"name": "euler_ancestral"} and meta["steps"] == 4
    assert meta["seed"] == 0 and meta["index"] == 2 and meta["inputs"] == {"classes": [3]}
    assert meta["guidance"] == [{"name": "cfg", "scale": "2"}] and len(meta["sha256"]) == 64
    assert meta["discretization"] == {"name": "karras"} and meta["step"] == 1
    grid = read_png_meta(tmp_path / "s" / "grid.png")
    assert grid["n"] == 5 and grid["inputs"] == {"classes": [3, 7]}


@pytest.mark.parametrize("which", ["images/000003.png", "grid.png"])
def test_from_png_remakes_the_image_bit_for_bit(class_run, tmp_path, which):
    """A stochastic sampler with guidance: one image of a batch re-made alone, same bytes."""
    _sample(class_run, tmp_path / "a", "--sampler", "euler_ancestral", "--seed", "11",
            "--guidance", "cfg:scale=2")  # fmt: skip
    assert main(["sample", "--from-png", str(tmp_path / "a" / which), "--out",
                 str(tmp_path / "b"), "--quiet"]) == 0  # fmt: skip
    assert (tmp_path / "b" / which).read_bytes() == (tmp_path / "a" / which).read_bytes()
    labels = json.loads((tmp_path / "b" / "labels.json").read_text())
    assert labels["classes"] == ([3] if which != "grid.png" else [0, 1, 2, 3, 4])


def test_from_png_refuses_another_checkpoint_and_plain_pngs(class_run, tmp_path, capsys):
    _sample(class_run, tmp_path / "a")
    other = save_run(tmp_path / "other", "class", 8, "model.sigma_data=0.4")
    png = tmp_path / "a" / "images" / "000000.png"
    assert main(["sample", str(other), "--from-png", str(png), "--out", str(tmp_path / "b")]) == 2
    assert "is not the checkpoint that made the image" in capsys.readouterr().err
    Image.new("L", (4, 4)).save(tmp_path / "plain.png")
    with pytest.raises(UsageError, match="carries no difflab settings"):
        read_png_meta(tmp_path / "plain.png")
