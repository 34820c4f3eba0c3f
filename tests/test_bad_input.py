"""Bad-input corpus: each case is one line naming the problem, exit status 2, no traceback, and
nothing overwritten. Runs `difflab.cli.main` in-process (the CLI via subprocess is in test_cli)."""

import gzip
import struct

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from test_train import TINY_UNET

from difflab import train
from difflab.cli.main import main
from difflab.core.config import load_config
from difflab.storage import checkpoint as ckpt


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tree of bad (and a few good) inputs, made once."""
    d = tmp_path_factory.mktemp("bad")
    (d / "empty_dir").mkdir()
    (d / "corrupt").mkdir()
    Image.new("L", (8, 8)).save(d / "corrupt" / "good.png")
    (d / "corrupt" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (d / "truncated_img").mkdir()
    Image.new("RGB", (16, 16), (255, 0, 0)).save(d / "truncated_img" / "a.png")
    full = (d / "truncated_img" / "a.png").read_bytes()
    (d / "truncated_img" / "b.png").write_bytes(full[: len(full) // 2])
    (d / "mixed").mkdir()
    Image.new("L", (8, 8)).save(d / "mixed" / "a.png")
    Image.new("L", (9, 9)).save(d / "mixed" / "b.png")
    header = struct.pack(">BBBBIII", 0, 0, 8, 3, 10, 28, 28)
    (d / "trunc.idx").write_bytes(header + bytes(100))
    (d / "magic.idx").write_bytes(b"\x12\x34\x56\x78" + bytes(100))
    with gzip.open(d / "trunc.idx.gz", "wb") as f:
        f.write(header + bytes(50))
    (d / "zero.safetensors").write_bytes(b"")
    save_file({"w": torch.zeros(3)}, str(d / "foreign.safetensors"))
    (d / "garbage.safetensors").write_bytes(b"\xff" * 64)
    (d / "a_file").write_text("I am a file")
    (d / "nan.toml").write_text("[train]\nlr = nan\n")
    (d / "neg.toml").write_text("[train]\nsteps = -5\n")
    (d / "badkey.toml").write_text("[model]\nparametrization = 'eps'\n")
    (d / "broken.toml").write_text("[train\nlr = 1\n")
    run = d / "run"
    train(load_config("digits", [TINY_UNET, "train.steps=1", "train.batch_size=4"]), run)
    good = ckpt.latest_checkpoint(run)
    # a checkpoint whose config names another net than its weights
    state, config, info = ckpt.load_model_file(good)
    config["model"]["net"] = {"name": "unet", "model_channels": 8, "channel_mult": [1],
                              "attention_resolutions": [], "num_res_blocks": 1}  # fmt: skip
    ckpt.save_model(d / "othernet.safetensors", state, config, info)
    trunc = good.read_bytes()
    (d / "truncated.safetensors").write_bytes(trunc[: len(trunc) // 2])
    (d / "occupied").mkdir()
    (d / "occupied" / "keep.txt").write_text("precious")
    return d


def ds(spec: str) -> list[str]:
    return ["--set", f"data.dataset={spec}"]


T = ["train", "digits", "--out", "{d}/new_run"]
S = ["sample", "{d}/run", "--out", "{d}/samples"]
CASES = {
    # data
    "missing folder": (T + ds("{{name='folder', path='{d}/nope'}}"), "does not exist"),
    "empty folder": (T + ds("{{name='folder', path='{d}/empty_dir'}}"), "no images"),
    "corrupt image": (T + ds("{{name='folder', path='{d}/corrupt', channels=1}}"), "bad.png"),
    "truncated image": (T + ds("{{name='folder', path='{d}/truncated_img'}}"), "b.png"),
    "mixed image sizes": (T + ds("{{name='folder', path='{d}/mixed', channels=1}}"), "size"),
    "truncated idx": (T + ds("{{name='idx', images='{d}/trunc.idx'}}"), "trunc.idx"),
    "foreign idx magic": (T + ds("{{name='idx', images='{d}/magic.idx'}}"), "magic"),
    "truncated idx.gz": (T + ds("{{name='idx', images='{d}/trunc.idx.gz'}}"), "trunc.idx.gz"),
    "bad channel count": (T + ds("{{name='folder', path='{d}/corrupt', channels=2}}"), "channels"),
    "unknown dataset": (T + ds("{{name='cifar99'}}"), "unknown dataset 'cifar99'"),
    "unknown dataset option": (T + ds("{{name='digits', colour=1}}"), "no option 'colour'"),
    # configs
    "missing config": (["train", "{d}/none.toml", "--out", "{d}/x"], "not found"),
    "broken toml": (["train", "{d}/broken.toml", "--out", "{d}/x"], "not valid TOML"),
    "nan in config": (["train", "{d}/nan.toml", "--out", "{d}/x"], "train.lr must be a positive"),
    "negative in config": (["train", "{d}/neg.toml", "--out", "{d}/x"], "train.steps must be"),
    "unknown key in file": (
        ["train", "{d}/badkey.toml", "--out", "{d}/x"],
        "'model.parametrization'",
    ),
    "unknown override key": (T + ["--set", "train.lerning_rate=1"], "'train.lerning_rate'"),
    "override not k=v": (T + ["--set", "train.lr"], "not of the form"),
    "unknown net": (T + ["--set", "model.net={{name='vit'}}"], "unknown net 'vit'"),
    "unknown net option": (T + ["--set", "model.net.widht=3"], "no option 'widht'"),
    "unknown schedule": (T + ["--set", "model.schedule={{name='quartic'}}"], "unknown schedule"),
    "unknown parameterization": (
        T + ["--set", "model.parameterization='score'"],
        "unknown parameterization",
    ),
    "unknown density": (
        T + ["--set", "train.sigma_density={{name='beta'}}"],
        "unknown sigma density",
    ),
    "bad nonfinite policy": (T + ["--set", "train.on_nonfinite='ignore'"], "on_nonfinite"),
    "ema decay out of range": (T + ["--set", "train.ema_decay=2"], "ema_decay"),
    "train out is a file": (["train", "digits", "--out", "{d}/a_file"], "is a file"),
    "train out occupied": (["train", "digits", "--out", "{d}/occupied"], "already holds files"),
    # checkpoints
    "zero-byte checkpoint": (
        ["sample", "{d}/zero.safetensors", "--out", "{d}/s"],
        "not a safetensors",
    ),
    "garbage checkpoint": (
        ["sample", "{d}/garbage.safetensors", "--out", "{d}/s"],
        "not a safetensors",
    ),
    "foreign safetensors": (
        ["sample", "{d}/foreign.safetensors", "--out", "{d}/s"],
        "not a difflab",
    ),
    "truncated checkpoint": (
        ["sample", "{d}/truncated.safetensors", "--out", "{d}/s"],
        "truncated",
    ),
    "checkpoint of another net": (
        ["sample", "{d}/othernet.safetensors", "--out", "{d}/s"],
        "does not fit",
    ),
    "run dir without checkpoints": (
        ["sample", "{d}/empty_dir", "--out", "{d}/s"],
        "holds no checkpoint",
    ),
    "missing checkpoint": (["sample", "{d}/nope.safetensors", "--out", "{d}/s"], "does not exist"),
    # sampling
    "unknown sampler": (S + ["--sampler", "plms9"], "unknown sampler 'plms9'"),
    "unknown discretization": (S + ["--discretization", "cubic"], "unknown discretization"),
    "negative eta": (S + ["--sampler", "ddim", "--eta", "-1"], "eta must be >= 0"),
    "eta not a number": (S + ["--eta", "lots"], "invalid float value"),
    "option the sampler lacks": (S + ["--sampler", "euler", "--option", "s_churn=1"], "no option"),
    "zero steps": (S + ["--steps", "0"], "--steps must be >= 1"),
    "negative n": (S + ["-n", "-3"], "-n must be >= 1"),
    "sample out is a file": (["sample", "{d}/run", "--out", "{d}/a_file"], "is a file"),
    # conditioning
    "class for an unconditional model": (
        S + ["--class", "3"],
        "model is unconditional; drop --class, add classifier",
    ),
    "prompt without text conditioning": (S + ["--prompt", "a bag"], "no text conditioning"),
    "class not an integer": (S + ["--class", "seven"], "not a class index"),
    "unknown guidance": (S + ["--guidance", "cfgg:scale=2"], "unknown guidance 'cfgg'"),
    "unknown guidance option": (S + ["--guidance", "cfg:scael=2"], "no option 'scael'"),
    "class cond on unlabelled data": (
        ["train", "swiss_roll", "--out", "{d}/new_run", "--set", "model.cond={{name='class'}}"],
        "needs class labels",
    ),
    "unknown conditioner": (T + ["--set", "model.cond={{name='audio'}}"], "unknown conditioner"),
    "demo out is a file": (["demo", "--out", "{d}/a_file"], "is a file"),
    "demo out occupied": (["demo", "--out", "{d}/occupied"], "holds other files"),
    "unknown command": (["trian"], "invalid choice"),
}


def _snapshot(d):
    return {p: p.stat().st_mtime_ns for p in d.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, files, capsys):
    argv, message = CASES[name]
    before = _snapshot(files)
    code = main([a.format(d=files) for a in argv] + ["--quiet"] * (argv[0] != "trian"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 if isinstance(code, int) else False, err
    assert len(err) == 1 and err[0].startswith("difflab: error:"), err
    assert message in err[0], err
    assert _snapshot(files) == before  # nothing created, changed or overwritten
    assert not (files / "new_run").exists()


def test_corpus_is_large_enough():
    assert len(CASES) >= 30
