"""Multistep and score-SDE samplers: convergence orders, output distributions, diffusers parity,
and the exponential / log-SNR / quadratic discretisations."""

import math

import numpy as np
import pytest
import torch
from requires import require_module

from difflab.core.errors import UsageError
from difflab.core.schedules import build_schedule, discretize
from difflab.samplers.base import SAMPLERS, sample
from oracles import GaussianData, float64_default, sample_from_gaussian_oracle


@pytest.fixture(autouse=True)
def float64():
    with float64_default():
        yield


def convergence_slope(name, opts, grid_of, sigma_max=10.0, sigma_min=0.05, ns=(16, 32, 64)):
    """Log-log slope of the max error vs the exact Gaussian ODE solution over step counts ns."""
    data = GaussianData(mu=0.3, s=0.5)
    x1 = sigma_max * torch.randn(64, generator=torch.Generator().manual_seed(0))
    exact = data.ode_solution(x1, sigma_max, sigma_min)
    errors = []
    for n in ns:
        out = sample(name, data.denoise, x1.clone(), grid_of(n, sigma_max, sigma_min), **opts)
        errors.append((out - exact).abs().max().item())
    return -np.polyfit(np.log(ns), np.log(errors), 1)[0], errors


def karras_grid(n, hi, lo):
    spec = {"name": "karras", "sigma_min": lo, "sigma_max": hi}
    return discretize(build_schedule("edm"), spec, n)[:-1]


def uniform_sigma_grid(n, hi, lo):
    return torch.linspace(hi, lo, n)


# (sampler, options, expected slope, tolerance, grid, σ_max, σ_min, step counts).
# Multistep methods warm up with lower orders; those few steps cost part of an order over these
# step counts, hence the wider tolerance for the 4-step methods. PLMS and iPNDM use equal-step
# Adams–Bashforth weights, exact to 4th order only on grids uniform in σ: on a Karras grid they
# are 2nd order (checked below), which is why `lms` integrates the Lagrange basis instead.
CONVERGENCE = [
    ("lms", {}, 4, 0.5, karras_grid, 10.0, 0.05, (32, 64, 128)),
    ("lms", {"order": 2}, 2, 0.25, karras_grid, 10.0, 0.05, (16, 32, 64)),
    ("plms", {}, 4, 0.75, uniform_sigma_grid, 5.0, 1.0, (16, 32, 64)),
    ("ipndm", {}, 4, 0.75, uniform_sigma_grid, 5.0, 1.0, (16, 32, 64)),
    ("pndm", {}, 4, 0.75, uniform_sigma_grid, 5.0, 1.0, (16, 32, 64)),
    ("plms", {}, 2, 0.3, karras_grid, 10.0, 0.05, (16, 32, 64)),
    ("ipndm", {}, 2, 0.3, karras_grid, 10.0, 0.05, (16, 32, 64)),
    ("unipc", {"lower_order_final": False}, 3, 0.25, karras_grid, 10.0, 0.05, (32, 64, 128)),
    ("unipc", {"variant": "bh1", "lower_order_final": False}, 3, 0.25, karras_grid, 10.0, 0.05,
     (32, 64, 128)),
    ("unipc", {"order": 3, "lower_order_final": False}, 4, 0.3, karras_grid, 10.0, 0.05,
     (16, 32, 64)),
    ("deis", {}, 2, 0.25, karras_grid, 10.0, 0.05, (16, 32, 64)),
    ("deis", {"order": 3}, 3, 0.25, karras_grid, 10.0, 0.05, (32, 64, 128)),
]  # fmt: skip


@pytest.mark.parametrize("name,opts,order,tol,grid_of,hi,lo,ns", CONVERGENCE)
def test_multistep_sampler_converges_at_its_order(name, opts, order, tol, grid_of, hi, lo, ns):
    slope, errors = convergence_slope(name, opts, grid_of, hi, lo, ns)
    assert abs(slope - order) < tol, (errors, slope)


@pytest.mark.parametrize("name", ["lms", "plms", "pndm", "ipndm", "unipc", "deis"])
def test_declared_order_is_the_default_methods_order(name):
    expected = {"lms": 4, "plms": 4, "pndm": 4, "ipndm": 4, "unipc": 3, "deis": 2}[name]
    meta = SAMPLERS.meta(name)
    assert meta["order"] == expected and meta["stochastic"] is False


