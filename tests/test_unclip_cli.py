"""unCLIP end to end on a tiny synthetic dataset: `difflab train-clip` beats chance at held-out
retrieval, a micro decoder trains on its embeddings, and the edit commands write their grids
(the CLI's `main` in-process: a subprocess per command costs seconds of imports each)."""

import contextlib
import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from difflab.cli.main import main
from difflab.core.config import load_config
from difflab.core.errors import UsageError
from difflab.inference.pipeline import load
from difflab.inference.unclip_edit import interpolate_embeddings, text_diff_edit, variations
from difflab.training.loop import train

COLOURS = {"blue": (0, 0, 255), "green": (0, 200, 0), "red": (255, 0, 0), "yellow": (255, 230, 0)}
NET = ("model.net={name='unet', model_channels=8, channel_mult=[1], num_res_blocks=1, "
       "attention_resolutions=[8], num_heads=1}")  # fmt: skip


@pytest.fixture(scope="module")
def colours(tmp_path_factory):
    """16 noisy 8×8 squares per colour, one class subfolder each."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for name, rgb in COLOURS.items():
        (root / name).mkdir()
        for i in range(16):
            px = np.clip(np.array(rgb) + rng.normal(0, 25, (8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def clip_file(colours, tmp_path_factory):
    out = tmp_path_factory.mktemp("clip") / "clip.safetensors"
    argv = ["train-clip", str(colours), "--out", str(out), "--steps", "30", "--batch-size", "16",
            "--quiet", "--set", "net.model_channels=8", "--set", "net.channel_mult=[1]"]  # fmt: skip
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(argv) == 0
    return out, stdout.getvalue()


@pytest.fixture(scope="module")
def decoder(colours, clip_file, tmp_path_factory):
    cfg = load_config("digits", [
        NET, f"data.dataset={{name='folder', path='{colours}', channels=3}}",
        f"model.cond={{name='embedding', clip='{clip_file[0]}', p_uncond=0.2}}",
        "train.batch_size=4", "train.steps=2", "sample.steps=2", "sample.guidance=[]",
    ])  # fmt: skip
    return train(cfg, tmp_path_factory.mktemp("decoder") / "run")


def test_train_clip_beats_chance_at_held_out_retrieval(clip_file):
    path, printed = clip_file
    m = re.search(r"over (\d+) captions: top-1 ([\d.]+) \(chance ([\d.]+)\)", printed)
    assert m and int(m[1]) == 4 and float(m[3]) == 0.25, printed
    assert float(m[2]) >= 0.5, printed  # four colours: far above the 1-in-4 of chance


def test_decoder_config_records_the_clip_by_hash(decoder, clip_file):
    from difflab.conditioning.embedding import file_sha256

    cond = load(decoder).config["model"]["cond"]
    assert cond["clip_sha256"] == file_sha256(clip_file[0]) and cond["dim"] == 384
    assert cond["extra_tokens"] == 4


def test_edit_commands_write_their_grids(decoder, colours, tmp_path, capsys):
    red, blue = colours / "red" / "0.png", colours / "blue" / "0.png"
    common = ["--steps", "2", "--quiet"]

    def edit(*args):
        assert main(["edit", *map(str, args), *common]) == 0
        return capsys.readouterr().out

    edit("variations", decoder, "--image", red, "--image", blue, "-n", 3, "--out", tmp_path / "v")
    w, h = Image.open(tmp_path / "v" / "grid.png").size
    assert 1.6 < w / h < 2.4  # 2 rows (one per input) of the input + 3 variations
    out = edit("textdiff", decoder, "--image", red, "--from", "a photo of a red",
               "--to", "a photo of a blue", "--frames", 3, "--out", tmp_path / "t")  # fmt: skip
    assert "θ = 0.00, 0.25, 0.50" in out
    assert len(list((tmp_path / "t" / "images").glob("*.png"))) == 4  # the input + 3 frames
    out = edit("interpolate", decoder, "--space", "embedding", "--image", red, "--image", blue,
               "--frames", 3, "--out", tmp_path / "i")  # fmt: skip
    assert "3 frames (embedding)" in out
    assert main(["edit", "textdiff", str(decoder), "--image", str(red), "--from", "a", "--to",
                 "a", "--out", str(tmp_path / "x"), *common]) == 2  # fmt: skip
    assert "give different --from and --to texts" in capsys.readouterr().err


def test_edits_in_the_library(decoder, colours):
    pipe = load(decoder)
    x = torch.from_numpy(np.array(Image.open(colours / "red" / "1.png"))).permute(2, 0, 1)[None]
    v = variations(pipe, x, n=2, steps=2)
    assert v.shape == (2, 3, 8, 8) and v.dtype == torch.uint8 and not torch.equal(v[0], v[1])
    row = interpolate_embeddings(pipe, torch.cat([x, x.flip(1)]), frames=3, steps=2)
    assert row.shape == (3, 3, 8, 8)
    same = text_diff_edit(pipe, x, "a photo of a red", "a photo of a blue", strengths=[0, 0],
                          steps=2)  # fmt: skip
    assert torch.equal(same[0], same[1])  # θ = 0 twice from one fixed x_T: one image
    with pytest.raises(UsageError, match="drop `prompts`"):
        variations(pipe, x, n=1, prompts=["a red square"])
    with pytest.raises(UsageError, match="interpolation takes 2 `images`"):
        interpolate_embeddings(pipe, x, frames=3)


def test_a_decoder_samples_from_embeddings_as_from_the_images_they_embed(decoder, colours):
    from difflab.inference.unclip_edit import image_embeddings

    pipe = load(decoder)
    x = torch.cat([torch.from_numpy(np.array(Image.open(colours / c / "1.png"))).permute(2, 0, 1)
                   [None] for c in ("red", "blue")])  # [2, 3, 8, 8] uint8  # fmt: skip
    z = image_embeddings(pipe, x)  # [2, D]
    from_images = pipe.sample(3, images=x, seed=4, steps=2).x
    from_embeddings = pipe.sample(3, embeddings=z, seed=4, steps=2).x  # cycled like images
    torch.testing.assert_close(from_embeddings, from_images)
    assert not torch.allclose(pipe.sample(3, embeddings=z.flip(0), seed=4, steps=2).x,
                              from_images)  # fmt: skip
    with pytest.raises(UsageError, match="not both"):
        pipe.sample(2, images=x, embeddings=z, steps=2)


def test_other_models_are_refused_with_the_fix(tmp_path, colours):
    from tiny_models import save_run

    pipe = load(save_run(tmp_path / "run", "class"))
    with pytest.raises(UsageError, match="not an unCLIP decoder; train one with model.cond"):
        variations(pipe, torch.zeros(1, 1, 8, 8, dtype=torch.uint8))


def test_text_to_prior_to_decoder_from_the_cli(decoder, colours, clip_file, tmp_path, capsys):
    """`train-prior` on the clip's embeddings, then `sample DECODER --prior` and `unclip`: the
    same text → prior → decoder draw (one seed, one decoder CFG scale) gives the same images."""
    prior = tmp_path / "prior"
    assert main(["train-prior", str(colours), "--clip", str(clip_file[0]), "--out", str(prior),
                 "--steps", "3", "--batch-size", "8", "--eval-n", "4", "--quiet",
                 "--cache", str(tmp_path / "cache.safetensors"),
                 "--set", "model.net.width=16", "--set", "model.net.depth=1"]) == 0  # fmt: skip
    assert "held-out cosine" in capsys.readouterr().out
    common = ["--prompt", "a photo of a red", "--prompt", "a photo of a blue", "-n", "3",
              "--steps", "2", "--prior-steps", "2", "--quiet", "--seed", "1"]  # fmt: skip
    assert main(["sample", str(decoder), "--prior", str(prior), "--out", str(tmp_path / "s"),
                 "--guidance", "cfg:scale=2", *common]) == 0  # fmt: skip
    assert main(["unclip", str(decoder), "--prior", str(prior), "--out", str(tmp_path / "u"),
                 "--scale", "2", *common]) == 0  # fmt: skip
    a = sorted((tmp_path / "s" / "images").glob("*.png"))
    b = sorted((tmp_path / "u" / "images").glob("*.png"))
    assert len(a) == len(b) == 3
    assert all(np.array_equal(np.array(Image.open(p)), np.array(Image.open(q)))
               for p, q in zip(a, b))  # fmt: skip
    assert main(["sample", str(decoder), "--prior", str(prior), "--class", "1", "--out",
                 str(tmp_path / "x"), *common]) == 2  # fmt: skip
    assert "drop --class" in capsys.readouterr().err


def test_train_clip_stops_at_max_seconds(colours, tmp_path):
    """--max-seconds ends training before --steps and the file records the steps and seconds."""
    from difflab.storage.clip import load_clip

    out = tmp_path / "clip.safetensors"
    argv = ["train-clip", str(colours), "--out", str(out), "--steps", "100000", "--quiet",
            "--batch-size", "8", "--max-seconds", "1", "--set", "net.model_channels=8",
            "--set", "net.channel_mult=[1]"]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    done = load_clip(out).meta["train"]["done"]
    assert 1 <= done["steps"] < 100000 and 1.0 <= done["seconds"] < 30, done
    assert load_clip(out).meta["train"]["max_seconds"] == 1.0


def test_train_clip_refuses_a_non_positive_max_seconds(colours, tmp_path, capsys):
    argv = ["train-clip", str(colours), "--out", str(tmp_path / "c.safetensors"), "--quiet",
            "--max-seconds", "0"]  # fmt: skip
    assert main(argv) != 0
    assert "`max_seconds` must be a positive number" in capsys.readouterr().err
    assert not (tmp_path / "c.safetensors").exists()
