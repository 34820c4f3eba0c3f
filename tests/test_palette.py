"""Paired image-to-image conditioning (Palette, GLIDE inpainting, CDM noise augmentation): every
source's training condition, user images and masks at sampling, exact paste-back, aug level 0 =
plain conditioning, and bad input refused in library terms and on the CLI (exit 2)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from difflab import train
from difflab.cli.main import main
from difflab.conditioning.base import build_conditioner, resolve_cond, sampling_cond
from difflab.conditioning.degrade import gaussian_blur, luminance
from difflab.conditioning.image import SOURCES
from difflab.conditioning.masks import (
    centre_box_mask,
    check_masks,
    half_mask,
    random_masks,
)
from difflab.core.config import load_config
from difflab.core.errors import UsageError
from difflab.inference.pipeline import Pipeline
from difflab.storage.models import build_denoiser

NET = ("model.net={name='unet', model_channels=16, channel_mult=[1, 2], num_res_blocks=1, "
       "attention_resolutions=[]}")  # fmt: skip
SPEC = {"lowres": {}, "gray": {}, "masked": {"mask": "mixed"}, "uncrop": {},
        "lowres_aug": {"aug_max": 0.5, "aug_blur": 1.0}}  # fmt: skip


def _conditioner(key: str, channels: int = 3):
    source = key.removesuffix("_aug")
    return build_conditioner({"name": "image", "source": source, "channels": channels,
                              **SPEC[key]})  # fmt: skip


def _pipe(cond: dict, shape=(1, 8, 8), *extra, randomize=False) -> Pipeline:
    cfg = load_config("digits", [NET, "sample.steps=2", "sample.batch_size=8", *extra])
    cfg.model.shape = list(shape)
    cfg.model.cond = {"name": "image", **cond, "channels": shape[0]}
    torch.manual_seed(0)
    denoiser = build_denoiser(cfg.model)
    if randomize:  # zero-initialised output layers would hide the condition
        for p in denoiser.parameters():
            torch.nn.init.normal_(p, std=0.1)
    return Pipeline(denoiser.eval(), cfg.to_dict())


def test_every_source_is_covered():
    assert sorted({k.removesuffix("_aug") for k in SPEC}) == sorted(SOURCES)


@pytest.mark.parametrize("key", sorted(SPEC))
def test_training_condition_has_the_net_slot_shapes(key):
    conditioner = _conditioner(key)
    x0 = torch.rand(4, 3, 8, 8) * 2 - 1  # [B, C, H, W]
    g = torch.Generator().manual_seed(0)
    cond = conditioner.for_training(x0, None, g)
    channels = conditioner.net_options()["cond_channels"]
    assert cond["channels"].shape == (4, channels, 8, 8)
    assert channels == {"lowres": 3, "gray": 1, "masked": 4, "uncrop": 4}[key.removesuffix("_aug")]
    again = conditioner.for_training(x0, None, torch.Generator().manual_seed(0))
    assert all(torch.equal(cond[k], again[k]) for k in cond)  # reproducible from the generator
    if "aug" in cond:
        assert cond["aug"].shape == (4,) and 0 <= cond["aug"].min() <= cond["aug"].max() <= 0.5
    net = _pipe({"source": key.removesuffix("_aug"), **SPEC[key]}, (3, 8, 8)).denoiser
    assert net(x0, torch.ones(4), cond).shape == x0.shape


def test_masked_condition_is_the_known_pixels_and_the_mask():
    x0 = torch.rand(6, 1, 8, 8) * 2 - 1
    cond = _conditioner("masked", 1).for_training(x0, None, torch.Generator().manual_seed(1))
    image, masks = cond["channels"][:, :1], cond["channels"][:, 1:]
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(image, x0 * masks)
    uncrop = _conditioner("uncrop", 1).for_training(x0, None, torch.Generator().manual_seed(1))
    assert torch.all(uncrop["channels"][:, 1:].flatten(1).mean(1) == 0.5)  # half kept


@pytest.mark.parametrize("kind", ["box", "free_form", "mixed", "uncrop"])
def test_random_masks_are_binary_partial_and_seeded(kind):
    masks = random_masks(16, (16, 16), kind, torch.Generator().manual_seed(3))
    assert masks.shape == (16, 1, 16, 16)
    check_masks(masks, 16, (16, 16))  # binary
    known = masks.flatten(1).mean(1)
    assert torch.all((known > 0) & (known < 1)), known  # each has both regions
    assert torch.equal(masks, random_masks(16, (16, 16), kind, torch.Generator().manual_seed(3)))


def test_gray_is_luma_and_needs_rgb_data():
    rgb = torch.tensor([1.0, -1.0, 0.0]).reshape(1, 3, 1, 1).expand(2, 3, 4, 4)
    torch.testing.assert_close(luminance(rgb), torch.full((2, 1, 4, 4), 0.299 - 0.587))
    gray = _conditioner("gray")
    cond = gray.from_images(rgb, (3, 4, 4))["channels"]
    assert torch.equal(gray.from_images(cond, (3, 4, 4))["channels"], cond)  # luma given as is
    data = SimpleNamespace(kind="image", shape=(1, 8, 8))
    with pytest.raises(UsageError, match="'gray' \\(colourisation\\) needs RGB data"):
        resolve_cond({"name": "image", "source": "gray"}, data, "fashion_mnist")
    with pytest.raises(UsageError, match=r"takes RGB \[3, 4, 4\] or grayscale"):
        gray.from_images(torch.zeros(2, 2, 4, 4), (3, 4, 4))


def test_inpainting_samples_keep_the_known_region_exactly():
    """Palette paste-back: the output equals the input image wherever the mask is 1."""
    pipe = _pipe({"source": "masked"}, randomize=True)
    images = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    masks = torch.stack([centre_box_mask((8, 8)), half_mask((8, 8), "left"),
                         torch.ones(1, 8, 8)])  # fmt: skip
    out = pipe(3, seed=0, images=images, masks=masks)
    known = masks.bool().expand_as(images)
    assert out.shape == images.shape and torch.equal(out[known], images[known])
    assert not torch.equal(out[~known], images[~known])  # the unknown region is generated
    raw = pipe.sample(3, seed=0, images=images, masks=masks).x  # the paste is on model space
    assert torch.equal(pipe.sample(2, seed=0, images=images[:2], masks=masks[:2]).x, raw[:2])


def test_bad_masks_and_images_are_usage_errors():
    pipe = _pipe({"source": "masked"})
    images = torch.zeros(2, 1, 8, 8)
    for masks, match in [(torch.ones(2, 1, 4, 4), r"`masks` are \[2, 1, 4, 4\].*\[n, 1, 8, 8\]"),
                         (torch.full((2, 1, 8, 8), 0.5), "`masks` are not binary"),
                         (None, "pass `masks` with `images`")]:  # fmt: skip
        with pytest.raises(UsageError, match=match):
            pipe(2, images=images, **({} if masks is None else {"masks": masks}))
    with pytest.raises(UsageError, match=r"are \[3, 8, 8\] but this inpainting model takes"):
        pipe(2, images=torch.zeros(2, 3, 8, 8), masks=torch.ones(2, 1, 8, 8))
    with pytest.raises(UsageError, match="`masks` given but this model takes no inpainting mask"):
        _pipe({"source": "lowres"})(2, images=images, masks=torch.ones(2, 1, 8, 8))


def test_noise_augmentation_at_level_0_equals_plain_conditioning():
    """CDM §3.2: the augmented SR model at aug level 0 sees exactly the unaugmented condition,
    and its net output with the level 0 equals its output without the aug slot."""
    plain = _conditioner("lowres", 1)
    aug = _conditioner("lowres_aug", 1)
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    noise = torch.randn(3, 1, 4, 4)
    c0 = aug.from_images(x, (1, 8, 8), aug_level=0.0, noise=noise)
    assert torch.equal(c0["channels"], plain.from_images(x, (1, 8, 8))["channels"])
    assert torch.equal(c0["aug"], torch.zeros(3))
    denoiser = _pipe({"source": "lowres", "aug_max": 0.5}, randomize=True).denoiser
    xt, sigma = torch.randn(3, 1, 8, 8), torch.tensor([0.5, 2.0, 10.0])
    with torch.no_grad():
        out0 = denoiser(xt, sigma, c0)
        torch.testing.assert_close(out0, denoiser(xt, sigma, {"channels": c0["channels"]}),
                                   rtol=0, atol=0)  # fmt: skip
        c3 = aug.from_images(x, (1, 8, 8), aug_level=0.3, noise=noise)
        assert (denoiser(xt, sigma, {**c0, "aug": c3["aug"]}) - out0).abs().max() > 1e-3
    torch.testing.assert_close(  # z_s = low + s·ε, upsampled (non-truncated augmentation)
        c3["channels"], F.interpolate(F.avg_pool2d(x, 2) + 0.3 * noise, size=(8, 8),
                                      mode="bilinear", align_corners=False))  # fmt: skip


def test_training_augmentation_draws_level_blur_and_noise_from_the_generator():
    aug = build_conditioner({"name": "image", "channels": 1, "aug_max": 0.5})
    x0 = torch.rand(5, 1, 8, 8) * 2 - 1
    cond = aug.for_training(x0, None, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    level = torch.rand(5, generator=g) * 0.5
    noise = torch.randn(5, 1, 4, 4, generator=g)
    expected = aug.upsample(F.avg_pool2d(x0, 2) + level[:, None, None, None] * noise, (8, 8))
    torch.testing.assert_close(cond["channels"], expected)
    torch.testing.assert_close(cond["aug"], level)


def test_blur_augmentation():
    x = torch.rand(3, 2, 8, 8)
    assert torch.equal(gaussian_blur(x, torch.zeros(3)), x)
    blurred = gaussian_blur(x, torch.tensor([0.0, 1.0, 2.0]))
    torch.testing.assert_close(blurred[0], x[0], rtol=0, atol=1e-6)  # σ = 0 is a delta
    assert blurred[2].std() < blurred[1].std() < x[1].std()
    flat = torch.full((1, 1, 8, 8), 0.7)
    torch.testing.assert_close(gaussian_blur(flat, torch.tensor([1.5])), flat)


def test_aug_level_is_checked():
    pipe = _pipe({"source": "lowres", "aug_max": 0.5, "aug_level": 0.1})
    small = torch.zeros(2, 1, 4, 4)
    assert pipe(2, images=small, aug_level=0.2).shape == (2, 1, 8, 8)
    with pytest.raises(UsageError, match=r"`aug_level` must be in \[0, 0.5\]"):
        pipe(2, images=small, aug_level=0.7)
    with pytest.raises(UsageError, match="trained without noise-conditioning augmentation"):
        _pipe({"source": "lowres"})(2, images=small, aug_level=0.1)
    with pytest.raises(UsageError, match="`aug_level` given but this model is unconditional"):
        sampling_cond(None, 2, aug_level=0.1)
    with pytest.raises(UsageError, match="apply to source='lowres' only"):
        build_conditioner({"name": "image", "source": "masked", "aug_max": 0.1})
    # sample i's augmentation noise depends on seed + i only
    a = pipe.sample(3, seed=4, images=small[:1].expand(3, 1, 4, 4) + 0.1).x
    b = pipe.sample(2, seed=4, images=small + 0.1, batch_size=1).x
    assert torch.equal(a[:2], b)


@pytest.fixture(scope="module")
def inpaint_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("inpaint") / "run"
    cfg = load_config("digits", [NET, "model.cond={name='image', source='masked'}",
                                 "train.steps=3", "train.batch_size=8", "train.log_every=1"])
    train(cfg, run)
    return run


def test_cli_inpaints_with_a_mask_png(inpaint_run, tmp_path):
    image, mask = tmp_path / "x.png", tmp_path / "m.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 3).save(image)
    m = np.full((8, 8), 255, np.uint8)
    m[2:6, 2:6] = 0
    Image.fromarray(m).save(mask)
    out = tmp_path / "s"
    argv = ["sample", str(inpaint_run), "--out", str(out), "-n", "2", "--steps", "2", "--quiet",
            "--image", str(image)]  # fmt: skip
    assert main(argv + ["--mask", str(mask)]) == 0
    got = np.asarray(Image.open(out / "images" / "000000.png"))
    known = m == 255
    assert np.array_equal(got[known], np.asarray(Image.open(image))[known])
    m[0, 0] = 128
    Image.fromarray(m).save(mask)
    assert main(argv + ["--mask", str(mask)]) == 2
    assert main(argv) == 2  # no --mask


def test_cli_mask_errors_are_one_line(inpaint_run, tmp_path, capsys):
    image, mask = tmp_path / "x.png", tmp_path / "m.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(mask)
    argv = ["sample", str(inpaint_run), "--out", str(tmp_path / "s"), "-n", "1", "--steps", "1",
            "--image", str(image), "--mask", str(mask)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--mask" in err and "[n, 1, 8, 8]" in err
