"""Samplers: identities between them, posterior formulas, convergence orders, per-sample seeds."""

import math

import numpy as np
import pytest
import torch

from difflab.core.errors import UsageError
from difflab.core.precond import Precond
from difflab.core.schedules import build_schedule, discretize
from difflab.inference.generate import SeededNoise, generate
from difflab.nets.base import NETS
from difflab.samplers.base import SAMPLERS, sample
from oracles import GaussianData, float64_default, perfect_denoiser, sample_from_gaussian_oracle


@pytest.fixture(autouse=True)
def float64():
    with float64_default():
        yield


def smooth_fn(x, sigma):
    """An arbitrary smooth stand-in for a denoiser."""
    s = sigma.view(-1, *([1] * (x.ndim - 1)))
    return torch.tanh(0.7 * x) / (1 + 0.1 * s) + 0.05 * s.sin()


def fixed_noise(seed):
    return SeededNoise([seed + i for i in range(4)])


def test_ddim_eta0_equals_euler():
    sigmas = discretize(build_schedule("cosine"), "uniform", 20)
    x = 80 * torch.randn(4, 3, 2, 2)
    a = sample("ddim", smooth_fn, x, sigmas, eta=0.0)
    b = sample("euler", smooth_fn, x, sigmas)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("eta", [0.3, 1.0])
def test_ddim_eta_equals_euler_ancestral(eta):
    sigmas = discretize(build_schedule("linear"), "uniform", 25)
    x = 100 * torch.randn(4, 5)
    a = sample("ddim", smooth_fn, x, sigmas, eta=eta, noise=fixed_noise(1))
    b = sample("euler_ancestral", smooth_fn, x, sigmas, eta=eta, noise=fixed_noise(1))
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("variance", ["small", "large"])
def test_ddpm_step_is_the_posterior(variance):
    """One step t → t−1 equals q(x_{t−1} | x_t, x̂0) of Ho et al. (2020, Eq. 6–7) in native space."""
    sched = build_schedule("linear")
    t = 500
    sigmas = torch.stack([sched.sigmas[t], sched.sigmas[t - 1]])
    beta, abar, abar_prev = sched.betas[t], sched.alphas_cumprod[t], sched.alphas_cumprod[t - 1]
    x_native = torch.randn(4, 6)
    x = x_native / abar.sqrt()  # σ-space
    z = torch.randn(4, 6)
    out = sample("ddpm", smooth_fn, x, sigmas, variance=variance, noise=lambda like: z)
    x0_hat = smooth_fn(x, sigmas[0].expand(4))
    mean = (abar_prev.sqrt() * beta / (1 - abar) * x0_hat
            + (1 - beta).sqrt() * (1 - abar_prev) / (1 - abar) * x_native)  # fmt: skip
    var = beta * (1 - abar_prev) / (1 - abar) if variance == "small" else beta
    torch.testing.assert_close(out * abar_prev.sqrt(), mean + var.sqrt() * z)


def test_ddpm_last_step_returns_the_denoised_mean():
    sigmas = torch.tensor([0.5, 0.0])
    x = torch.randn(4, 3)
    out = sample("ddpm", smooth_fn, x, sigmas, noise=lambda like: torch.ones_like(like))
    torch.testing.assert_close(out, smooth_fn(x, sigmas[0].expand(4)))


ODE_ORDERS = {name: m["order"] for name, m in ((n, SAMPLERS.meta(n)) for n in SAMPLERS.names())}


@pytest.mark.parametrize("name", ["euler", "heun", "ddim"])
def test_ode_sampler_converges_at_declared_order(name):
    """Error vs the exact Gaussian ODE solution falls as N^-order (log-log slope)."""
    data = GaussianData(mu=0.3, s=0.5)
    fn = lambda x, s: data.denoise(x, s)  # noqa: E731
    sched = build_schedule("edm")
    x1 = 10.0 * torch.randn(64)
    exact = data.ode_solution(x1, 10.0, 0.05)
    errors = []
    for n in (16, 32, 64):
        grid = discretize(sched, {"name": "karras", "sigma_min": 0.05, "sigma_max": 10.0}, n)[:-1]
        errors.append((sample(name, fn, x1.clone(), grid) - exact).abs().max().item())
    slope = -np.polyfit(np.log([16, 32, 64]), np.log(errors), 1)[0]
    assert abs(slope - ODE_ORDERS[name]) < 0.25, (errors, slope)


