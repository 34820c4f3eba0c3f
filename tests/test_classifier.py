"""Noise-aware classifier and image encoder: the net, training on digits, checkpoints, bad input."""

import hashlib
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from requires import SETUP

from difflab.conditioning.text_encoder import load_text_encoder
from difflab.core.errors import UsageError
from difflab.data.datasets import DIGIT_NAMES, load_dataset
from difflab.nets.base import NETS
from difflab.nets.classifier import AttentionPool2d
from difflab.storage.checkpoint import save_model
from difflab.storage.noise_aware import load_classifier, load_encoder
from difflab.training.classifier import noised_accuracy, train_classifier
from difflab.training.densities import sample_sigma
from difflab.training.encoder import train_encoder, zero_shot_accuracy

DIGITS = {"name": "digits", "size": 8, "split": "train"}  # scored on split="test"
TINY = {"model_channels": 16, "channel_mult": [1, 2]}  # 8×8 → 4×4; attention in middle + pool
FAST = dict(batch_size=64, lr=2e-3, net=TINY, eval_sigmas=(), seed=0)


def reference_pool(pool: AttentionPool2d, h: torch.Tensor) -> torch.Tensor:
    """Attention pooling written out: every query computed, the mean token's row kept (ADM)."""
    B, C, H, W = h.shape
    tokens = h.flatten(2).transpose(1, 2)  # [B, HW, C]
    tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], 1) + pool.pos  # [B, N, C]
    q, k, v = pool.qkv(tokens).chunk(3, dim=-1)  # [B, N, C] each
    d, heads = C // pool.num_heads, pool.num_heads
    q, k, v = (t.view(B, -1, heads, d).transpose(1, 2) for t in (q, k, v))  # [B, h, N, d]
    weights = (q @ k.transpose(-1, -2) / math.sqrt(d)).softmax(-1)  # [B, h, N, N]
    out = (weights @ v)[:, :, 0].reshape(B, C)  # [B, C]
    return pool.proj(out)


def test_attention_pool_matches_written_out_attention():
    torch.manual_seed(0)
    pool = AttentionPool2d(8, resolution=4, out_dim=5, num_heads=2)
    h = torch.randn(3, 8, 4, 4)
    torch.testing.assert_close(pool(h), reference_pool(pool, h), rtol=1e-5, atol=1e-5)


def test_attention_pool_without_positions_ignores_pixel_order():
    torch.manual_seed(0)
    pool = AttentionPool2d(8, resolution=4, out_dim=5, num_heads=2)
    with torch.no_grad():
        pool.pos.copy_(pool.pos[:1].expand_as(pool.pos))  # one shared position for all tokens
    h = torch.randn(2, 8, 4, 4)
    perm = torch.randperm(16)
    shuffled = h.flatten(2)[:, :, perm].view_as(h)
    torch.testing.assert_close(pool(h), pool(shuffled), rtol=1e-5, atol=1e-5)


def test_encoder_unet_shapes_and_noise_conditioning():
    spec = {"name": "encoder_unet", **TINY, "attention_resolutions": [4]}
    net = NETS.build(spec, in_channels=3, out_dim=7, resolution=8)
    x = torch.randn(2, 3, 8, 8)
    out, feats = net.forward_features(x, torch.zeros(2))
    assert out.shape == (2, 7)
    assert [tuple(f.shape) for f in feats] == [(2, 16, 8, 8), (2, 32, 4, 4), (2, 32, 4, 4)]
    with torch.no_grad():  # zero-init residual branches ignore the noise level until trained
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    assert not torch.allclose(net(x, torch.zeros(2)), net(x, torch.full((2,), 2.0)))
    with pytest.raises(UsageError, match="built for"):
        net(torch.randn(2, 1, 8, 8), torch.zeros(2))


