"""The KL and VQ codecs, their training (train_autoencoder) and diffusion through a codec file."""

from __future__ import annotations

import pytest
import torch
from test_train import _tiny_cfg

import difflab
from difflab.codecs.kl import diag_gaussian_kl
from difflab.codecs.vq import Codebook, nearest_code, straight_through
from difflab.core.errors import UsageError
from difflab.data.datasets import Dataset, load_dataset
from difflab.data.loader import InfiniteLoader
from difflab.storage import checkpoint as ckpt
from difflab.storage.codecs import build_codec, load_codec_file, save_codec
from difflab.storage.models import load_denoiser
from difflab.training.autoencoder import psnr, train_autoencoder
from difflab.training.engine import Engine
from difflab.training.loop import train
from difflab.training.objectives import build_objective

DIGITS = load_dataset("digits")  # [N, 1, 8, 8]
SMALL = {"ch": 8}


def _codec(name, factor=2, **extra):
    torch.manual_seed(0)
    return build_codec({"name": name, "channels": 1, "factor": factor, "net": SMALL, **extra})


def test_kl_term_is_the_closed_form_gaussian_kl():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    expected = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)  # [B]
    torch.testing.assert_close(diag_gaussian_kl(mean, logvar), expected)
    assert diag_gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)).abs().max() == 0


def test_vq_is_the_brute_force_nearest_code_and_straight_through_is_the_identity():
    g = torch.Generator().manual_seed(1)
    z, embed = torch.randn(50, 3, generator=g), torch.randn(16, 3, generator=g)
    brute = torch.tensor([min(range(16), key=lambda k: float(((z[i] - embed[k]) ** 2).sum()))
                          for i in range(50)])  # fmt: skip
    assert torch.equal(nearest_code(z, embed), brute)
    book = Codebook(16, 3)
    book.embed.copy_(embed)
    zq, idx = book(z.T.reshape(1, 3, 5, 10))
    assert torch.equal(idx.flatten(), brute) and torch.equal(zq[0].reshape(3, 50).T, embed[brute])
    x = torch.randn(2, 3, 5, 10, requires_grad=True)
    out = straight_through(x, book(x)[0])
    torch.testing.assert_close(out, book(x)[0])  # z + (z_q − z) = z_q up to rounding
    weights = torch.randn_like(x)
    (out * weights).sum().backward()
    assert torch.equal(x.grad, weights)  # d out / d x = I


def test_codebook_ema_moves_codes_to_their_means_and_restarts_dead_codes():
    book = Codebook(4, 2, decay=0.5, eps=0.0, restart_threshold=0.1)
    book.embed.copy_(torch.tensor([[0.0, 0.0], [5.0, 5.0], [9.0, 9.0], [-9.0, 9.0]]))
    book.embed_avg.copy_(book.embed)
    book.cluster_size.fill_(1.0)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [4.0, 4.0]])
    idx = nearest_code(z, book.embed)
    book.update(z, idx, torch.Generator().manual_seed(0))
    # code 0: N = ½·1 + ½·2 = 1.5, m = ½·0 + ½·(1, 1) = (½, ½) → e = (⅓, ⅓); codes 2, 3 decay to
    # N = ½ ≥ 0.1: kept. Counts are renormalised (Laplace smoothing with eps 0 keeps them).
    torch.testing.assert_close(book.embed[0], torch.tensor([1 / 3, 1 / 3]))
    torch.testing.assert_close(book.embed[1], torch.tensor([4.5, 4.5]))
    book.cluster_size[3] = 0.0  # unused for long: restarted at one of the batch's vectors
    book.update(z, nearest_code(z, book.embed), torch.Generator().manual_seed(0))
    assert any(torch.equal(book.embed[3], row) for row in z)


