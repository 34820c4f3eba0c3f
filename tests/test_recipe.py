"""The folder recipe (training.recipe) and the default sampler of every built-in recipe family:
a briefly trained model's samples must match the data's per-channel mean and std."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from recipe_runs import (
    channel_stats,
    families,
    family,
    image_config,
    keep_default_guidance,
    tiny_overrides,
    write_blobs,
)

from difflab.core.config import builtin_configs, load_config
from difflab.core.imageio import uint8_to_pixels
from difflab.data.datasets import load_dataset
from difflab.training.recipe import folder_recipe, net_size, unet_spec

# a brief training of the tiny net (~10 s per 400 steps on one idle core): ε-prediction with
# L_simple learns the colours more slowly than EDM, whatever the sampler (measured: after 400
# steps ancestral DDPM is 0.19 off in mean, after 1500 steps 0.10)
STEPS = {"edm": 400, "eps": 1200}
# per channel, data in [-1, 1]: EDM lands within 0.06 after 400 steps; ε-prediction's default
# (dpmpp_2m_sde) within 0.16 after 1200 steps, its old ODE default (dpmpp_2m) off by +0.27 in std
TOL = {"edm": 0.1, "eps": 0.2}
FAST = {"folder", "fashion_mnist16"}  # EDM recipe + one ε-prediction cosine config


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return write_blobs(tmp_path_factory.mktemp("blobs"))


def family_config(name: str, data):
    """The family's config shrunk to the tiny data (the folder recipe keeps its own dataset)."""
    if name == "folder":
        recipe = folder_recipe(data)
        return load_config(recipe.config, tiny_overrides(data, STEPS["edm"])[1:])
    steps = STEPS[parameterization(name)]
    cfg = load_config(name, tiny_overrides(data, steps))
    keep_default_guidance(cfg)
    return cfg


def parameterization(name: str) -> str:
    return "edm" if name == "folder" else load_config(name).model.parameterization


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in
     ["folder", *families()]],
)  # fmt: skip
def test_default_sampler_matches_data_colour(name, blobs, tmp_path):
    from difflab.evaluation.in_loop import train
    from difflab.inference.pipeline import load

    torch.manual_seed(0)
    data_mean, data_std = channel_stats(uint8_to_pixels(load_dataset(
        {"name": "folder", "path": str(blobs)}).x))  # fmt: skip
    assert data_mean[0] > data_mean[2] + 0.5  # the colour bias the samples must keep
    pipe = load(train(family_config(name, blobs), tmp_path / "run"))
    x = pipe.sample(128, seed=0).x  # the config's default sampler, grid and guidance
    mean, std = channel_stats(x)
    report = f"{name}: mean {mean.round(3)} vs {data_mean.round(3)}, std {std.round(3)} vs " \
             f"{data_std.round(3)}"  # fmt: skip
    tol = TOL[parameterization(name)]
    assert np.abs(mean - data_mean).max() < tol, report
    assert np.abs(std - data_std).max() < tol, report


def test_every_builtin_image_config_has_a_family():
    fams = {family(n) for n in families()}
    assert all(family(n) in fams for n in builtin_configs() if image_config(n))


@pytest.mark.parametrize("size,fitted,levels", [(8, 8, 2), (12, 12, 2), (16, 16, 3), (25, 24, 3),
                                                (28, 28, 3), (32, 32, 4), (64, 64, 4)])  # fmt: skip
def test_net_size(size, fitted, levels):
    assert net_size(size) == (fitted, levels)
    net = unet_spec(fitted)
    assert len(net["channel_mult"]) == levels
    assert all(fitted % r == 0 and r <= 8 for r in net["attention_resolutions"])


def test_recipe_odd_size_gray(tmp_path):
    data = write_blobs(tmp_path / "gray", n=12, size=25, channels=1)
    recipe = folder_recipe(data)
    ds = recipe.config["data"]["dataset"]
    assert ds["channels"] == 1 and ds["size"] == 24
    assert any("25×25" in n for n in recipe.notes)
    assert any("resized to 24×24" in n and "multiple of 4" in n for n in recipe.notes)
    assert recipe.config["model"]["cond"] == {}
    assert recipe.config["model"]["parameterization"] == "edm"
    x = uint8_to_pixels(load_dataset(ds).x)
    assert x.shape[1:] == (1, 24, 24)
    assert recipe.config["model"]["sigma_data"] == pytest.approx(float(x.std()), abs=1e-3)


def test_recipe_colour_with_classes(tmp_path):
    data = write_blobs(tmp_path / "cls", n=12, size=12, classes=3)
    recipe = folder_recipe(data)
    assert recipe.config["data"]["dataset"]["channels"] == 3
    assert recipe.config["data"]["dataset"]["size"] == 12
    assert recipe.config["model"]["cond"] == {"name": "class", "p_uncond": 0.1}
    assert any("3 classes" in n for n in recipe.notes)
    assert not any("resized" in n for n in recipe.notes)


def test_cli_train_folder_dry_run(tmp_path):
    data = write_blobs(tmp_path / "gray", n=8, size=25, channels=1)
    out = subprocess.run(
        [sys.executable, "-m", "difflab", "train", str(data), "--out", str(tmp_path / "run"),
         "--dry-run", "--set", "train.steps=7"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "resized to 24×24" in out.stderr
    assert 'parameterization = "edm"' in out.stdout and "steps = 7" in out.stdout
    assert "size = 24" in out.stdout and "channels = 1" in out.stdout