def test_log_uniform_sigma_density():
    """ln σ ~ U(ln σ_min, ln σ_max): mean and variance of ln σ match the uniform's."""
    g = torch.Generator().manual_seed(0)
    sigma = sample_sigma({"name": "log_uniform", "sigma_min": 0.002, "sigma_max": 80.0}, 20000, g)
    lo, hi = math.log(0.002), math.log(80.0)
    assert sigma.min() >= 0.002 and sigma.max() <= 80.0
    assert abs(sigma.log().mean() - (lo + hi) / 2) < 4 * (hi - lo) / math.sqrt(12 * 20000)
    assert abs(sigma.log().var() / ((hi - lo) ** 2 / 12) - 1) < 0.05
    with pytest.raises(UsageError, match="unknown for noise-aware nets"):
        sample_sigma({"name": "uniform_t"}, 3, g)


@pytest.fixture(scope="module")
def clf_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("clf") / "clf.safetensors"
    train_classifier(DIGITS, path, steps=120, **FAST)
    return path


@pytest.fixture(scope="module")
def clf(clf_path):
    return load_classifier(clf_path)


@pytest.fixture(scope="module")
def heldout_digits():
    data = load_dataset({**DIGITS, "split": "test"})  # disjoint from split="train"
    return data.to_model(data.x), data.labels


def test_classifier_beats_chance_when_clean_and_is_chance_at_huge_sigma(clf, heldout_digits):
    x0, labels = heldout_digits  # 359 images, 10 roughly balanced classes: chance ≈ 0.1
    assert noised_accuracy(clf, x0, labels, 0.05) > 0.7
    # At σ = 80 the image carries ~nothing (SNR (0.5/80)²): Bayes accuracy is the class prior
    assert noised_accuracy(clf, x0, labels, 80.0) < 0.2
    probs = clf.logits(x0 + 80.0 * torch.randn_like(x0), torch.tensor(80.0)).softmax(1)
    assert probs.max(1).values.mean() < 0.5  # close to the uniform prior, not confident


def test_classifier_save_load_identical_and_metadata(clf_path, clf):
    again = load_classifier(clf_path)
    x, sigma = torch.randn(4, 1, 8, 8), torch.tensor([0.01, 0.3, 3.0, 30.0])
    torch.testing.assert_close(clf.logits(x, sigma), again.logits(x, sigma), rtol=0, atol=0)
    assert clf.num_classes == 10 and clf.class_names == DIGIT_NAMES
    assert clf.meta["sigma_range"] == [0.002, 80.0] and clf.meta["shape"] == [1, 8, 8]
    # one scalar σ broadcasts like a [B] tensor of it
    torch.testing.assert_close(
        clf.logits(x, torch.tensor(0.3)), clf.logits(x, torch.full((4,), 0.3))
    )


def test_log_prob_is_log_softmax_and_has_finite_gradients(clf):
    x, sigma, y = torch.randn(3, 1, 8, 8), torch.tensor([0.1, 1.0, 10.0]), torch.tensor([0, 4, 9])
    expected = clf.logits(x, sigma).log_softmax(1)[torch.arange(3), y]
    torch.testing.assert_close(clf.log_prob(x, sigma, y), expected)
    with torch.inference_mode(), torch.inference_mode(False):
        x = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(clf.log_prob(x, sigma, y).sum(), x)
        assert grad.shape == x.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
        # directional derivative agrees with a central difference
        v = torch.randn_like(x)
        with torch.no_grad():
            eps = 1e-2
            fd = (clf.log_prob(x + eps * v, sigma, y) - clf.log_prob(x - eps * v, sigma, y)) / (
                2 * eps
            )
        torch.testing.assert_close((grad * v).flatten(1).sum(1), fd, rtol=0.05, atol=2e-3)
    with pytest.raises(UsageError, match="class indices in 0..9"):
        clf.log_prob(x.detach(), sigma, torch.tensor([0, 1, 10]))


def test_check_compatible_names_both_shapes(clf):
    clf.check_compatible((1, 8, 8))
    for shape in [(3, 8, 8), (1, 16, 16)]:
        theirs = r"\[" + ", ".join(map(str, shape)) + r"\]"
        with pytest.raises(UsageError, match=r"\[1, 8, 8\].*" + theirs + ".*train"):
            clf.check_compatible(shape)
    with pytest.raises(UsageError, match="trained on digits"):
        clf.logits(torch.randn(2, 3, 8, 8), torch.ones(2))


