"""The web UI's callbacks, called directly (no server): inputs per model, the Pipeline's bytes,
edits, previews, cancel at the next step, and bad input as an error message."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image
from requires import require_module
from tiny_models import save_run

from difflab.core.pngmeta import read_png_meta
from difflab.guidance.chain import GUIDANCES
from difflab.inference.edit import repaint, repaint_steps, sdedit
from difflab.samplers.base import SAMPLERS

gr = require_module("gradio")
from difflab.web import jobs  # noqa: E402
from difflab.web.callbacks import Session  # noqa: E402
from difflab.web.models import capabilities  # noqa: E402

FORM = dict(label="cls", sampler="euler_ancestral", options="", steps=4, discretization="karras",
            guidance="cfg:scale=2", seed=5, n=3, classes=[], prompt="", negative="", editor=None,
            mask=None, strength=0.6, every=1, jump_length=1, resample=1, aug_level=None,
            refs=None)  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    save_run(root / "cls", "class")
    save_run(root / "text", "text")
    save_run(root / "more" / "uncond", None, 16)
    return root


@pytest.fixture(scope="module")
def session(root, tmp_path_factory):
    session = Session(root, tmp_path_factory.mktemp("out"))
    session.preview_seconds = 0.0  # a preview at every step the form asks for
    return session


def form(**over):
    return list({**FORM, **over}.values())


def run(session, **over):
    """Every yield of one generate call (preview, progress html, gallery)."""
    return list(session.generate(*form(**over)))


def editor(size=20, value=200, box=(5, 10)):
    layer = np.zeros((size, size, 4), np.uint8)
    layer[box[0] : box[1], box[0] : box[1], 3] = 255  # painted = repaint
    return {"background": np.full((size, size, 4), value, np.uint8), "layers": [layer],
            "composite": None}  # fmt: skip


def test_models_and_their_inputs_are_discovered(session):
    assert list(session.models.paths) == ["cls", "more/uncond", "text"]
    caps = {k: capabilities(session.models.get(k)[1]) for k in session.models.paths}
    assert [c[1] for c in caps["cls"]["classes"]] == list(range(10)) and not caps["cls"]["prompt"]
    assert caps["text"]["prompt"] and caps["text"]["classes"][7] == ("seven", 7)
    assert not caps["more/uncond"]["classes"] and not caps["more/uncond"]["prompt"]
    assert caps["cls"]["samplers"] == SAMPLERS.names()  # from the registries, not a list
    assert set(caps["cls"]["guidances"]) == set(GUIDANCES.names())
    assert not caps["cls"]["negative"]  # no registered cfg takes a negative prompt yet
    updates = session.model_inputs("text")
    assert updates[1]["visible"] and updates[0]["visible"]  # prompt and class inputs shown


def test_generate_previews_progress_and_the_pipelines_bytes(session):
    """The gallery's PNGs are the Pipeline's images for the same settings, with the settings."""
    outs = run(session)
    previews = [o[0] for o in outs[:-1]]  # x̂0 of the 3 samples as one grid, every step
    assert len(previews) == 4 and all(p.ndim == 2 and p.shape[0] >= 128 for p in previews)
    assert [o[1].count("step ") for o in outs] == [1] * 5 and "step 1/4" in outs[0][1]
    assert 'value="4" max="4"' in outs[-1][1]
    paths = outs[-1][2]
    path, pipe = session.models.get("cls")
    want = pipe(3, seed=5, sampler="euler_ancestral", steps=4, guidance="cfg:scale=2").numpy()
    got = np.stack([np.asarray(Image.open(p)) for p in paths])[:, None]
    assert np.array_equal(got, want)
    meta = read_png_meta(paths[2])
    assert meta["seed"] == 5 and meta["index"] == 2 and meta["inputs"] == {"classes": [2]}
    assert session.recent()[:3] == paths


def test_inpainting_keeps_the_known_region_exactly(session):
    """The known region is pasted at σ_{i+1} after each step, so at σ = 0 it is the image."""
    outs = run(session, label="more/uncond", sampler="euler", guidance="", n=2,
               editor=editor(16, 200, (4, 12)), steps=5)  # fmt: skip
    images = np.stack([np.asarray(Image.open(p)) for p in outs[-1][2]])  # [2, 16, 16]
    known = np.ones((16, 16), bool)
    known[4:12, 4:12] = False
    assert (images[:, known] == 200).all() and not (images[:, ~known] == 200).all()
    edit = read_png_meta(outs[-1][2][0])["edit"]
    assert edit["kind"] == "inpaint" and edit["mask_pixels"] == 64
    assert (edit["jump_length"], edit["resample"]) == (1, 1)  # replacement only
    assert 'value="5" max="5"' in outs[-1][1]


def test_inpainting_is_the_librarys_repaint_with_time_travel(session):
    """The UI's RePaint (jump length 2, resample 3) gives `edit.repaint`'s bytes; the progress
    counts its time-travel steps."""
    path, pipe = session.models.get("more/uncond")
    outs = run(session, label="more/uncond", sampler="euler", guidance="", n=2, seed=3,
               editor=editor(16, 200, (4, 12)), steps=6, jump_length=2, resample=3)  # fmt: skip
    got = np.stack([np.asarray(Image.open(p)) for p in outs[-1][2]])[:, None]
    keep = torch.ones(16, 16)
    keep[4:12, 4:12] = 0
    want = repaint(pipe, torch.full((2, 1, 16, 16), 200, dtype=torch.uint8), keep, jump_length=2,
                   resample=3, seed=3, sampler="euler", steps=6, batch_size=2).numpy()  # fmt: skip
    assert np.array_equal(got, want)
    total = repaint_steps(6, 2, 3)
    assert total > 6 and f'value="{total}" max="{total}"' in outs[-1][1]


def test_sdedit_runs_the_strengths_tail_of_the_grid(session):
    """SDEdit at strength 0.3 of 10 steps runs the grid's last 3 steps: `edit.sdedit`'s bytes."""
    path, pipe = session.models.get("more/uncond")
    image = np.full((16, 16), 30, np.uint8)
    job = jobs.Job(n=2, seed=0, steps=10, image=image, strength=0.3)
    assert jobs.edit_kind(pipe, job) == "sdedit" and jobs.edit_steps(pipe, job, "sdedit") == 3
    steps, sigmas = [], []
    paths = jobs.run(pipe, path, job, session.out, on_step=lambda d, t, p: steps.append((d, t)))
    assert steps[-1] == (3, 3)
    got = np.stack([np.asarray(Image.open(p)) for p in paths])[:, None]
    want = sdedit(pipe, torch.full((2, 1, 16, 16), 30, dtype=torch.uint8), strength=0.3, seed=0,
                  steps=10, batch_size=2, callback=lambda i: sigmas.append(float(i["sigma"])))
    assert np.array_equal(got, want.numpy()) and len(sigmas) == 3  # one batch, 3 steps
    record = read_png_meta(paths[0])["edit"]
    assert record["kind"] == "sdedit" and record["strength"] == 0.3
    assert record["init_shape"] == [1, 16, 16] and (paths[0].parent / "inputs/init.png").exists()


def test_cancel_stops_at_the_next_step(session, monkeypatch):
    """Cancel pressed while step 1's preview is drawn: the job ends there, before step 2."""
    drawing, pressed, preview = threading.Event(), threading.Event(), jobs.preview

    def slow_preview(pipe, denoised):
        drawing.set()
        pressed.wait(10)
        return preview(pipe, denoised)

    def press():
        drawing.wait(10)
        assert session.cancel() == "cancelling at the next step"
        pressed.set()

    monkeypatch.setattr(jobs, "preview", slow_preview)
    threading.Thread(target=press).start()
    outs = run(session, steps=20)
    assert len(outs) == 2 and "step 1/20" in outs[0][1] and "step 1/20 · cancelled" in outs[1][1]
    assert session.cancel() == "nothing is running" and not session.running