@pytest.mark.parametrize("name", ["kl", "vq"])
@pytest.mark.parametrize("factor", [1, 2, 4, 8])
def test_encode_decode_shapes_for_every_factor(name, factor):
    codec = _codec(name, factor, z_channels=3)
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    latent = codec.latent_shape((1, 16, 16))
    assert latent == (3, 16 // factor, 16 // factor)
    assert codec.image_shape(latent) == (1, 16, 16)
    assert codec.encode(x).shape == (2, *latent)
    assert codec.decode(codec.encode(x)).shape == x.shape
    with pytest.raises(UsageError, match="channel"):
        codec.latent_shape((3, 16, 16))


@pytest.mark.parametrize("name", ["kl", "vq"])
def test_latent_scale_gives_zero_mean_unit_std_on_the_calibration_data(name):
    codec = _codec(name).eval()
    x = DIGITS.to_model(DIGITS.x[:300])
    shift, scale = codec.calibrate([x[:128], x[128:]])
    z = codec.encode(x).double()
    assert abs(z.mean().item()) < 1e-5 and abs(z.std().item() - 1) < 1e-5
    assert scale != 1.0 and shift != 0.0
    torch.testing.assert_close(codec.decode(codec.encode(x[:4])), codec.reconstruct(
        codec.latents(x[:4])), rtol=1e-5, atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("name", ["kl", "vq"])
def test_a_tiny_autoencoder_overfits_eight_images(name):
    torch.manual_seed(0)
    codec = build_codec({"name": name, "channels": 1, "factor": 2, "net": {"ch": 16}})
    x8 = DIGITS.x[:8]
    data = Dataset(x8, DIGITS.labels[:8])
    objective = build_objective({"name": "autoencoder", "recon": "l2"}, codec)
    opt = torch.optim.Adam(codec.parameters(), lr=3e-3)
    engine = Engine(objective, opt, generator=torch.Generator().manual_seed(0))
    loader = InfiniteLoader(data, 8, seed=0)
    codec.train()
    for step in range(150):
        engine.step(step, loader)
    codec.eval()
    x = DIGITS.to_model(x8)
    value = psnr(codec.decode(codec.encode(x)).clamp(-1, 1), x).mean().item()
    assert value > 24.0, value


def test_train_autoencoder_resumes_bit_exactly_and_writes_a_calibrated_codec(tmp_path):
    opts = dict(codec="vq", factor=2, net=SMALL, codec_options={"num_codes": 16}, batch_size=8,
                loss={"disc": {"start": 1, "width": 8, "layers": 1}}, ckpt_every=2)  # fmt: skip
    a = train_autoencoder("digits", tmp_path / "a", steps=4, **opts)
    train_autoencoder("digits", tmp_path / "b", steps=2, **opts)
    b = train_autoencoder("digits", tmp_path / "b", steps=4, resume=True, **opts)
    for pa, pb in ((a, b), (ckpt.model_path(a.parent, 4), ckpt.model_path(b.parent, 4))):
        ta, tb = ckpt.load_tensors(pa)[0], ckpt.load_tensors(pb)[0]
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    codec, meta = load_codec_file(a)
    assert meta["info"]["calibrated"] and meta["latent_shape"] == [4, 4, 4]
    assert float(codec.scale) == pytest.approx(meta["info"]["scale"])
    with pytest.raises(UsageError, match="options differ"):
        train_autoencoder("digits", tmp_path / "b", steps=5, resume=True,
                          **{**opts, "batch_size": 4})  # fmt: skip


def _identity_file(path):
    return save_codec(path, build_codec("identity"), {"name": "identity"}, (1, 8, 8))


def test_an_identity_codec_file_makes_latent_diffusion_equal_pixel_diffusion(tmp_path):
    codec_file = _identity_file(tmp_path / "id.safetensors")
    pixel = train(_tiny_cfg("train.steps=2"), tmp_path / "pixel")
    latent = train(_tiny_cfg("train.steps=2", f"model.codec={{ckpt='{codec_file}'}}"),
                   tmp_path / "latent")  # fmt: skip
    ta, tb = ckpt.load_tensors(pixel)[0], ckpt.load_tensors(latent)[0]
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    config = load_denoiser(latent)[1]
    assert config["model"]["codec"]["sha256"] and config["model"]["codec"]["name"] == "identity"
    assert torch.equal(difflab.load(pixel)(3, seed=0), difflab.load(latent)(3, seed=0))


def test_a_diffusion_model_refuses_a_missing_changed_or_misfit_codec_file(tmp_path):
    codec_file = _identity_file(tmp_path / "id.safetensors")
    run = train(_tiny_cfg("train.steps=1", f"model.codec={{ckpt='{codec_file}'}}"),
                tmp_path / "run")  # fmt: skip
    codec_file.unlink()  # the run keeps its own copy of the codec file ...
    difflab.load(run)
    codec_file = tmp_path / "run" / "codec.safetensors"  # ... which is the one checked
    save_codec(codec_file, build_codec("identity"), {"name": "identity"}, (1, 8, 8),
               {"note": "re-saved"})  # other bytes
    with pytest.raises(UsageError, match="changed since the diffusion model was trained"):
        difflab.load(run)
    codec_file.unlink()
    with pytest.raises(UsageError, match=f"codec file {codec_file} does not exist"):
        difflab.load(run)
    other = save_codec(tmp_path / "rgb.safetensors", _codec("kl"), {"name": "kl", "channels": 1,
                       "factor": 2, "net": SMALL}, (1, 16, 16))  # fmt: skip
    with pytest.raises(UsageError, match=r"encodes images \[1, 16, 16\] but the data are"):
        train(_tiny_cfg("train.steps=1", f"model.codec={{ckpt='{other}'}}"), tmp_path / "r2")


def test_a_kl_codec_file_trains_and_samples_in_latent_space_with_gradients_through_decode(
    tmp_path,
):
    spec = {"name": "kl", "channels": 1, "factor": 2, "z_channels": 2, "net": SMALL}
    codec = _codec("kl", z_channels=2)
    codec.calibrate([DIGITS.to_model(DIGITS.x[:64])])
    path = save_codec(tmp_path / "kl.safetensors", codec, spec, (1, 8, 8))
    run = train(_tiny_cfg("train.steps=1", f"model.codec={{ckpt='{path}'}}",
                          "model.net.attention_resolutions=[2]"), tmp_path / "run")  # fmt: skip
    pipe = difflab.load(run)
    assert (pipe.shape, pipe.image_shape) == ((2, 4, 4), (1, 8, 8))
    assert pipe(2, seed=0).shape == (2, 1, 8, 8)
    x = torch.randn(2, 2, 4, 4, requires_grad=True)  # pixel-space guidance differentiates here
    pipe.codec.decode(x).square().sum().backward()
    assert x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in pipe.codec.parameters())