def test_other_kinds_of_checkpoint_are_refused(tmp_path, clf_path):
    model = tmp_path / "model.safetensors"
    save_model(model, {"w": torch.zeros(1)}, {"model": {}}, {"step": 1})
    with pytest.raises(
        UsageError, match="diffusion model checkpoint.*not a noise-aware classifier"
    ):
        load_classifier(model)
    with pytest.raises(UsageError, match="noise-aware classifier.*not a noise-aware encoder"):
        load_encoder(clf_path)


def test_existing_out_needs_force(clf_path):
    with pytest.raises(UsageError, match="exists.*`force=True`"):
        train_classifier(DIGITS, clf_path, steps=1, **FAST)


class HashTextEncoder:
    """Stand-in text encoder: a fixed random unit vector per prompt (seeded by its sha256)."""

    name, dim = "hash", 32

    def encode(self, prompts):
        seeds = [int(hashlib.sha256(p.encode()).hexdigest()[:8], 16) for p in prompts]
        v = torch.stack([torch.randn(self.dim, generator=torch.Generator().manual_seed(s))
                         for s in seeds])  # fmt: skip
        return {"pooled": F.normalize(v, dim=-1)}


PROMPTS = [[f"a handwritten {n}", f"the digit {n}", n] for n in DIGIT_NAMES]


@pytest.fixture(scope="module")
def enc_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("enc") / "enc.safetensors"
    train_encoder(DIGITS, path, text_encoder=HashTextEncoder(), prompts=PROMPTS, steps=150, **FAST)
    return path


def test_encoder_learns_zero_shot_captions(enc_path, heldout_digits):
    enc = load_encoder(enc_path)
    x0, labels = heldout_digits
    assert enc.text_encoder == "hash" and enc.dim == 32
    assert zero_shot_accuracy(enc, x0, labels, 0.05) > 0.7  # chance ≈ 0.1
    assert zero_shot_accuracy(enc, x0, labels, 80.0) < 0.2


def test_encoder_embed_unit_norm_and_features(enc_path):
    enc = load_encoder(enc_path)
    x = torch.randn(3, 1, 8, 8)
    e = enc.embed(x, torch.tensor([0.01, 1.0, 50.0]))
    assert e.shape == (3, 32)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    feats = enc.features(x, torch.tensor(1.0))
    assert [f.ndim for f in feats] == [4, 4, 4] and all(len(f) == 3 for f in feats)
    with pytest.raises(UsageError, match=r"\[1, 8, 8\].*\[1, 16, 16\]"):
        enc.check_compatible((1, 16, 16))


def test_encoder_with_minilm_beats_chance(tmp_path, heldout_digits):
    try:
        text_encoder = load_text_encoder("minilm")
    except UsageError as err:
        pytest.fail(f"MiniLM text encoder unavailable: {err}; {SETUP}", pytrace=False)
    enc = train_encoder(DIGITS, tmp_path / "e.safetensors", text_encoder=text_encoder,
                        steps=150, **FAST)  # fmt: skip
    assert enc.text_encoder == "minilm"
    assert zero_shot_accuracy(enc, *heldout_digits, 0.05) > 0.3  # chance ≈ 0.1


def difflab(*args):
    return subprocess.run([sys.executable, "-m", "difflab", *args, "--quiet"], capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_cli_trains_then_refuses_overwrite_and_wrong_kind(tmp_path):
    out = tmp_path / "c.safetensors"
    args = ["train-classifier", "{name='digits', size=8}", "--out", str(out), "--steps", "3",
            "--set", "net.model_channels=16", "--set", "net.channel_mult=[1, 2]"]  # fmt: skip
    r = difflab(*args)
    assert r.returncode == 0, r.stderr
    assert "held-out accuracy: σ=0.05" in r.stdout and out.is_file()
    r = difflab(*args)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--force" in r.stderr
    r = difflab("sample", str(out), "--out", str(tmp_path / "s"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "classifier" in r.stderr