@pytest.mark.parametrize(
    ("over", "message"),
    [(dict(sampler="nope"), "unknown sampler 'nope'"),
     (dict(label="text", prompt="  "), "the prompt is empty"),
     (dict(editor=editor(20), mask=np.zeros((8, 8), np.uint8)), "the mask is 8×8 but the init "
      "image is 20×20"),
     (dict(options="eta"), "is not key=value"),
     (dict(options="etta=1"), "takes no option 'etta'"),
     (dict(guidance="cfgg:scale=2"), "unknown guidance 'cfgg'"),
     (dict(classes=[12]), "outside this model's classes")],
)  # fmt: skip
def test_bad_input_is_an_error_message_not_a_traceback(session, over, message):
    with pytest.raises(gr.Error) as err:
        run(session, **over)
    assert message in err.value.message and "Traceback" not in err.value.message


def test_settings_load_from_a_dropped_png(session):
    paths = run(session, classes=[4, 6], seed=9)[-1][2]
    updates = session.settings_from_png(paths[1])
    label, sampler, options, steps, disc, guidance, seed, n, classes, prompt, *rest = updates
    negative, strength, jump, resample, aug, note = rest
    assert label["value"] == "cls" and sampler["value"] == "euler_ancestral" and steps == 4
    assert guidance == "cfg:scale=2" and seed == 10 and n == 1 and classes["value"] == [6]
    assert "loaded settings" in note
    with pytest.raises(gr.Error, match="carries no difflab settings"):
        Image.new("L", (4, 4)).save(session.out / "plain.png")
        session.settings_from_png(str(session.out / "plain.png"))