@pytest.mark.parametrize("tol", [1e-4, 1e-7])
def test_ode_adaptive_hits_the_exact_solution_within_tolerance(tol):
    data = GaussianData(mu=0.3, s=0.5)
    x1 = 10.0 * torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    info = []
    grid = torch.tensor([10.0, 1.0, 0.05])
    out = sample("ode_adaptive", data.denoise, x1, grid, rtol=tol, atol=tol, callback=info.append)
    err = (out - data.ode_solution(x1, 10.0, 0.05)).abs().max().item()
    assert err < 10 * tol, err
    assert [i["i"] for i in info] == [0, 1] and 0 < info[0]["nfe"] < info[1]["nfe"]
    assert err > 1e-3 * tol  # a real tolerance, not an accidental exact solve


def test_ode_adaptive_steps_each_sample_alone_and_ends_with_the_denoiser():
    data = GaussianData(mu=0.3, s=0.5)
    x1 = 10.0 * torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    grid = torch.tensor([10.0, 0.1, 0.0])
    full = sample("ode_adaptive", data.denoise, x1, grid)
    part = sample("ode_adaptive", data.denoise, x1[2:4], grid)
    torch.testing.assert_close(full[2:4], part, rtol=0, atol=0)
    mid = data.ode_solution(x1, 10.0, 0.1)
    torch.testing.assert_close(full, data.denoise(mid, torch.full((6,), 0.1)), rtol=0, atol=1e-4)


# ---- stochastic samplers reach N(μ, s²) -------------------------------------------------------

SDE_CASES = [
    ("pc", {"sde": "ve", "predictor": "reverse_diffusion"}, "ve"),
    ("pc", {"sde": "vp", "predictor": "reverse_diffusion"}, "linear"),
    ("pc", {"sde": "subvp", "predictor": "euler_maruyama"}, "linear"),
    ("reverse_diffusion", {"sde": "ve"}, "ve"),
    ("reverse_diffusion", {"sde": "vp"}, "cosine"),
    ("euler_maruyama", {"sde": "ve"}, "ve"),
    ("euler_maruyama", {"sde": "subvp"}, "linear"),
]


@pytest.mark.parametrize("name,opts,sched", SDE_CASES)
def test_sde_sampler_reaches_the_data_distribution(name, opts, sched):
    """Driven by the exact denoiser, samples follow N(μ, s²); a wrong variance would not. The
    Langevin step size uses per-sample norms, so samples have many dimensions (1024) for the
    norms to concentrate; with 16 dimensions the state-dependent step inflates the std by 14%."""
    sigmas = discretize(build_schedule(sched), "exponential" if sched == "ve" else "uniform", 250)
    out = sample_from_gaussian_oracle(name, sigmas, shape=(64, 1024), **opts)
    assert abs(out.mean().item() - 0.3) < 0.01
    assert abs(out.std().item() / 0.5 - 1) < 0.025, out.std()


def test_sde_samplers_reject_unknown_choices():
    x, sigmas = torch.zeros(2, 2), torch.tensor([1.0, 0.0])
    with pytest.raises(UsageError, match="choose one of: ve, vp, subvp"):
        sample("pc", lambda x, s: x, x, sigmas, sde="ddpm")
    with pytest.raises(UsageError, match="choose one of"):
        sample("pc", lambda x, s: x, x, sigmas, predictor="heun")
    with pytest.raises(UsageError, match="bh1, bh2"):
        sample("unipc", lambda x, s: x, x, sigmas, variant="bh3")


# ---- parity with diffusers --------------------------------------------------------------------


def eps_model(x_native, t):
    """A fixed smooth ε-model of the native input and the timestep diffusers passes."""
    return torch.tanh(0.5 * x_native) * (1 + float(t) / 1000)


def sigma_space_denoiser(sigmas, timesteps):
    """x̂0 = x − σ·ε(x/√(1+σ²), t) with t the diffusers timestep of that σ (looked up exactly)."""
    table = {float(s): t for s, t in zip(sigmas, timesteps)}

    def fn(x, sigma):  # sigma [B], all equal
        s = sigma[0].item()
        return x - s * eps_model(x / math.sqrt(1 + s**2), table[s])

    return fn


def run_diffusers(scheduler, x_native, model_input_scaled=False):
    """The usual diffusers loop on a float64 sample; diffusers builds some of its own tensors in
    the default dtype (UniPC's linalg.solve fails on float64), so that stays float32 here."""
    x = x_native.clone()
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        for t in scheduler.timesteps:
            inp = scheduler.scale_model_input(x, t) if model_input_scaled else x
            x = scheduler.step(eps_model(inp, t), t, x).prev_sample
    finally:
        torch.set_default_dtype(old)
    return x


