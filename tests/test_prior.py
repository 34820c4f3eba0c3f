"""The unCLIP diffusion prior (Ramesh et al. 2022, §2.2): x0 parameterization, causal sequence,
deterministic CFG dropout, and a prior that learns a known linear text → image-embedding map."""

import math

import pytest
import torch
import torch.nn.functional as F

from difflab.conditioning.base import Conditioner
from difflab.core.precond import Precond
from difflab.core.schedules import build_schedule
from difflab.data.datasets import Dataset
from difflab.evaluation.prior import prior_cosine
from difflab.inference.pipeline import Pipeline
from difflab.inference.unclip import pipeline_decoder, prior_embeddings, unclip_sample
from difflab.nets.base import NETS
from difflab.nets.mlp import MLP
from difflab.nets.prior import FIXED
from difflab.training.ema import EMA
from difflab.training.engine import Engine, fit
from difflab.training.objectives import Batch, build_objective

D, DT, K = 8, 8, 48  # image- and text-embedding dims (one space, as CLIP), captions


def _net(**kw):
    return NETS.build({"name": "prior", "in_channels": D, "out_channels": D, "width": 32,
                       "depth": 2, "heads": 4, "cond_vector_dim": DT, **kw})  # fmt: skip


class LinearCaptions(Conditioner):
    """Class k's caption "caption k" has text embedding T[k]; the image embedding of class k is
    normalize(W·T[k]) (the known linear map)."""

    takes, needs_user_input = ("prompts",), True

    def __init__(self, p_uncond: float = 0.0, seed: int = 0):
        super().__init__(p_uncond)
        g = torch.Generator().manual_seed(seed)
        self.text = F.normalize(torch.randn(K, DT, generator=g), dim=-1)  # [K, Dt]
        self.W = torch.randn(D, DT, generator=g)  # [D, Dt]
        self.dataset = "default"

    def net_options(self):
        return {"cond_vector_dim": DT}

    def image_embeddings(self) -> torch.Tensor:
        return F.normalize(self.text @ self.W.T, dim=-1)  # [K, D]

    def from_labels(self, labels, generator=None):
        return {"vector": self.text[labels], "labels": labels}

    def class_prompts(self, labels, class_names=None):
        return [f"caption {int(k)}" for k in labels]

    def encode_prompts(self, prompts):
        return {"vector": self.text[torch.tensor([int(p.split()[1]) for p in prompts])]}

    def build(self, request):
        prompts = [request.prompts[i % len(request.prompts)] for i in range(request.n)]
        return self.encode_prompts(prompts), {"prompts": prompts}


def _prior(p_uncond=0.0, **kw):
    denoiser = Precond(_net(**kw), build_schedule({"name": "cosine", "T": 1000}), "x0")
    denoiser.conditioner = LinearCaptions(p_uncond)
    return denoiser


CONFIG = {"model": {"shape": [D], "codec": {"name": "identity"}},
          "sample": {"sampler": {"name": "ddim", "eta": 0.0}, "steps": 16,
                     "discretization": {"name": "uniform", "spacing": "trailing"}}}  # fmt: skip


def test_x0_parameterization_the_denoiser_returns_the_net_output_exactly():
    denoiser = _prior()
    x, sigma = torch.randn(5, D), torch.tensor([0.01, 0.5, 1.0, 10.0, 200.0])
    cond = {"vector": torch.randn(5, DT)}
    s = denoiser.scalings(sigma)
    expected = denoiser.net(s.c_in[:, None] * x, s.c_noise, cond)
    assert torch.equal(s.c_skip, torch.zeros(5)) and torch.equal(s.c_out, torch.ones(5))
    torch.testing.assert_close(s.c_in, 1 / (1 + sigma**2).sqrt())  # VP: a(σ) = 1/√(1+σ²)
    assert torch.equal(denoiser(x, sigma, cond), expected)


