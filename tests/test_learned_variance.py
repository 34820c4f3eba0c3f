"""Improved DDPM: the learned-variance head in the ddpm sampler, the hybrid loss, the loss-aware
timestep sampler and its bit-exact resume, the cosine schedule against its definition."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from difflab import train
from difflab.core.config import load_config
from difflab.core.errors import UsageError
from difflab.core.precond import Precond
from difflab.core.schedules import build_schedule, discretize
from difflab.inference.generate import generate, plain
from difflab.samplers.base import sample
from difflab.storage import checkpoint as ckpt
from difflab.training.importance import LossSecondMomentSampler
from difflab.training.objectives import build_objective
from difflab.training.objectives.denoising import denoising_loss
from difflab.training.objectives.hybrid import hybrid_loss


def smooth_fn(x, sigma):
    return torch.tanh(x) * 0.8


def with_head(raw: float):
    """smooth_fn plus a constant raw variance head r (v = (r + 1)/2)."""
    fn = lambda x, sigma: smooth_fn(x, sigma)  # noqa: E731
    fn.with_extra = lambda x, sigma: (smooth_fn(x, sigma), torch.full_like(x, raw))
    return fn


@pytest.mark.parametrize("raw,fixed", [(1.0, "large"), (-1.0, "small")])
def test_learned_head_at_v1_and_v0_reproduces_fixed_large_and_small(raw, fixed):
    sigmas = discretize(build_schedule({"name": "cosine", "T": 1000}), "uniform", 20).float()
    x = torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    outs = []
    for fn, opts in ((with_head(raw), {}), (smooth_fn, {"variance": fixed})):
        g = torch.Generator().manual_seed(1)
        noise = lambda like, g=g: torch.randn(like.shape, generator=g)  # noqa: E731
        outs.append(sample("ddpm", fn, x, sigmas, noise=noise, **opts))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    mid = with_head(0.0)  # v = ½ is a different sampler
    g = torch.Generator().manual_seed(1)
    other = sample("ddpm", mid, x, sigmas, noise=lambda like: torch.randn(like.shape, generator=g))
    assert not torch.allclose(other, outs[1])


def test_learned_variance_without_a_head_is_a_clear_error():
    sigmas = discretize(build_schedule("cosine"), "uniform", 5)
    with pytest.raises(UsageError, match="learned-variance head"):
        sample("ddpm", smooth_fn, torch.zeros(1, 2), sigmas, variance="learned")


class TinyNet(nn.Module):
    """1×1 conv F_θ with 2·C output channels (mean half, variance-head half)."""

    def __init__(self, c: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c, 2 * c, 1)

    def forward(self, x, c_noise, cond):
        return self.conv(x) + 0.001 * c_noise.reshape(-1, 1, 1, 1)


def _lv_denoiser():
    torch.manual_seed(0)
    return Precond(TinyNet(), build_schedule({"name": "cosine", "T": 100}), "eps", 1.0, True)


def test_generate_uses_the_models_head():
    denoiser = _lv_denoiser()
    assert hasattr(plain(denoiser, {}), "with_extra")
    (out,) = generate(denoiser, (1, 4, 4), n=2, sampler="ddpm", steps=5, discretization="uniform")
    (small,) = generate(denoiser, (1, 4, 4), n=2, sampler={"name": "ddpm", "variance": "small"},
                        steps=5, discretization="uniform")  # fmt: skip
    assert out.shape == (2, 1, 4, 4) and not torch.allclose(out, small)


def test_hybrid_loss_adds_a_vlb_term_that_trains_only_the_variance_head():
    denoiser = _lv_denoiser()
    g = torch.Generator().manual_seed(0)
    x0 = (torch.randint(0, 256, (6, 1, 4, 4), generator=g) / 127.5 - 1).float()
    t = torch.tensor([0, 1, 5, 50, 98, 99])
    sigma, noise = denoiser.schedule.sigmas[t].float(), torch.randn(x0.shape, generator=g)
    simple = denoising_loss(denoiser, x0, sigma, noise)
    torch.testing.assert_close(hybrid_loss(denoiser, x0, sigma, noise, vlb_weight=0.0), simple)
    vlb = hybrid_loss(denoiser, x0, sigma, noise) - simple  # [B]
    assert torch.isfinite(vlb).all() and (vlb > 0).all()
    vlb.sum().backward()
    w = denoiser.net.conv.weight.grad[:, :, 0, 0]  # [2C, C]: rows 0 = mean, 1 = variance head
    assert w[0].abs().max() == 0 and w[1].abs().max() > 0


def test_hybrid_loss_needs_a_learned_variance_model():
    denoiser = Precond(TinyNet(), build_schedule("cosine"), "eps", 1.0, False)
    with pytest.raises(UsageError, match="learned_variance"):
        build_objective({"name": "hybrid"}, denoiser)
    with pytest.raises(UsageError, match="no option"):
        build_objective({"name": "denoising", "vlb_weight": 1.0}, denoiser)
    with pytest.raises(UsageError, match="sigma_density"):
        build_objective({"name": "hybrid"}, _lv_denoiser(), density={"name": "lognormal"})


def _filled(T=5, H=10, seed=0):
    table = torch.rand(T, H, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    table = table * torch.arange(1, T + 1, dtype=torch.float64)[:, None]  # [T, H] synthetic losses
    sampler = LossSecondMomentSampler(T, H, uniform_prob=0.0)
    for j in range(H):
        sampler.update(torch.arange(T), table[:, j])
    return sampler, table


def test_importance_probs_are_proportional_to_the_rms_loss_history():
    sampler = LossSecondMomentSampler(5, 10, uniform_prob=0.0)
    sampler.update(torch.arange(4), torch.ones(4))
    assert torch.equal(sampler.probs(), torch.full((5,), 0.2, dtype=torch.float64))  # not filled
    sampler, table = _filled()
    rms = table.pow(2).mean(1).sqrt()
    torch.testing.assert_close(sampler.probs(), rms / rms.sum())
    sampler.update(torch.tensor([2]), torch.tensor([100.0]))  # oldest value of t = 2 drops out
    assert sampler.history[2, -1] == 100 and torch.equal(sampler.history[2, :-1], table[2, 1:])


def test_importance_reweighted_loss_is_unbiased():
    sampler, table = _filled()
    loss_t = table.mean(1)  # [T] the loss at each t
    p = sampler.probs()
    exact = (p * loss_t / (len(p) * p)).sum()  # E_p[w·L_t], w = 1/(T·p_t)
    torch.testing.assert_close(exact, loss_t.mean())
    t, w = sampler.sample(200_000, torch.Generator().manual_seed(1))
    estimate = (w * loss_t[t]).mean()
    se = (w * loss_t[t]).std() / math.sqrt(len(t))
    assert abs(estimate - loss_t.mean()) < 4 * se


def _tiny_cfg(*extra):
    return load_config("digits", [
        "model.net={name='unet', model_channels=16, channel_mult=[1, 2], num_res_blocks=1, "
        "attention_resolutions=[4]}", "train.batch_size=8", "train.log_every=1",
        "model.schedule={name='cosine', T=4}", "model.parameterization='eps'",
        "model.learned_variance=true", "train.loss={name='hybrid'}",
        "train.sigma_density={name='importance', history=1}", *extra,
    ])  # fmt: skip


def test_resume_with_importance_sampling_and_hybrid_loss_is_bit_exact(tmp_path):
    straight = train(_tiny_cfg("train.steps=4"), tmp_path / "a")
    train(_tiny_cfg("train.steps=2"), tmp_path / "b")
    resumed = train(_tiny_cfg("train.steps=4"), tmp_path / "b", resume=True)
    state = ckpt.load_tensors(ckpt.state_path(straight))[0]
    assert state["importance.counts"].min() == 1  # history filled: non-uniform p_t was used
    for which in (ckpt.load_tensors, lambda p: ckpt.load_tensors(ckpt.state_path(p))):
        ta, tb = which(straight)[0], which(resumed)[0]
        assert ta.keys() == tb.keys()
        for k in ta:
            assert torch.equal(ta[k], tb[k]), k


def test_cosine_schedule_follows_its_definition():
    """ᾱ_t = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s)·π/2), β_t ≤ 0.999 (Nichol & Dhariwal Eq. 17)."""
    T, s = 1000, 0.008
    sched = build_schedule({"name": "cosine", "T": T})
    f = np.cos((np.arange(T + 1) / T + s) / (1 + s) * np.pi / 2) ** 2
    unclipped = np.nonzero(1 - f[1:] / f[:-1] < 0.999)[0]
    np.testing.assert_allclose(sched.alphas_cumprod.numpy()[unclipped], (f[1:] / f[0])[unclipped],
                               rtol=1e-10)  # fmt: skip
    assert sched.betas.max().item() <= 0.999