def rel_error(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def start_noise():
    return torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("steps", [10, 25])
def test_lms_matches_diffusers(steps):
    """LMS runs in σ-space already: the model sees x/√(σ²+1) and diffusers' fractional timestep
    (linspace spacing; σ interpolated linearly in t), so the denoiser looks both up per σ."""
    diffusers = require_module("diffusers")
    sched = diffusers.LMSDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                           beta_end=0.012)  # fmt: skip
    sched.set_timesteps(steps)
    sigmas = sched.sigmas.double()  # ends in 0
    fn = sigma_space_denoiser(sigmas[:-1], sched.timesteps.tolist())
    x = start_noise() * sigmas[0]
    ref = run_diffusers(sched, x, model_input_scaled=True)
    assert rel_error(sample("lms", fn, x, sigmas), ref) < 1e-4


@pytest.mark.parametrize("alpha_to_one", [True, False])
def test_plms_matches_diffusers_pndm(alpha_to_one):
    """PNDMScheduler(skip_prk_steps=True) with "leading" timesteps; its PNDM transfer (Liu et al.
    2022, Eq. 11) is the Euler step in σ-space. With set_alpha_to_one=False the last step ends at
    ᾱ_0, i.e. σ = √((1−ᾱ_0)/ᾱ_0) instead of 0."""
    diffusers = require_module("diffusers")
    sched = diffusers.PNDMScheduler(skip_prk_steps=True, steps_offset=1,
                                    set_alpha_to_one=alpha_to_one)  # fmt: skip
    sched.set_timesteps(20)
    ts = sorted(set(sched.timesteps.tolist()), reverse=True)
    abar = sched.alphas_cumprod.double()
    a_final = 1.0 if alpha_to_one else abar[0].item()
    sigmas = ((1 - abar[ts]) / abar[ts]).sqrt()
    sigmas = torch.cat([sigmas, torch.tensor([math.sqrt((1 - a_final) / a_final)])])
    fn = sigma_space_denoiser(sigmas[:-1], ts)
    x_native = start_noise()
    ref = run_diffusers(sched, x_native)
    out = sample("plms", fn, x_native * (1 + sigmas[0] ** 2).sqrt(), sigmas)
    assert rel_error(out / (1 + sigmas[-1] ** 2).sqrt(), ref) < 1e-4