def test_causal_mask_a_position_sees_only_earlier_ones():
    torch.manual_seed(0)
    net = _net(cond_token_dim=5, max_tokens=7).eval()
    for p in net.parameters():  # zero-initialised branches would hide any leak: randomise them
        torch.nn.init.normal_(p, std=0.3)
    x, c_noise = torch.randn(2, D), torch.rand(2)
    cond = {"vector": torch.randn(2, DT), "tokens": torch.randn(2, 7, 5),
            "tokens_mask": torch.ones(2, 7, dtype=torch.bool)}
    base = net.sequence(x, c_noise, cond)  # [B, 7 + 4, W]
    assert base.shape[1] == 7 + FIXED
    changed = dict(cond, tokens=cond["tokens"].clone())
    changed["tokens"][:, 4] += 1.0  # token 4
    out = net.sequence(x, c_noise, changed)
    torch.testing.assert_close(out[:, :4], base[:, :4], rtol=0, atol=0)
    assert (out[:, 4:] - base[:, 4:]).abs().amax(-1).min() > 1e-4  # it and every later one
    out = net.sequence(x + 1.0, c_noise, cond)  # the noised embedding, second to last
    torch.testing.assert_close(out[:, :-2], base[:, :-2], rtol=0, atol=0)
    assert (out[:, -2:] - base[:, -2:]).abs().amax(-1).min() > 1e-4
    # a dropped (masked) token is seen by no other position
    masked = dict(cond, tokens_mask=torch.tensor([[1, 1, 0, 1, 1, 1, 1]] * 2, dtype=torch.bool))
    a = net.sequence(x, c_noise, masked)
    b = net.sequence(x, c_noise, dict(masked, tokens=cond["tokens"].index_fill(1, torch.tensor([2]), 9.0)))
    keep = [i for i in range(7 + FIXED) if i != 2]
    torch.testing.assert_close(a[:, keep], b[:, keep])


def _losses(seed: int, p_uncond: float = 0.5):
    torch.manual_seed(0)
    denoiser = _prior(p_uncond)
    objective = build_objective({"name": "prior"}, denoiser)
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(16) % K
    x0 = math.sqrt(D) * denoiser.conditioner.image_embeddings()[labels]
    seen = []
    denoiser.net.register_forward_pre_hook(lambda m, args: seen.append(args[2]["vector"].clone()))
    per_sample, _ = objective.loss(Batch(x0, labels, g), 0)
    return per_sample, seen[0], denoiser.conditioner.text[labels]


def test_cfg_dropout_is_deterministic_under_a_fixed_seed():
    loss_a, cond_a, text = _losses(seed=3)
    loss_b, cond_b, _ = _losses(seed=3)
    assert torch.equal(loss_a, loss_b) and torch.equal(cond_a, cond_b)
    dropped = (cond_a == 0).all(1)  # [B] a dropped caption is the null (zero) embedding
    assert torch.equal(cond_a[~dropped], text[~dropped]) and 0 < dropped.sum() < 16
    _, cond_c, _ = _losses(seed=4)
    assert not torch.equal((cond_c == 0).all(1), dropped)  # another seed, another mask


def _train_linear(steps: int = 200):
    torch.manual_seed(0)
    denoiser = _prior(p_uncond=0.0)  # every loss term reducible to 0 (dropout has a floor)
    objective = build_objective({"name": "prior"}, denoiser, density="discrete")
    train = torch.arange(K)[: K - 8]
    x0 = math.sqrt(D) * denoiser.conditioner.image_embeddings()  # data std ~1: √D · unit

    class Loader:
        g = torch.Generator().manual_seed(1)

        def __next__(self):
            labels = train[torch.randint(len(train), (128,), generator=self.g)]
            return x0[labels], labels

    opt = torch.optim.AdamW(denoiser.parameters(), lr=4e-3)
    losses = []
    engine = Engine(objective, opt, generator=torch.Generator().manual_seed(2),
                    ema=EMA(denoiser, 0.9))  # fmt: skip
    fit(engine, Loader(), steps, callback=lambda r: losses.append(r["loss"]))
    return engine.model, losses, x0


