"""Gradient guidance on latent models: through the decoder for pixel nets, directly for nets
trained on the model's latents; the identity codec leaves every term unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_guidance import HashTextEncoder
from test_latent_runs import KL, kl_file, latent_cfg
from test_train import _tiny_cfg

import difflab
from difflab.codecs.identity import IdentityCodec
from difflab.core.errors import UsageError
from difflab.data.datasets import DIGIT_NAMES
from difflab.guidance.chain import build_guidance
from difflab.guidance.noise_aware import decoded_gradient_term
from difflab.storage.codecs import build_codec, load_codec_file
from difflab.training.classifier import train_classifier
from difflab.training.encoder import train_encoder
from difflab.training.loop import train

DIGITS8 = {"name": "digits", "size": 8, "split": "train"}
NET = {"model_channels": 8, "channel_mult": [1, 2]}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A KL codec file, a latent and a pixel model, pixel/latent classifiers and encoders."""
    d = tmp_path_factory.mktemp("latent_guidance")
    f = {"kl": kl_file(d / "kl.safetensors")}
    f["latent"] = train(latent_cfg(f["kl"], "train.steps=1"), d / "latent")
    f["pixel"] = train(_tiny_cfg("train.steps=1"), d / "pixel")
    for space, codec in (("pixels", None), ("latents", f["kl"])):
        f[f"clf_{space}"] = d / f"clf_{space}.safetensors"
        train_classifier(DIGITS8, f[f"clf_{space}"], steps=1, batch_size=8, eval_sigmas=(),
                         net=NET, codec=codec)  # fmt: skip
        f[f"enc_{space}"] = d / f"enc_{space}.safetensors"
        train_encoder(DIGITS8, f[f"enc_{space}"], text_encoder=HashTextEncoder(),
                      prompts=[[n] for n in DIGIT_NAMES], steps=1, batch_size=8, eval_sigmas=(),
                      net=NET, codec=codec)  # fmt: skip
    f["ref"] = d / "ref.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).save(f["ref"])
    return f


def test_decoded_term_is_the_vector_jacobian_product_through_decoder_and_denoiser():
    torch.manual_seed(0)
    codec = build_codec(KL)  # random nets: a nonlinear decoder
    w = torch.randn(2, 1, 8, 8)
    fn = lambda x, sigma: 0.5 * x  # noqa: E731  D(x; σ) = x/2
    objective = lambda pixels, level: (pixels * w).flatten(1).sum(1)  # noqa: E731  F [B]
    x, sigma = torch.randn(2, 2, 4, 4), torch.tensor([0.7, 2.0])
    _, vjp = torch.autograd.functional.vjp(lambda z: codec.decode(0.5 * z), x, w)
    expected = 0.5 * x + 3.0 * sigma.view(2, 1, 1, 1) ** 2 * vjp
    with torch.inference_mode():
        out = decoded_gradient_term(fn, objective, 3.0, codec, 0.002)(x, sigma)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("spec", ["classifier:ckpt={clf_pixels},scale=5,label=3",
                                  "content:ckpt={enc_pixels},ref={ref},scale=5"])  # fmt: skip
def test_the_identity_codec_leaves_guidance_bit_for_bit_unchanged(files, spec):
    pipe = difflab.load(files["pixel"])
    spec = spec.format(**files)
    before = build_guidance(spec, shape=(1, 8, 8))  # as built before codecs reached guidance
    x, sigma = torch.randn(3, 1, 8, 8), torch.full((3,), 0.9)
    with torch.inference_mode():
        want = before(pipe.denoiser, {})(x, sigma)
        for codec in (IdentityCodec(), pipe.codec):
            got = build_guidance(spec, shape=(1, 8, 8), codec=codec)(pipe.denoiser, {})(x, sigma)
            assert torch.equal(got, want)
    assert torch.equal(pipe(2, seed=0, guidance=spec), pipe(2, seed=0, guidance=[before.specs[0]]))


@pytest.mark.parametrize("spec", ["classifier:ckpt={clf_pixels},scale=20,label=3",
                                  "content:ckpt={enc_pixels},ref={ref},scale=20",
                                  "text:ckpt={enc_pixels},prompt=seven,scale=20"])  # fmt: skip
def test_a_pixel_net_guides_a_latent_model_through_the_decoder(files, spec, monkeypatch):
    import sys
    import types

    fake_text = types.ModuleType("difflab.conditioning.text_encoder")
    fake_text.load_text_encoder = lambda name: HashTextEncoder()
    monkeypatch.setitem(sys.modules, "difflab.conditioning.text_encoder", fake_text)
    pipe = difflab.load(files["latent"])
    assert pipe.shape == (2, 4, 4)  # the reference image is read at 8×8 pixels all the same
    plain = pipe(2, seed=0, steps=4)
    decode, grads = pipe.codec.decode, []
    monkeypatch.setattr(pipe.codec, "decode", lambda x: grads.append(x.requires_grad) or decode(x))
    guided = pipe(2, seed=0, steps=4, guidance=spec.format(**files))
    assert True in grads  # the term differentiated through the decoder
    assert not torch.equal(guided, plain)


@pytest.mark.parametrize("spec", ["classifier:ckpt={clf_latents},scale=20,label=3",
                                  "content:ckpt={enc_latents},ref={ref},scale=20"])  # fmt: skip
def test_a_net_trained_on_the_models_latents_reads_x_directly(files, spec, monkeypatch):
    spec = spec.format(**files)
    pipe = difflab.load(files["latent"])
    plain = pipe(2, seed=0, steps=4)
    decode, grads = pipe.codec.decode, []
    monkeypatch.setattr(pipe.codec, "decode", lambda x: grads.append(x.requires_grad) or decode(x))
    guided = pipe(2, seed=0, steps=4, guidance=spec)
    assert True not in grads and not torch.equal(guided, plain)
    with pytest.raises(UsageError, match=r"trained on the latents of codec sha256 .* works in "
                       r"pixels; train the \w+ on this model's space"):  # fmt: skip
        difflab.load(files["pixel"])(1, guidance=spec)


def test_a_classifier_trained_through_a_codec_records_its_latent_space(files, tmp_path):
    from difflab.storage.noise_aware import load_classifier

    meta = load_classifier(files["clf_latents"]).meta
    codec = load_codec_file(files["kl"])[0]
    assert meta["codec"] == {"name": "kl", "sha256": codec.file_sha256}
    assert meta["shape"] == [2, 4, 4] and meta["image_shape"] == [1, 8, 8]
    with pytest.raises(UsageError, match=r"encodes images \[1, 8, 8\] but the data are"):
        train_classifier({"name": "digits", "size": 16}, tmp_path / "c.safetensors", steps=1,
                         codec=files["kl"])  # fmt: skip
