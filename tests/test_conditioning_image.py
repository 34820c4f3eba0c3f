"""Image conditioning (SR3 / Palette channels slot): degradation identities, config, training."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_train import _tiny_cfg

from difflab import train
from difflab.cli.main import main
from difflab.conditioning.base import build_conditioner, drop, sampling_cond
from difflab.core.config import load_config
from difflab.core.errors import UsageError
from difflab.data.datasets import load_dataset
from difflab.storage.models import load_denoiser


def test_full_size_and_low_resolution_inputs_give_the_same_condition():
    """degrade(x) = upsample(avg_pool(x)): a user may pass either the big or the small image."""
    conditioner = build_conditioner({"name": "image", "factor": 2, "channels": 1})
    x = torch.rand(3, 1, 8, 8) * 2 - 1  # [B, C, H, W]
    full = conditioner.from_images(x, (1, 8, 8))["channels"]
    small = conditioner.from_images(F.avg_pool2d(x, 2), (1, 8, 8))["channels"]
    torch.testing.assert_close(full, small)
    assert full.shape == x.shape
    flat = torch.full((1, 1, 8, 8), 0.3)  # nothing to lose: a constant image is its own condition
    torch.testing.assert_close(conditioner.from_images(flat, (1, 8, 8))["channels"], flat)
    assert (full - x).abs().mean() > 0.1  # detail is lost
    assert conditioner.net_options() == {"cond_channels": 1}
    with pytest.raises(UsageError, match=r"takes \[1, 8, 8\].*\[1, 4, 4\]"):
        conditioner.from_images(torch.zeros(1, 1, 6, 6), (1, 8, 8))
    with pytest.raises(UsageError, match="factor must be an integer >= 2"):
        build_conditioner({"name": "image", "factor": 1})
    null = drop(conditioner.for_training(x, None), 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(null["channels"], torch.zeros_like(x))  # ∅ = zeros


def test_sampling_requests_for_an_image_model():
    conditioner = build_conditioner({"name": "image", "factor": 2, "channels": 1})
    images = torch.zeros(2, 1, 4, 4)
    cond, asked = sampling_cond(conditioner, 2, images=images, shape=(1, 8, 8))
    assert cond["channels"].shape == (2, 1, 8, 8) and asked == {}
    with pytest.raises(UsageError, match="pass `images`"):
        sampling_cond(conditioner, 2, shape=(1, 8, 8))
    with pytest.raises(UsageError, match="takes no image condition"):
        sampling_cond(None, 2, images=images, shape=(1, 8, 8))
    with pytest.raises(UsageError, match="images only"):
        sampling_cond(conditioner, 2, classes=[1], images=images, shape=(1, 8, 8))


def test_image_condition_needs_image_data(tmp_path):
    cfg = load_config("swiss_roll", ["model.cond={name='image'}", "train.steps=1"])
    with pytest.raises(UsageError, match="needs an image dataset"):
        train(cfg, tmp_path / "run")
    cfg = _tiny_cfg("model.cond={name='image'}", "train.eval_every=2", "train.eval_ref=r.npz")
    with pytest.raises(UsageError, match="needs conditioning images"):
        train(cfg, tmp_path / "run2")
    assert not (tmp_path / "run2").exists()


@pytest.fixture(scope="module")
def sr_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("sr") / "run"
    cfg = _tiny_cfg("model.cond={name='image', factor=2, p_uncond=0.2}", "train.steps=150",
                    "train.batch_size=32", "train.lr=2e-3", "train.log_every=50")  # fmt: skip
    train(cfg, run)
    return run


def test_trained_denoiser_follows_the_low_resolution_image(sr_run):
    """At large σ the MMSE denoiser given the low-res image is close to it, while the ∅ branch
    (no image) can only give the data mean: the conditional error must be far smaller."""
    denoiser, config, _ = load_denoiser(sr_run)
    assert config["model"]["cond"] == {"name": "image", "factor": 2, "p_uncond": 0.2,
                                       "channels": 1}  # fmt: skip
    data = load_dataset("digits")
    x0 = data.to_model(data.x[-64:])  # [64, 1, 8, 8], the end of the data
    cond = denoiser.conditioner.from_images(x0, (1, 8, 8))
    sigma = torch.full((64,), 20.0)
    x = x0 + sigma[:, None, None, None] * torch.randn(
        x0.shape, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        err_c = (denoiser(x, sigma, cond) - x0).square().mean()
        err_0 = (denoiser(x, sigma, {}) - x0).square().mean()
    assert err_c < 0.6 * err_0, (err_c, err_0)


def test_cli_sample_from_image_files(sr_run, tmp_path):
    small = tmp_path / "small.png"
    Image.fromarray(np.full((4, 4), 200, np.uint8)).save(small)
    out = tmp_path / "s"
    argv = ["sample", str(sr_run), "--out", str(out), "-n", "3", "--steps", "2", "--quiet"]
    assert main(argv + ["--image", str(small)]) == 0
    assert json.loads((out / "labels.json").read_text())["images"] == [str(small)] * 3
    assert main(argv) == 2  # no --image: one-line usage error