def test_a_prior_learns_a_known_linear_text_to_image_embedding_map():
    model, losses, x0 = _train_linear()
    assert sum(losses[-20:]) / 20 < 0.02 * sum(losses[:5]) / 5  # loss → ~0
    prior = Pipeline(model, CONFIG)
    held_out = torch.arange(K - 8, K)  # captions never trained on
    data = Dataset(x0[held_out], held_out, None, "points")
    scores = prior_cosine(prior, data, seed=0)
    assert scores["n"] == 8 and scores["prior"] > 0.97, scores
    assert scores["baseline"] < 0.5 < scores["prior"]  # the text embedding is another space
    # ignoring the caption (the mean embedding of the trained captions) scores far lower
    mean = F.normalize(x0[: K - 8], dim=-1).mean(0)  # [D]
    with_mean = prior_cosine(prior, data, seed=0, mean=mean)
    assert with_mean["prior"] == scores["prior"] and with_mean["mean"] < scores["prior"] - 0.3
    # one step from pure noise predicts the conditional mean too
    sigma = torch.full((8,), 80.0)
    one = model(80.0 * torch.randn(8, D), sigma, {"vector": model.conditioner.text[held_out]})
    assert F.cosine_similarity(one, x0[held_out]).mean() > 0.95


def test_unclip_chain_prompts_to_prior_to_decoder_seeded_per_sample():
    torch.manual_seed(0)
    denoiser = _prior()
    torch.nn.init.normal_(denoiser.net.out.weight)  # zero-initialised: give it an output
    prior = Pipeline(denoiser, CONFIG)
    calls = []

    def decode(embeddings, n, seed):
        calls.append((embeddings, n, seed))
        return torch.zeros(n, 3, 4, 4, dtype=torch.uint8)

    out = unclip_sample(prior, ["caption 1", "caption 2"], decode, n=3, seed=5, prior_scale=2.0)
    (embeddings, n, seed), = calls
    assert out.images.shape == (3, 3, 4, 4) and n == 3 and seed == 5
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(3))  # renormalised
    assert out.prompts == ["caption 1", "caption 2", "caption 1"]
    alone = prior_embeddings(prior, ["caption 2"], n=1, seed=6, scale=2.0)  # sample 1 = seed 6
    torch.testing.assert_close(alone[0], embeddings[1])


class EmbeddingVector(Conditioner):
    """A decoder's conditioner that takes the request's `embeddings` as its "vector" slot."""

    takes, needs_user_input = ("embeddings",), True

    def build(self, request):
        return {"vector": request.embeddings}, {}


def test_pipeline_decoder_conditions_a_vector_model_on_the_embeddings():
    torch.manual_seed(0)
    net = MLP(in_channels=2, out_channels=2, hidden=16, depth=1, cond_vector_dim=D)
    for p in net.parameters():  # zero-initialised branches: randomise so the condition shows
        torch.nn.init.normal_(p, std=0.5)
    denoiser = Precond(net, build_schedule("edm"), "edm")
    denoiser.conditioner = EmbeddingVector()
    decoder = Pipeline(denoiser,
                       {"model": {"shape": [2], "codec": {"name": "identity"}},
                        "sample": {"sampler": {"name": "euler"}, "steps": 4}})  # fmt: skip
    decode = pipeline_decoder(decoder, scale=3.0)
    e = F.normalize(torch.randn(2, D), dim=-1)
    a = decode(e, 2, 0)
    assert a.shape == (2, 2) and torch.equal(a, decode(e, 2, 0))
    assert not torch.equal(a, decode(e.flip(0), 2, 0))  # the embedding conditions the result
    with pytest.raises(Exception, match="image embeddings for n=3"):
        decode(e, 3, 0)