STOCHASTIC = [
    ("ddpm", {"variance": "small"}, "cosine", "uniform", 1000),
    ("ddpm", {"variance": "large"}, "cosine", "uniform", 1000),
    ("ddim", {"eta": 1.0}, "linear", "uniform", 1000),
    ("euler_ancestral", {}, "edm", "karras", 1000),
    ("heun", {"s_churn": 40.0}, "edm", "karras", 60),
]


@pytest.mark.parametrize("name,opts,sched,disc,steps", STOCHASTIC)
def test_stochastic_sampler_reaches_the_data_distribution(name, opts, sched, disc, steps):
    """Driven by the exact denoiser, samples follow N(μ, s²); a wrong variance would not."""
    out = sample_from_gaussian_oracle(name, discretize(build_schedule(sched), disc, steps), **opts)
    assert abs(out.mean().item() - 0.3) < 0.02
    assert abs(out.std().item() / 0.5 - 1) < 0.025, out.std()


def test_sample_rejects_bad_options():
    sigmas = torch.tensor([1.0, 0.0])
    x = torch.zeros(2, 2)
    with pytest.raises(UsageError, match="takes no option 'eta'"):
        sample("euler", smooth_fn, x, sigmas, eta=0.5)
    with pytest.raises(UsageError, match="eta must be >= 0"):
        sample("ddim", smooth_fn, x, sigmas, eta=-1.0)
    with pytest.raises(UsageError, match="choose one of"):
        sample("dpm9", smooth_fn, x, sigmas)
    with pytest.raises(UsageError, match="decreasing"):
        sample("euler", smooth_fn, x, torch.tensor([0.0, 1.0]))
    with pytest.raises(UsageError, match=r"order must be an integer in 1\.\.3"):
        sample("dpm_solver", smooth_fn, x, sigmas, order=4)
    with pytest.raises(UsageError, match=r"order must be an integer in 1\.\.8"):
        sample("lms", smooth_fn, x, sigmas, order=0)


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_same_seed_same_image_whatever_the_batch_size(name):
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    net = NETS.build({"name": "unet", "model_channels": 16, "channel_mult": [1, 2],
                      "attention_resolutions": [4], "num_res_blocks": 1},
                     in_channels=1, out_channels=1, resolution=8)  # fmt: skip
    for p in net.parameters():  # undo zero-init so the output depends on the input
        p.data.add_(0.02 * torch.randn_like(p))
    denoiser = Precond(net, build_schedule("cosine"), "eps").eval()
    kw = {"n": 5, "seed": 7, "sampler": name, "steps": 6, "discretization": "uniform"}
    one = torch.cat(list(generate(denoiser, (1, 8, 8), batch_size=5, **kw)))
    two = torch.cat(list(generate(denoiser, (1, 8, 8), batch_size=2, **kw)))
    # float32 convolutions may round differently per batch size; an adaptive solver may then
    # accept a different step, hence a tolerance relative to the output's scale
    tol = 1e-3 * one.abs().max().item()
    torch.testing.assert_close(one, two, rtol=1e-3, atol=tol)
    shifted = torch.cat(list(generate(denoiser, (1, 8, 8), batch_size=5, **{**kw, "seed": 8})))
    torch.testing.assert_close(one[1:], shifted[:-1], rtol=1e-3, atol=tol)
    assert not torch.allclose(one[0], one[1])


def test_perfect_denoiser_with_heun_samples_the_gaussian():
    data = GaussianData(mu=-0.2, s=0.7)
    denoiser = perfect_denoiser(data, build_schedule("edm"), "edm")
    out = torch.cat(list(generate(denoiser, (1, 4, 4), n=512, batch_size=256, steps=30)))
    assert abs(out.mean().item() + 0.2) < 0.02 and abs(out.std().item() / 0.7 - 1) < 0.04
    assert math.isfinite(out.sum().item())