@pytest.mark.parametrize("alpha_to_one", [True, False])
def test_pndm_matches_diffusers_pndm_with_runge_kutta_warm_up(alpha_to_one):
    """PNDMScheduler(skip_prk_steps=False): 3 pseudo Runge–Kutta steps (12 evaluations, half steps
    at t − T/(2N)), then PLMS; difflab's `pndm` with those half-step σs gives the same sample."""
    diffusers = require_module("diffusers")
    sched = diffusers.PNDMScheduler(skip_prk_steps=False, steps_offset=1,
                                    set_alpha_to_one=alpha_to_one)  # fmt: skip
    steps = 20
    sched.set_timesteps(steps)
    ts = sorted(set(sched._timesteps.tolist()), reverse=True)  # the N main timesteps
    mids = [t - sched.config.num_train_timesteps // steps // 2 for t in ts[:3]]
    abar = sched.alphas_cumprod.double()
    a_final = 1.0 if alpha_to_one else abar[0].item()

    def sigma_of(t):
        return ((1 - abar[t]) / abar[t]).sqrt()

    sigmas = torch.cat([sigma_of(ts), torch.tensor([math.sqrt((1 - a_final) / a_final)])])
    fn = sigma_space_denoiser([*sigmas[:-1], *sigma_of(mids)], [*ts, *mids])
    x_native = start_noise()
    ref = run_diffusers(sched, x_native)
    assert len(sched.timesteps) == steps + 9  # the warm-up costs 4 evaluations per step
    out = sample("pndm", fn, x_native * (1 + sigmas[0] ** 2).sqrt(), sigmas,
                 sigma_mids=sigma_of(mids).tolist())  # fmt: skip
    assert rel_error(out / (1 + sigmas[-1] ** 2).sqrt(), ref) < 1e-4
    plms = sample("plms", fn, x_native * (1 + sigmas[0] ** 2).sqrt(), sigmas)
    assert rel_error(plms / (1 + sigmas[-1] ** 2).sqrt(), ref) > 1e-3  # the warm-up matters


def native_run(diffusers_scheduler, name, steps, **opts):
    """Run a native-space diffusers scheduler and the difflab sampler on its own σ grid."""
    diffusers_scheduler.set_timesteps(steps)
    sigmas = diffusers_scheduler.sigmas.double()
    fn = sigma_space_denoiser(sigmas[:-1], diffusers_scheduler.timesteps.tolist())
    x_native = start_noise()
    ref = run_diffusers(diffusers_scheduler, x_native)
    out = sample(name, fn, x_native * (1 + sigmas[0] ** 2).sqrt(), sigmas, **opts)
    return out / (1 + sigmas[-1] ** 2).sqrt(), ref


@pytest.mark.parametrize(
    "variant,final", [("bh1", "sigma_min"), ("bh2", "sigma_min"), ("bh2", "zero")]
)
@pytest.mark.parametrize("order,steps", [(2, 10), (3, 20)])
def test_unipc_matches_diffusers(variant, final, order, steps):
    """UniPCMultistepScheduler (data prediction, corrector on, lower_order_final): integer
    timesteps, grid from its σ's. diffusers' bh1 is NaN when the grid ends in σ = 0 (its last
    step computes α_t·B(h)·0 with B(h) = −h = −∞), so bh1 is compared on final_sigmas_type
    "sigma_min"; difflab takes the h → ∞ limit x = D there, as bh2 does in diffusers."""
    diffusers = require_module("diffusers")
    sched = diffusers.UniPCMultistepScheduler(solver_order=order, solver_type=variant,
                                              final_sigmas_type=final)  # fmt: skip
    out, ref = native_run(sched, "unipc", steps, order=order, variant=variant)
    assert rel_error(out, ref) < 1e-4


def test_unipc_bh1_is_finite_at_sigma_zero():
    data = GaussianData(mu=0.3, s=0.5)
    x = 10 * torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    sigmas = discretize(build_schedule("cosine"), "uniform", 8)
    out = sample("unipc", data.denoise, x, sigmas, variant="bh1")
    assert torch.isfinite(out).all() and abs(out.mean().item() - 0.3) < 0.2


@pytest.mark.parametrize("order,steps", [(2, 10), (3, 10), (3, 20), (1, 10)])
def test_deis_matches_diffusers(order, steps):
    """DEISMultistepScheduler ("logrho"): its grid ends at σ(ᾱ_0), not 0, and it lowers the order
    of the last two steps only below 15 steps."""
    diffusers = require_module("diffusers")
    sched = diffusers.DEISMultistepScheduler(solver_order=order)
    out, ref = native_run(sched, "deis", steps, order=order)
    assert rel_error(out, ref) < 1e-4


# ---- discretisations --------------------------------------------------------------------------


@pytest.mark.parametrize("sched", ["edm", "ve", "cosine", "flow"])
def test_exponential_and_log_snr_are_uniform_in_log_sigma(sched):
    schedule = build_schedule(sched)
    exp = discretize(schedule, "exponential", 12)
    lam = discretize(schedule, "log_snr", 12)
    for grid in (exp, lam):
        assert grid[-1] == 0 and (grid[1:] < grid[:-1]).all() and len(grid) == 13
        assert math.isclose(grid[0], schedule.sigma_max, rel_tol=1e-12)
        assert math.isclose(grid[-2], schedule.sigma_min, rel_tol=1e-12)
        steps = grid[:-1].log().diff()
        torch.testing.assert_close(steps, steps[:1].expand(11), rtol=1e-9, atol=0)
    torch.testing.assert_close(exp, lam, rtol=1e-12, atol=0)  # λ = −2 log σ


def test_log_snr_bounds_are_in_lambda():
    grid = discretize(build_schedule("edm"), {"name": "log_snr", "lambda_min": -4.0,
                                              "lambda_max": 2.0}, 4)  # fmt: skip
    torch.testing.assert_close(-2 * grid[:-1].log(), torch.tensor([-4.0, -2.0, 0.0, 2.0]))


def test_quadratic_matches_ddim_quad_on_discrete_schedules():
    schedule = build_schedule("linear")
    grid = discretize(schedule, "quadratic", 20)
    ts = [int(s) for s in np.linspace(0, np.sqrt(1000 * 0.8), 20) ** 2]  # DDIM's "quad" seq
    torch.testing.assert_close(grid, torch.cat([schedule.sigmas[ts[::-1]], torch.zeros(1)]))
    assert (grid[1:] < grid[:-1]).all() and grid[-1] == 0
    with pytest.raises(UsageError, match="repeats timesteps"):
        discretize(schedule, "quadratic", 50)  # DDIM itself would step 0 → 0 here


def test_quadratic_is_quadratic_in_t_on_continuous_schedules():
    schedule = build_schedule("ve")
    grid = discretize(schedule, "quadratic", 9)
    t = schedule.sigma_to_t(grid[:-1])
    torch.testing.assert_close(t.flip(0), torch.linspace(0, 1, 9) ** 2)
    assert grid[-1] == 0 and math.isclose(grid[0], schedule.sigma_max, rel_tol=1e-12)
