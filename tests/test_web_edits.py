"""The UI's edits and model inputs through the library: negative prompts of text models, the
painted mask as a trained inpainting model's `masks`, an SR model's `aug_level`, reference
images for reference guidance terms, and edits re-made bit for bit by `sample --from-png`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from requires import require_module
from tiny_models import save_run

from difflab.cli.main import main
from difflab.core.pngmeta import read_png_meta

gr = require_module("gradio")
from difflab.web.callbacks import Session  # noqa: E402
from difflab.web.references import with_references  # noqa: E402

FORM = dict(label="text", sampler="euler_ancestral", options="", steps=4, discretization="karras",
            guidance="cfg:scale=2", seed=5, n=2, classes=[], prompt="", negative="", editor=None,
            mask=None, strength=0.6, every=1, jump_length=1, resample=1, aug_level=None,
            refs=None)  # fmt: skip
INPAINT = "model.cond={name='image', source='masked', channels=1}"
SR = "model.cond={name='image', source='lowres', channels=1, aug_max=0.5, aug_level=0.1}"


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp("edits")
    save_run(root / "text", "text")
    save_run(root / "uncond", None, 16)
    save_run(root / "inpaint", None, 16, INPAINT)
    save_run(root / "sr", None, 16, SR)
    session = Session(root, tmp_path_factory.mktemp("out"))
    session.preview_seconds = 0.0
    return session


def run(session, **over) -> list:
    """The gallery PNGs of one generate call."""
    return [Path(p) for p in list(session.generate(*{**FORM, **over}.values()))[-1][2]]


def pixels(paths) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p)) for p in paths])[:, None]  # [n, 1, H, W]


def editor(size, value=200, box=None):
    layer = np.zeros((size, size, 4), np.uint8)
    if box:
        layer[box[0] : box[1], box[0] : box[1], 3] = 255  # painted = fill
    return {"background": np.full((size, size, 4), value, np.uint8), "layers": [layer],
            "composite": None}  # fmt: skip


def keep_mask(size=16, box=(4, 12)) -> torch.Tensor:
    keep = torch.ones(1, 1, size, size)
    keep[..., box[0] : box[1], box[0] : box[1]] = 0
    return keep


def test_text_models_take_negative_prompts_recorded_and_remade(session, tmp_path):
    assert session.model_inputs("text")[2]["visible"]  # the negative-prompt box is shown
    assert not session.model_inputs("uncond")[2]["visible"]
    paths = run(session, prompt="three", negative="seven\neight")
    _, pipe = session.models.get("text")
    kw = dict(seed=5, sampler="euler_ancestral", steps=4, guidance="cfg:scale=2", prompts=["three"])
    want = pipe(2, negative_prompts=["seven", "eight"], **kw).numpy()
    assert np.array_equal(pixels(paths), want) and not np.array_equal(want, pipe(2, **kw).numpy())
    meta = read_png_meta(paths[1])
    assert meta["inputs"] == {"prompts": ["three"], "negative_prompts": ["eight"]}
    assert main(["sample", "--from-png", str(paths[1]), "--out", str(tmp_path), "--quiet"]) == 0
    assert (tmp_path / "images" / paths[1].name).read_bytes() == paths[1].read_bytes()


def test_the_painted_mask_is_a_trained_inpainting_models_masks(session):
    paths = run(session, label="inpaint", guidance="", editor=editor(16, 200, (4, 12)))
    _, pipe = session.models.get("inpaint")
    init = torch.full((1, 1, 16, 16), 200, dtype=torch.uint8)
    want = pipe(2, seed=5, sampler="euler_ancestral", steps=4, images=init, masks=keep_mask())
    got = pixels(paths)
    assert np.array_equal(got, want.numpy()) and (got[..., keep_mask()[0] == 1] == 200).all()
    edit = read_png_meta(paths[0])["edit"]
    assert edit["kind"] == "condition" and edit["mask_pixels"] == 64
    with pytest.raises(gr.Error, match="paint the region to fill"):
        run(session, label="inpaint", guidance="", editor=editor(16))


def test_sr_models_take_their_low_res_input_and_aug_level(session):
    cap_updates = session.model_inputs("sr")
    assert cap_updates[-1]["visible"] and cap_updates[-1]["maximum"] == 0.5
    assert not cap_updates[-2]["visible"]  # no RePaint options: the image is the condition
    _, pipe = session.models.get("sr")
    small = torch.full((1, 1, 8, 8), 90, dtype=torch.uint8)
    kw = dict(seed=5, sampler="euler_ancestral", steps=4, images=small)
    paths = run(session, label="sr", guidance="", editor=editor(8, 90), aug_level=0.3)
    assert np.array_equal(pixels(paths), pipe(2, aug_level=0.3, **kw).numpy())
    assert not np.array_equal(pixels(paths), pipe(2, aug_level=0.0, **kw).numpy())
    edit = read_png_meta(paths[0])["edit"]
    assert edit["aug_level"] == 0.3 and edit["init_shape"] == [1, 8, 8]
    with pytest.raises(gr.Error, match="takes no inpainting mask"):
        run(session, label="sr", guidance="", editor=editor(8, 90, (2, 4)))


@pytest.mark.parametrize(
    ("label", "over"),
    [("uncond", dict(strength=0.5, steps=6)),
     ("uncond", dict(editor=editor(16, 200, (4, 12)), jump_length=2, resample=2, steps=6)),
     ("inpaint", dict(editor=editor(16, 200, (4, 12))))],
    ids=["sdedit", "repaint", "inpainting-model"],
)  # fmt: skip
def test_from_png_remakes_an_edit_from_its_init_image(session, tmp_path, capsys, label, over):
    over = {"editor": editor(16, 120), "guidance": "", **over}
    png = run(session, label=label, **over)[1]
    argv = ["sample", "--from-png", str(png), "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "made by an edit" in err and "--image" in err and "sha256" in err
    init = png.parent / "inputs" / "init.png"
    assert main([*argv, "--image", str(init)]) == 0
    assert (tmp_path / "images" / png.name).read_bytes() == png.read_bytes()
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(tmp_path / "other.png")
    assert main([*argv, "--overwrite", "--image", str(tmp_path / "other.png")]) == 2
    assert "is not the image the edit started from" in capsys.readouterr().err


def test_reference_uploads_fill_the_ref_of_reference_terms(session, tmp_path):
    ref = tmp_path / "ref.png"
    Image.fromarray(np.full((8, 8), 50, np.uint8)).save(ref)
    text = with_references("cfg:scale=2+style:ckpt=e.safetensors,scale=5", [str(ref)],
                           tmp_path / "kept")  # fmt: skip
    kept = next((tmp_path / "kept").iterdir())
    assert text == f"cfg:scale=2+style:ckpt=e.safetensors,scale=5,ref={kept}"
    assert kept.read_bytes() == ref.read_bytes()
    assert with_references("style:ref=a.png", [], tmp_path) == "style:ref=a.png"
    with pytest.raises(gr.Error, match="no guidance term uses them"):
        run(session, label="uncond", guidance="", refs=[str(ref)])


def test_a_dropped_png_restores_negative_prompts_and_edit_options(session):
    """The settings a PNG carries fill the form: the negative prompt of a text sample, and the
    strength / jump length / resample of an edit (fields the PNG lacks are left alone)."""
    png = run(session, prompt="a handwritten seven", negative="a handwritten one")[0]
    *_, negative, strength, jump, resample, aug, note = session.settings_from_png(str(png))
    assert negative == "a handwritten one" and "sample" in note
    assert all(u == gr.skip() for u in (strength, jump, resample, aug))
    over = {"label": "uncond", "guidance": "", "editor": editor(16, 120, (4, 12)), "steps": 6,
            "jump_length": 2, "resample": 3}  # fmt: skip
    png = run(session, **over)[0]
    *_, strength, jump, resample, aug, note = session.settings_from_png(str(png))
    assert (jump["value"], resample["value"]) == (2, 3) and "inpaint" in note
