"""Short real runs of `difflab distill` (tiny U-Net on 8×8 digits): each method completes,
resumes, and its student is an ordinary checkpoint sampled with its default few steps."""

import pytest
import torch

from difflab import train
from difflab.cli.main import main
from difflab.core.config import load_config
from difflab.inference.pipeline import load
from difflab.storage import checkpoint as ckpt
from difflab.training.distill import distill, student_config

TINY_UNET = ("model.net={name='unet', model_channels=16, channel_mult=[1, 2], num_res_blocks=1,"
             " attention_resolutions=[4]}")  # fmt: skip
FAST = ["train.batch_size=8", "train.log_every=1", "train.ckpt_every=2", "train.warmup=0"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    cfg = load_config("digits", [TINY_UNET, *FAST, "train.steps=2", "sample.steps=8"])
    return train(cfg, tmp_path_factory.mktemp("teacher") / "run")


@pytest.mark.parametrize("method", ["cd", "ct"])
def test_consistency_student_runs_resumes_and_samples_in_one_step(teacher, tmp_path, method):
    out = tmp_path / method
    first = distill(teacher, out, method, overrides=[*FAST, "train.steps=2"])
    path = distill(teacher, out, method, overrides=[*FAST, "train.steps=4"], resume=True)
    assert ckpt.read_metadata(path)["info"]["step"] == 4 and first != path
    pipe = load(out)
    assert pipe.defaults["sampler"]["name"] == "consistency" and pipe.defaults["steps"] == 1
    calls = []
    images = pipe(3, callback=calls.append)
    assert images.shape == (3, 1, 8, 8) and len(calls) == 1
    if method == "ct":
        assert student_config(teacher, "ct", overrides=["train.steps=7"]).train.loss["K"] == 7


def test_progressive_rounds_halve_the_steps_and_resume(teacher, tmp_path, capsys):
    out = tmp_path / "pd"
    args = ["distill", str(teacher), "--method", "progressive", "--out", str(out), "--rounds", "2",
            "--quiet", *[f"--set={s}" for s in FAST]]  # fmt: skip
    assert main([*args, "--set=train.steps=2"]) == 0
    assert main([*args, "--set=train.steps=2", "--resume"]) == 0  # both rounds done: kept
    assert "(done)" in capsys.readouterr().err
    pipe = load(out / "round-2")
    assert pipe.defaults["steps"] == 2 and pipe.defaults["sampler"]["name"] == "ddim"
    assert pipe(2).shape == (2, 1, 8, 8)
    assert load(out / "round-1").defaults["steps"] == 4
    with torch.no_grad():  # round 1 started from the teacher's weights, not from scratch
        w_teacher = load(teacher).denoiser.net.state_dict()
        w_init = load(out / "round-1").denoiser.net.state_dict()
        key = next(iter(w_teacher))
        assert (w_teacher[key] - w_init[key]).abs().max() < 0.1


def test_progressive_refuses_an_odd_number_of_teacher_steps(teacher, tmp_path, capsys):
    code = main(["distill", str(teacher), "--method", "progressive", "--out", str(tmp_path / "x"),
                 "--steps", "5", "--quiet"])  # fmt: skip
    assert code == 2 and "--steps" in capsys.readouterr().err
