"""σ-space core: schedules, parameterizations and losses against closed forms."""

import math

import numpy as np
import pytest
import torch
from requires import require_module

from difflab.core.errors import UsageError
from difflab.core.precond import PARAMETERIZATIONS
from difflab.core.registry import Registry
from difflab.core.schedules import build_schedule, check_sigmas, discretize, respaced_timesteps
from difflab.training.densities import sample_sigmas
from difflab.training.objectives.denoising import denoising_loss
from oracles import GaussianData, perfect_denoiser


@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


COMBOS = [
    (p, s)
    for p in PARAMETERIZATIONS.names()
    for s in ("linear", "cosine", "scaled_linear", "ve", "edm", "flow")
]


def _sigmas(schedule, n=7):
    lo, hi = math.log(schedule.sigma_min) + 0.1, math.log(schedule.sigma_max) - 0.1
    return torch.linspace(lo, hi, n).exp()


@pytest.mark.parametrize("param,sched", COMBOS)
def test_perfect_network_gives_exact_denoiser(param, sched):
    schedule = build_schedule(sched)
    data = GaussianData()
    denoiser = perfect_denoiser(data, schedule, param)
    sigma = _sigmas(schedule)
    x = data.sample((7, 1, 4, 4)) + sigma.view(-1, 1, 1, 1) * torch.randn(7, 1, 4, 4)
    torch.testing.assert_close(denoiser(x, sigma), data.denoise(x, sigma), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("param,sched", COMBOS)
def test_point_mass_data_gives_zero_loss(param, sched):
    schedule = build_schedule(sched)
    data = GaussianData(mu=0.7, s=0.0)
    denoiser = perfect_denoiser(data, schedule, param)
    sigma = _sigmas(schedule)
    x0 = torch.full((7, 3), 0.7)
    loss = denoising_loss(denoiser, x0, sigma, torch.randn(7, 3))
    assert loss.shape == (7,)
    assert loss.abs().max() < 1e-12


@pytest.mark.parametrize("param", PARAMETERIZATIONS.names())
def test_loss_of_perfect_network_is_mmse_over_c_out_squared(param):
    """E‖D* − x0‖² = σ²s²/(s²+σ²) per dimension, so the native loss is that over c_out²."""
    schedule = build_schedule("edm")
    data = GaussianData(s=0.5)
    denoiser = perfect_denoiser(data, schedule, param)
    sigma = torch.full((20000,), 0.8)
    g = torch.Generator().manual_seed(0)
    x0 = data.sample((20000, 1), g)
    loss = denoising_loss(denoiser, x0, sigma, torch.randn(20000, 1, generator=g)).mean()
    c_out = denoiser.scalings(sigma[:1]).c_out
    expected = 0.8**2 * 0.25 / (0.25 + 0.8**2) / c_out**2
    assert abs(loss.item() / expected.item() - 1) < 0.03


def test_cosine_schedule_matches_paper_definition():
    """ᾱ_t = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s)·π/2) where β is not clipped."""
    T, s = 1000, 0.008
    sched = build_schedule({"name": "cosine", "T": T})
    t = np.arange(1, T + 1)
    f = lambda t: np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    expected = f(t) / f(0)
    unclipped = sched.betas.numpy() < 0.999
    np.testing.assert_allclose(sched.alphas_cumprod.numpy()[unclipped][:-1],
                               expected[unclipped][:-1], rtol=1e-10)  # fmt: skip
    assert sched.betas.max().item() == pytest.approx(0.999)


def test_linear_schedule_endpoints_and_sigma():
    sched = build_schedule("linear")
    assert sched.betas[0].item() == pytest.approx(1e-4)
    assert sched.betas[-1].item() == pytest.approx(0.02)
    abar = torch.cumprod(1 - sched.betas, 0)
    torch.testing.assert_close(sched.sigmas, ((1 - abar) / abar).sqrt())


@pytest.mark.parametrize("sched", ["linear", "cosine", "ve", "edm", "flow"])
def test_sigma_t_round_trip(sched):
    schedule = build_schedule(sched)
    sigma = _sigmas(schedule, 50)
    torch.testing.assert_close(schedule.t_to_sigma(schedule.sigma_to_t(sigma)), sigma)


def test_discrete_sigma_to_t_is_integer_on_the_table_and_interpolates_log_sigma():
    sched = build_schedule("cosine")
    t = torch.arange(0, 1000, 37)
    torch.testing.assert_close(sched.sigma_to_t(sched.sigmas[t]), t.double())
    mid = (sched.log_sigmas[10] + sched.log_sigmas[11]).div(2).exp()
    assert sched.sigma_to_t(mid).item() == pytest.approx(10.5)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [10, 50, 333])
def test_respacing_matches_diffusers(spacing, steps):
    diffusers = require_module("diffusers")
    sch = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
    sch.set_timesteps(steps)
    np.testing.assert_array_equal(respaced_timesteps(1000, steps, spacing), sch.timesteps.numpy())


def test_karras_grid():
    sched = build_schedule("edm")
    sigmas = discretize(sched, {"name": "karras", "rho": 7.0}, 10)
    assert len(sigmas) == 11 and sigmas[-1] == 0
    assert sigmas[0].item() == pytest.approx(80) and sigmas[-2].item() == pytest.approx(0.002)
    ramp = (sigmas[:-1] ** (1 / 7)).numpy()
    np.testing.assert_allclose(np.diff(ramp), np.diff(ramp)[0])  # uniform in σ^{1/ρ}


def test_uniform_full_grid_is_every_timestep():
    sched = build_schedule({"name": "linear", "T": 100})
    sigmas = discretize(sched, "uniform", 100)
    torch.testing.assert_close(sigmas[:-1], sched.sigmas.flip(0))


def test_bad_grids_and_names():
    with pytest.raises(UsageError, match="strictly decreasing"):
        check_sigmas(torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(UsageError, match="steps must be"):
        discretize(build_schedule("edm"), "karras", 0)
    with pytest.raises(UsageError, match="choose one of: .*cosine"):
        build_schedule("cosin")
    with pytest.raises(UsageError, match="takes no option 'Tee'"):
        build_schedule({"name": "cosine", "Tee": 5})
    with pytest.raises(UsageError, match="exceeds"):
        discretize(build_schedule({"name": "linear", "T": 100}), "uniform", 200)


def test_sigma_densities():
    g = torch.Generator().manual_seed(0)
    sched = build_schedule("cosine")
    s = sample_sigmas("discrete", sched, 1000, g)
    assert set(s.tolist()) <= set(sched.sigmas.float().tolist())
    ln = sample_sigmas({"name": "lognormal", "p_mean": -1.2, "p_std": 1.2}, sched, 100000, g).log()
    assert abs(ln.mean().item() + 1.2) < 0.02 and abs(ln.std().item() - 1.2) < 0.02
    with pytest.raises(UsageError, match="discrete schedule"):
        sample_sigmas("discrete", build_schedule("edm"), 4, g)


def test_registry_rejects_duplicates_and_lists_choices():
    reg = Registry("thing")
    reg.register("a")(lambda: 1)
    with pytest.raises(RuntimeError):
        reg.register("a")(lambda: 2)
    with pytest.raises(UsageError, match="choose one of: a"):
        reg.get("b")
