"""Guidance: CFG identities, classifier guidance on a Gaussian-mixture oracle, thresholding,
semantic terms with a fake encoder, spec parsing and bad input."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from difflab.core.errors import UsageError
from difflab.core.precond import Precond
from difflab.core.schedules import build_schedule
from difflab.guidance.chain import (
    Guidance,
    build_guidance,
    cfg,
    classifier_guidance,
    dynamic_threshold,
    gradient_term,
    parse_guidance,
    plain,
    static_threshold,
)
from difflab.guidance.semantic import (
    NoisedReference,
    content_score,
    load_reference,
    semantic_guidance,
    structure_score,
    style_score,
    text_score,
)
from difflab.nets.base import NETS
from difflab.samplers.base import sample
from oracles import GaussianMixture, float64_default


@pytest.fixture(autouse=True)
def float64():
    with float64_default():
        yield


# ---------------------------------------------------------------- classifier-free guidance


def tiny_denoiser(parameterization="eps", seed=0):
    """Precond around a small random MLP with a vector slot (zero-initialised layers randomised)."""
    torch.manual_seed(seed)
    net = NETS.build({"name": "mlp", "hidden": 32, "depth": 2, "cond_vector_dim": 3})
    randomise_zero_init(net)
    pre = Precond(net, build_schedule("linear"), parameterization).double()
    calls = []
    net.register_forward_hook(lambda m, args, out: calls.append(len(args[0])))
    return pre, calls


def randomise_zero_init(net):
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(std=0.3)


def cond_batch(b=5):
    g = torch.Generator().manual_seed(1)
    return {"vector": torch.randn(b, 3, generator=g), "labels": torch.arange(b)}


def test_cfg_scale_1_is_conditional_and_scale_0_unconditional():
    pre, _ = tiny_denoiser()
    cond = cond_batch()
    x, sigma = torch.randn(5, 2), torch.full((5,), 1.3)
    uncond = {"vector": torch.zeros(5, 3)}
    torch.testing.assert_close(cfg(pre, cond, scale=1.0)(x, sigma), pre(x, sigma, cond))
    torch.testing.assert_close(cfg(pre, cond, scale=0.0)(x, sigma), pre(x, sigma, uncond))
    assert not torch.allclose(pre(x, sigma, cond), pre(x, sigma, uncond))  # the test can fail


@pytest.mark.parametrize("parameterization", ["eps", "v", "edm"])
def test_cfg_on_denoiser_equals_cfg_on_network_output(parameterization):
    """D is affine in F with shared coefficients: CFG on x̂0 = CFG on ε (or v, or F_EDM)."""
    pre, _ = tiny_denoiser(parameterization)
    cond, w = cond_batch(), 3.5
    x, sigma = torch.randn(5, 2), torch.full((5,), 0.7)
    f_c, _, s = pre.net_output(x, sigma, cond)
    f_u, _, _ = pre.net_output(x, sigma, {"vector": torch.zeros(5, 3)})
    f = f_u + w * (f_c - f_u)  # guided ε (or v, F)
    by_hand = s.c_skip[:, None] * x + s.c_out[:, None] * f
    if parameterization == "eps":
        by_hand_eps = x - sigma[:, None] * f  # D = x − σ·ε̃
        torch.testing.assert_close(by_hand, by_hand_eps)
    torch.testing.assert_close(cfg(pre, cond, scale=w)(x, sigma), by_hand)


def test_cfg_is_one_batched_forward_and_interval_skips_the_unconditional_branch():
    pre, calls = tiny_denoiser()
    cond = cond_batch()
    fn = cfg(pre, cond, scale=4.0, sigma_min=0.5, sigma_max=2.0)
    x = torch.randn(5, 2)
    inside = fn(x, torch.full((5,), 1.0))
    assert calls == [10]  # both branches in one call on 2B rows
    calls.clear()
    outside = fn(x, torch.full((5,), 3.0))
    assert calls == [5]
    torch.testing.assert_close(outside, pre(x, torch.full((5,), 3.0), cond))
    guided_everywhere = cfg(pre, cond, scale=4.0)(x, torch.full((5,), 1.0))
    torch.testing.assert_close(inside, guided_everywhere)
    assert not torch.allclose(inside, pre(x, torch.full((5,), 1.0), cond))


def test_cfg_without_condition_is_refused():
    pre, _ = tiny_denoiser()
    with pytest.raises(UsageError, match="needs a condition"):
        cfg(pre, {}, scale=2.0)


def test_cfg_passes_the_conditional_variance_head():
    torch.manual_seed(0)
    net = NETS.build({"name": "mlp", "hidden": 16, "depth": 1, "cond_vector_dim": 3,
                      "out_channels": 4})  # fmt: skip
    randomise_zero_init(net)
    pre = Precond(net, build_schedule("linear"), "eps", learned_variance=True).double()
    cond, x, sigma = cond_batch(), torch.randn(5, 2), torch.full((5,), 1.0)
    d, extra = cfg(pre, cond, scale=2.0).with_extra(x, sigma)
    torch.testing.assert_close(d, cfg(pre, cond, scale=2.0)(x, sigma))
    torch.testing.assert_close(extra, pre.forward_with_extra(x, sigma, cond)[1])


# ---------------------------------------------------------------- classifier guidance


def mixture():
    """Four overlapping components at (±0.75, ±0.75), s = 0.5."""
    means = torch.tensor([[0.75, 0.75], [-0.75, 0.75], [-0.75, -0.75], [0.75, -0.75]])
    return GaussianMixture(means, 0.5)


def mixture_fn(gm):
    return lambda denoiser, cond: lambda x, sigma: gm.denoise(x, sigma)


def test_classifier_guidance_scale_1_gives_the_exact_conditional_denoiser():
    """D + σ²∇log p(y|x_σ) = E[x0 | x_σ, y] for the exact mixture denoiser and posterior."""
    gm = mixture()
    x = 2 * torch.randn(64, 2)
    sigma = torch.rand(64) * 3 + 0.05
    y = torch.randint(4, (64,))
    fn = lambda x, s: gm.denoise(x, s)  # noqa: E731
    with torch.inference_mode():  # as in generate()
        guided = classifier_guidance(fn, {"labels": y}, gm, scale=1.0)(x, sigma)
        half = classifier_guidance(fn, {"labels": y}, gm, scale=0.5)(x, sigma)
    torch.testing.assert_close(guided, gm.component_denoise(x, sigma, y))
    expected = gm.denoise(x, sigma) + 0.5 * sigma[:, None] ** 2 * gm.grad_log_prob(x, sigma, y)
    torch.testing.assert_close(half, expected)


def test_classifier_guidance_moves_samples_onto_the_chosen_component_monotonically():
    gm, target, n = mixture(), 2, 3000
    sigmas = torch.cat([torch.logspace(math.log10(20), math.log10(0.01), 30), torch.zeros(1)])
    x = sigmas[0] * torch.randn(n, 2, generator=torch.Generator().manual_seed(0))
    cond = {"labels": torch.full((n,), target)}
    fractions = []
    for scale in (0.0, 1.0, 4.0):
        fn = classifier_guidance(mixture_fn(gm)(None, cond), cond, gm, scale=scale)
        with torch.inference_mode():
            x0 = sample("heun", fn, x, sigmas)
        nearest = gm.log_posterior(x0, torch.zeros(n)).argmax(1)
        fractions.append((nearest == target).double().mean().item())
    assert abs(fractions[0] - 0.25) < 0.04  # unguided: the mixture weight
    assert abs(fractions[1] - 0.87) < 0.04  # exact conditional: Φ(1.5)² ≈ 0.87
    assert fractions[0] < fractions[1] < fractions[2]


def test_classifier_guidance_needs_a_class():
    gm = mixture()
    with pytest.raises(UsageError, match="`classes`"):
        classifier_guidance(lambda x, s: x, {}, gm)
    out = classifier_guidance(lambda x, s: gm.denoise(x, s), {}, gm, label=1)
    x, sigma = torch.randn(3, 2), torch.ones(3)
    torch.testing.assert_close(out(x, sigma), gm.component_denoise(x, sigma, torch.ones(3).long()))


# ---------------------------------------------------------------- thresholding


def test_thresholds_leave_in_range_predictions_unchanged():
    d = torch.rand(4, 1, 5, 5) * 2 - 1  # [-1, 1]
    torch.testing.assert_close(static_threshold(d), d)
    torch.testing.assert_close(dynamic_threshold(d, 0.9), d)


def test_thresholds_map_out_of_range_into_range():
    u = torch.rand(4, 1, 5, 5) * 2 - 1
    u[:, 0, 0, 0] = 1.0  # max |u| = 1 per sample
    big = u * torch.tensor([3.0, 1.0, 5.0, 0.5]).view(4, 1, 1, 1)
    static = static_threshold(big)
    assert static.abs().max() <= 1 and torch.equal(static[1], big[1])
    dyn = dynamic_threshold(big, 1.0)  # s = max|x̂0| per sample → u where it exceeded 1
    torch.testing.assert_close(dyn[[0, 2]], u[[0, 2]])
    torch.testing.assert_close(dyn[[1, 3]], big[[1, 3]])
    assert dynamic_threshold(big, 0.5).abs().max() <= 1


def test_threshold_terms_from_specs_wrap_the_denoiser():
    guide = build_guidance(["dynamic_threshold:p=1.0"], shape=(1, 5, 5))
    fn = guide(lambda x, sigma, cond: 4 * x, {})
    x = torch.rand(2, 1, 5, 5) - 0.5
    x[:, 0, 0, 0] = 0.5
    torch.testing.assert_close(fn(x, torch.ones(2)), 2 * x)


# ---------------------------------------------------------------- semantic guidance


class FakeEncoder:
    """σ-independent stand-in: embed = normalize(W·x), features = [conv(x), pooled conv(x)]."""

    text_encoder, dim = "fake", 6

    def __init__(self):
        g = torch.Generator().manual_seed(3)
        self.W = torch.randn(6, 16, generator=g, dtype=torch.float64)
        self.conv = torch.randn(4, 1, 3, 3, generator=g, dtype=torch.float64)

    def embed(self, x, sigma):
        return F.normalize(x.flatten(1) @ self.W.T, dim=-1)  # [B, 6]

    def features(self, x, sigma):
        f = torch.tanh(F.conv2d(x, self.conv, padding=1))  # [B, 4, 4, 4]
        return [f, F.avg_pool2d(f, 2)]

    def check_compatible(self, shape):
        pass


def scores(enc, ref):
    text = torch.randn(1, 6, generator=torch.Generator().manual_seed(5))
    return {
        "content": content_score(enc, ref),
        "structure": structure_score(enc, ref),
        "style": style_score(enc, ref),
        "text": text_score(enc, text),
    }


@pytest.mark.parametrize("name", ["content", "structure", "style", "text"])
def test_semantic_step_increases_its_score(name):
    enc = FakeEncoder()
    g = torch.Generator().manual_seed(7)
    ref = NoisedReference(torch.rand(1, 1, 4, 4, generator=g) * 2 - 1, seed=0)
    score = scores(enc, ref)[name]
    x = torch.randn(8, 1, 4, 4, generator=g)
    sigma, sigma_next = torch.full((8,), 0.5), 0.4
    fn = lambda x, s: 0.8 * x  # noqa: E731
    with torch.inference_mode():
        steps = [
            sample("euler", f, x, torch.tensor([0.5, sigma_next]))
            for f in (fn, semantic_guidance(fn, score, scale=2.0))
        ]
    plain_score, guided_score = (score(s, sigma) for s in steps)
    assert (guided_score > plain_score).all()


def test_terms_add_up_to_the_weighted_sum():
    enc = FakeEncoder()
    ref = NoisedReference(torch.rand(1, 1, 4, 4) * 2 - 1, seed=1)
    sc = scores(enc, ref)
    fn = plain(lambda x, s, c: 0.5 * x, {})
    x, sigma = torch.randn(3, 1, 4, 4), torch.full((3,), 0.9)
    terms = [lambda f, c: semantic_guidance(f, sc["style"], scale=30.0),
             lambda f, c: semantic_guidance(f, sc["content"], scale=2.0)]  # fmt: skip
    both = Guidance(plain, terms, [])(lambda x, s, c: 0.5 * x, {})(x, sigma)
    each = [t(fn, {})(x, sigma) - fn(x, sigma) for t in terms]
    torch.testing.assert_close(both - fn(x, sigma), each[0] + each[1])


def test_noised_reference_is_fixed_by_seed_and_scales_with_sigma():
    ref = torch.zeros(1, 1, 4, 4)
    a, b = NoisedReference(ref, seed=4), NoisedReference(ref, seed=4)
    x = torch.zeros(2, 1, 4, 4)
    torch.testing.assert_close(a.at(torch.full((2,), 2.0), x), 2 * b.at(torch.ones(2), x))
    assert a.at(torch.tensor([1.0, 2.0]), x).shape == (2, 1, 4, 4)


def test_gradient_term_sigma_squared_score_form():
    """F(x) = a·x has ∇F = a: D̃ = D + s·σ²·a exactly."""
    a = torch.tensor([0.3, -1.2])
    fn = gradient_term(lambda x, s: x, lambda x, s: x @ a, scale=2.0)
    x, sigma = torch.randn(4, 2), torch.tensor([0.1, 1.0, 2.0, 5.0])
    torch.testing.assert_close(fn(x, sigma), x + 2.0 * sigma[:, None] ** 2 * a)


# ---------------------------------------------------------------- specs and bad input


def test_parse_guidance():
    assert parse_guidance(["cfg:scale=3", "dynamic_threshold:p=0.99+static_threshold"]) == [
        {"name": "cfg", "scale": "3"},
        {"name": "dynamic_threshold", "p": "0.99"},
        {"name": "static_threshold"},
    ]
    assert parse_guidance("style:ref=a.png,scale=100,ckpt=e.safetensors")[0]["ref"] == "a.png"


@pytest.mark.parametrize(
    "spec, match",
    [
        ("cgf:scale=3", "unknown guidance 'cgf'; choose one of: cfg, classifier"),
        ("cfg:scael=3", "valid options: scale, sigma_min, sigma_max"),
        ("cfg:scale", "not KEY=VALUE"),
        ("cfg:scale=3++plain", "empty guidance"),
        ("cfg:scale=3,scale=4", "'scale' given twice"),
    ],
)
def test_parse_guidance_errors(spec, match):
    with pytest.raises(UsageError, match=match):
        parse_guidance(spec)


@pytest.mark.parametrize(
    "spec, match",
    [
        ("cfg:scale=abc", "scale='abc' must be a float"),
        ("cfg:scale=nan", "finite"),
        ("cfg:sigma_min=2,sigma_max=1", "sigma_min <= sigma_max"),
        ("plain+cfg:scale=2", "at most one of cfg, plain"),
        ("classifier:scale=2", "needs ckpt="),
        ("dynamic_threshold:p=1.5", r"\(0, 1\]"),
        ("style:ckpt=e.safetensors", "needs ref="),
        ("text:ckpt=e.safetensors,prompt=", "needs prompt="),
        ("classifier:ckpt=/nonexistent/c.safetensors", "c.safetensors"),
    ],
)
def test_build_guidance_errors(spec, match):
    with pytest.raises(UsageError, match=match):
        build_guidance(spec, shape=(1, 8, 8))


def test_build_guidance_cfg_from_spec_and_default_plain():
    pre, _ = tiny_denoiser()
    cond, x, sigma = cond_batch(), torch.randn(5, 2), torch.full((5,), 1.0)
    fn = build_guidance("cfg:scale=0", shape=(2,))(pre, cond)
    torch.testing.assert_close(fn(x, sigma), pre(x, sigma, {"vector": torch.zeros(5, 3)}))
    fn = build_guidance(None, shape=(2,))(pre, cond)
    torch.testing.assert_close(fn(x, sigma), pre(x, sigma, cond))


def write_png(path, array):
    Image.fromarray(array).save(path)
    return path


def test_reference_images(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(UsageError, match="cannot read reference image .*bad.png"):
        load_reference(bad, (1, 8, 8))
    with pytest.raises(UsageError, match="does not exist"):
        load_reference(tmp_path / "missing.png", (1, 8, 8))
    big = write_png(tmp_path / "big.png", np.full((16, 16), 255, np.uint8))
    with pytest.raises(UsageError, match="16×16 but the model makes 8×8; resize.*resize=true"):
        load_reference(big, (1, 8, 8))
    ref = load_reference(big, (1, 8, 8), resize=True)
    assert ref.shape == (1, 1, 8, 8) and torch.allclose(ref, torch.ones_like(ref))
    with pytest.raises(UsageError, match="image model"):
        load_reference(big, (2,))
    with pytest.raises(UsageError, match="cannot read reference image"):
        build_guidance(f"content:ckpt=e.safetensors,ref={bad}", shape=(1, 8, 8))


def test_classifier_checkpoint_for_other_data_is_refused(tmp_path):
    from difflab.training.classifier import train_classifier

    torch.set_default_dtype(torch.float32)  # a real float32 net (the fixture restores the dtype)
    path = tmp_path / "clf.safetensors"
    ref = write_png(tmp_path / "ref.png", np.zeros((8, 8), np.uint8))
    digits = {"name": "digits", "size": 8, "split": "train"}
    train_classifier(digits, path, steps=1, batch_size=8, eval_sigmas=(),
                     net={"model_channels": 8, "channel_mult": [1, 2]})  # fmt: skip
    with pytest.raises(UsageError, match=r"\[1, 8, 8\] but the model makes \[1, 16, 16\]"):
        build_guidance(f"classifier:ckpt={path},scale=2", shape=(1, 16, 16))
    with pytest.raises(UsageError, match="not a noise-aware encoder"):
        build_guidance(f"style:ckpt={path},ref={ref}", shape=(1, 8, 8))
    guide = build_guidance(f"classifier:ckpt={path},scale=2,label=3", shape=(1, 8, 8))
    x = torch.randn(2, 1, 8, 8, dtype=torch.float32)
    with torch.inference_mode():
        out = guide(lambda x, s, c: 0 * x, {})(x, torch.ones(2, dtype=torch.float32))
    assert out.shape == x.shape and out.abs().sum() > 0


class HashTextEncoder:
    """Stand-in text encoder: a fixed random unit vector per prompt (seeded by its characters)."""

    name, dim = "hash", 8

    def encode(self, prompts):
        seeds = [sum(map(ord, p)) for p in prompts]
        v = [torch.randn(self.dim, generator=torch.Generator().manual_seed(s)) for s in seeds]
        return {"pooled": F.normalize(torch.stack(v), dim=-1)}  # [N, D]


@pytest.fixture(scope="module")
def enc_path(tmp_path_factory):
    from difflab.data.datasets import DIGIT_NAMES
    from difflab.training.encoder import train_encoder

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        path = tmp_path_factory.mktemp("enc") / "enc.safetensors"
        train_encoder({"name": "digits", "size": 8, "split": "train"}, path,
                      text_encoder=HashTextEncoder(), prompts=[[n] for n in DIGIT_NAMES], steps=1,
                      batch_size=8, eval_sigmas=(), net={"model_channels": 8,
                      "channel_mult": [1, 2]})  # fmt: skip
    finally:
        torch.set_default_dtype(old)
    return path


def test_semantic_terms_with_a_real_encoder_checkpoint(enc_path, tmp_path, monkeypatch):
    """content+structure+style+text from one spec string: loads once, runs in inference mode."""
    import sys
    import types

    torch.set_default_dtype(torch.float32)
    fake_text = types.ModuleType("difflab.conditioning.text_encoder")
    fake_text.load_text_encoder = lambda name: HashTextEncoder()
    monkeypatch.setitem(sys.modules, "difflab.conditioning.text_encoder", fake_text)
    ref = write_png(tmp_path / "ref.png", np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    spec = (f"content:ckpt={enc_path},ref={ref},scale=1+structure:ckpt={enc_path},ref={ref}"
            f"+style:ckpt={enc_path},ref={ref},scale=100,seed=3+text:ckpt={enc_path},scale=2")  # fmt: skip
    guide = build_guidance(spec, shape=(1, 8, 8), prompt="a handwritten seven")
    assert len(guide.terms) == 4
    x, sigma = torch.randn(2, 1, 8, 8), torch.full((2,), 0.8)
    with torch.inference_mode():
        out = guide(lambda x, s, c: 0 * x, {})(x, sigma)
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().sum() > 0
    with pytest.raises(UsageError, match="trained on digits .* makes \\[3, 8, 8\\]"):
        build_guidance(f"content:ckpt={enc_path},ref={ref}", shape=(3, 8, 8))
    HashTextEncoder.dim = 16
    try:
        with pytest.raises(UsageError, match="16-d embeddings but the image encoder makes 8-d"):
            build_guidance(f"text:ckpt={enc_path}", shape=(1, 8, 8), prompt="a seven")
    finally:
        HashTextEncoder.dim = 8


def test_generate_with_built_guidance():
    """generate() binds the chain per batch: cfg scale 1 reproduces unguided samples."""
    from difflab.inference.generate import generate

    pre = tiny_denoiser()[0].float()  # generate() samples in float32
    cond = cond_batch(6)
    run = dict(n=6, batch_size=4, steps=4, sampler="euler", cond=cond)
    unguided = torch.cat(list(generate(pre, (2,), **run)))
    same = torch.cat(list(generate(pre, (2,), guidance=build_guidance("cfg:scale=1", shape=(2,)),
                                   **run)))  # fmt: skip
    torch.testing.assert_close(same, unguided, rtol=1e-5, atol=1e-4)  # float32, batch of 2B rows
    spec = "cfg:scale=3+dynamic_threshold:p=0.9"
    guided = torch.cat(list(generate(pre, (2,), guidance=build_guidance(spec, shape=(2,)), **run)))
    assert guided.shape == (6, 2) and not torch.allclose(guided, unguided)
