"""`difflab edit ...` end to end on a random-weight tiny U-Net: files in, grids out, bad input exit 2."""

from __future__ import annotations

import pytest
from PIL import Image
from test_pipeline import _config, _save

from difflab.cli.main import main
from difflab.storage import checkpoint as ckpt


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("editcli")
    run = root / "run"
    _save(ckpt.model_path(run, 1), _config("model.cond={name='class', num_classes=3}"))
    files = []
    for i, colour in enumerate((30, 220)):
        files.append(root / f"in{i}.png")
        Image.new("L", (12, 12), colour).save(files[-1])  # resized to the model's 8×8
    Image.new("L", (5, 5), 255).save(root / "small_mask.png")
    return run, [str(f) for f in files], root


def _edit(*argv) -> int:
    return main(["edit", *map(str, argv), "--quiet", "--steps", "3"])


def test_every_edit_command_writes_its_grid(setup, tmp_path):
    run, files, _ = setup
    images = [a for f in files for a in ("--image", f)]
    assert _edit("sdedit", run, *images, "--out", tmp_path / "s", "--strength", "0.5") == 0
    assert _edit("repaint", run, *images, "--out", tmp_path / "r", "--mask", "free_form",
                 "--jump-length", "1", "--resample", "2", "--class", "1") == 0  # fmt: skip
    assert _edit("invert", run, *images, "--out", tmp_path / "i", "--class", "2") == 0
    assert _edit("invert", run, *images, "--out", tmp_path / "n", "--class", "2", "--null-text",
                 "--scale", "3", "--inner-steps", "2") == 0  # fmt: skip
    assert _edit("reconstruct", run, "--inverted", tmp_path / "n" / "inverted.safetensors",
                 "--out", tmp_path / "c") == 0  # fmt: skip
    assert _edit("interpolate", run, *images, "--out", tmp_path / "l", "--space", "latent",
                 "--frames", "4") == 0  # fmt: skip
    assert _edit("interpolate", run, "--out", tmp_path / "z", "--space", "noise",
                 "--seeds", "1,2", "--frames", "3", "--class", "0") == 0  # fmt: skip
    for name, count in (("s", 2), ("r", 2), ("i", 2), ("n", 2), ("c", 2), ("l", 4), ("z", 3)):
        assert (tmp_path / name / "grid.png").is_file(), name
        assert len(list((tmp_path / name / "images").glob("*.png"))) == count, name
    assert (
        Image.open(tmp_path / "r" / "grid.png").size[1]
        > Image.open(tmp_path / "s" / "grid.png").size[1]
    )


@pytest.mark.parametrize(("argv", "words"), [
    (["sdedit", "--strength", "0"], "--strength must be in (0, 1]"),
    (["sdedit", "--strength", "1.5"], "--strength must be in (0, 1]"),
    (["repaint", "--mask", "SMALL"], "--mask has shape [1, 5, 5] but the images are 8×8"),
    (["repaint", "--mask", "oval"], "mask file oval given in --mask does not exist"),
    (["repaint", "--jump-length", "0"], "--jump-length must be an integer >= 1"),
    (["invert", "--sampler", "euler_ancestral", "--class", "1"], "cannot integrate an increasing"),
    (["invert", "--null-text", "--guidance", "cfg:scale=2", "--class", "1"], "pass its scale as --scale"),
    (["interpolate", "--space", "latent"], "give 2 input images with --image (got 1)"),
])  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(setup, tmp_path, capsys, argv, words):
    run, files, root = setup
    argv = [str(root / "small_mask.png") if a == "SMALL" else a for a in argv]
    assert _edit(argv[0], run, "--image", files[0], "--out", tmp_path / "o", *argv[1:]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and "`" not in err, err
