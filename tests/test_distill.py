"""Few-step generation: the consistency boundary, progressive / CD / CT losses against the Gaussian
oracle, the iCT curriculum, consistency sampling (one step, multistep `ts`, a mask hook)."""

import math

import pytest
import torch
from torch import nn

from difflab.core.errors import UsageError
from difflab.core.precond import Precond
from difflab.core.schedules import build_schedule, discretize
from difflab.samplers.base import sample
from difflab.training.objectives import build_objective
from difflab.training.objectives.base import Batch
from difflab.training.objectives.consistency import ict_discretization
from difflab.training.objectives.progressive import progressive_target
from difflab.training.objectives.teacher import solver
from oracles import GaussianData, float64_default, perfect_denoiser


class RandomNet(nn.Module):
    """Any network output at all: F = noise."""

    def forward(self, x, c_noise, cond):
        return 100 * torch.randn_like(x)


class ExactConsistencyNet(nn.Module):
    """F making f_θ(x, σ) = the exact ODE map from σ to σ_min of GaussianData (tests/oracles.py)."""

    def __init__(self, data: GaussianData, schedule):
        super().__init__()
        self.data, self.schedule = data, schedule
        self.anchor = nn.Parameter(torch.zeros(()))  # the target network copies it
        self.precond = None

    def forward(self, x_in, c_noise, cond):
        sigma = (4 * c_noise).exp()  # edm schedule: c_noise = ¼ ln σ
        s = self.precond.scalings(sigma)
        b = [-1] + [1] * (x_in.ndim - 1)
        x = x_in / s.c_in.reshape(b)
        f = self.data.mu + (x - self.data.mu) * (
            (self.data.s**2 + self.schedule.sigma_min**2) / (self.data.s**2 + sigma**2)
        ).sqrt().reshape(b)
        c_out = s.c_out.reshape(b)
        safe = torch.where(c_out == 0, torch.ones_like(c_out), c_out)
        return torch.where(c_out == 0, torch.zeros_like(x), (f - s.c_skip.reshape(b) * x) / safe)


def exact_consistency(data: GaussianData) -> Precond:
    schedule = build_schedule("edm")
    net = ExactConsistencyNet(data, schedule)
    model = Precond(net, schedule, "consistency")
    net.__dict__["precond"] = model  # not a submodule: no cycle in the module tree
    return model


@pytest.mark.parametrize("schedule", ["edm", "cosine", "ve"])
def test_boundary_f_at_sigma_min_is_identity_for_any_network(schedule):
    model = Precond(RandomNet(), build_schedule(schedule), "consistency")
    x = torch.randn(4, 3, 8, 8)
    sigma = torch.full((4,), model.schedule.sigma_min)
    torch.testing.assert_close(model(x, sigma), x, rtol=0, atol=0)
    assert not torch.allclose(model(x, sigma * 2), x)  # the network matters above σ_min


def test_progressive_target_one_ddim_step_equals_two_teacher_steps():
    with float64_default():
        data = GaussianData()
        teacher = perfect_denoiser(data, build_schedule("cosine"), "v")
        z = 3.0 * torch.randn(16, 5)
        grid = torch.tensor([3.0, 0.7, 0.2], dtype=torch.float64)
        two = sample("ddim", teacher, z, grid)  # the teacher: σ → σ' → σ''
        b = torch.ones(16)
        target = progressive_target(teacher, z, grid[0] * b, grid[1] * b, grid[2] * b)
        one = sample("ddim", lambda x, s: target, z, grid[[0, 2]])  # the student's one step
        torch.testing.assert_close(one, two, rtol=1e-12, atol=1e-12)
        last = progressive_target(teacher, z, grid[1] * b, grid[2] * b, 0 * b)  # σ'' = 0
        torch.testing.assert_close(last, sample("ddim", teacher, z, torch.tensor([0.7, 0.2, 0])))


def teacher_of(data: GaussianData) -> Precond:
    """The exact EDM denoiser of `data`, without the oracle's precond ↔ net module cycle."""
    teacher = perfect_denoiser(data, build_schedule("edm"), "edm")
    teacher.net.__dict__["precond"] = teacher.net._modules.pop("precond")
    return teacher


def _batch(x0, seed=0):
    return Batch(x0, None, torch.Generator().manual_seed(seed))


def _cd_loss(data, solver, N, metric="l2"):
    teacher = teacher_of(data)
    objective = build_objective(
        {"name": "consistency_distillation", "teacher": teacher, "solver": solver, "N": N,
         "init": False, "metric": metric},
        exact_consistency(data),
    )  # fmt: skip
    x0 = data.sample((256, 1, 4, 4), torch.Generator().manual_seed(1))
    return objective.loss(_batch(x0), 0)[0].mean().item()


def test_cd_loss_vanishes_for_the_exact_consistency_function():
    """The loss is the teacher step's local error squared: O(h⁴) for Euler, O(h⁶) for Heun."""
    with float64_default():
        data = GaussianData(mu=0.3, s=0.5)
        euler = [_cd_loss(data, "euler", n) for n in (36, 72)]
        heun = [_cd_loss(data, "heun", n) for n in (36, 72)]
        wrong = build_objective(
            {"name": "consistency_distillation", "teacher": teacher_of(data), "init": False},
            Precond(RandomNet(), build_schedule("edm"), "consistency"),
        )  # fmt: skip
        bad = wrong.loss(_batch(data.sample((256, 1, 4, 4))), 0)[0].mean().item()
    assert heun[0] < euler[0] / 10 and euler[0] < 1e-6 * bad, (heun, euler, bad)
    assert 10 < euler[0] / euler[1] < 25, euler  # 2⁴ per halving of h
    assert 40 < heun[0] / heun[1] < 100, heun  # 2⁶


def test_dpm_solver_teacher_step_equals_the_samplers_single_step():
    """One CD teacher step with DPM-Solver-2 = the `dpm_solver` sampler's one second-order step
    over [σ, √(σσ'), σ'] on the exact Gaussian denoiser, and is far closer to the exact ODE than
    Euler; its CD loss for the exact consistency function falls as O(h⁶), like Heun's."""
    with float64_default():
        data = GaussianData(mu=0.3, s=0.5)
        teacher = teacher_of(data)
        x = 2.0 * torch.randn(16, 1, 4, 4, generator=torch.Generator().manual_seed(0))
        b = torch.ones(16)
        sigma, sigma_next = 1.0, 0.7
        step = solver("dpm_solver")(teacher, x, sigma * b, sigma_next * b)
        grid = torch.tensor([sigma, math.sqrt(sigma * sigma_next), sigma_next])
        torch.testing.assert_close(step, sample("dpm_solver", teacher, x, grid), rtol=1e-12,
                                   atol=1e-12)  # fmt: skip
        exact = data.ode_solution(x, sigma, sigma_next)
        euler = solver("euler")(teacher, x, sigma * b, sigma_next * b)
        assert (step - exact).abs().max() < (euler - exact).abs().max() / 5
        dpm = [_cd_loss(data, "dpm_solver", n) for n in (36, 72)]
    assert 40 < dpm[0] / dpm[1] < 100, dpm  # 2⁶ per halving of h


def test_ct_loss_vanishes_for_the_exact_consistency_function_of_a_point_mass():
    """With one data point the one-sample score (x − x0)/σ² is exact: CT = CD with the exact ODE."""
    with float64_default():
        data = GaussianData(mu=0.3, s=0.0)
        model = exact_consistency(data)
        objective = build_objective({"name": "consistency_training", "K": 100}, model)
        x0 = torch.full((64, 1, 4, 4), 0.3)
        loss, logs = objective.loss(_batch(x0), 99)
        assert logs["N"] == 1281
        assert loss.abs().max().item() < 1e-8
        wrong = build_objective(
            {"name": "consistency_training", "K": 100, "metric": "l2"},
            Precond(RandomNet(), build_schedule("edm"), "consistency"),
        )
        assert wrong.loss(_batch(x0), 0)[0].mean() > 1


def test_ict_curriculum_matches_the_paper():
    """K = 400k, s0 = 10, s1 = 1280: K' = ⌊400000/8⌋ = 50000, N doubles from 11 to 1281."""
    K = 400_000
    assert [ict_discretization(k, K) for k in (0, 49_999, 50_000, 100_000, 349_999)] == [
        11, 11, 21, 41, 641,
    ]  # fmt: skip
    assert ict_discretization(350_000, K) == ict_discretization(K - 1, K) == 1281
    for k in range(0, K, 9_973):  # the formula itself
        k_prime = math.floor(K / (math.log2(1280 // 10) + 1))
        assert ict_discretization(k, K) == min(10 * 2 ** (k // k_prime), 1280) + 1


def test_consistency_objectives_refuse_other_parameterizations():
    model = Precond(RandomNet(), build_schedule("edm"), "edm")
    with pytest.raises(UsageError, match="parameterization 'consistency'"):
        build_objective({"name": "consistency_training", "K": 10}, model)
    with pytest.raises(UsageError, match="`K`"):
        build_objective({"name": "consistency_training"}, Precond(
            RandomNet(), build_schedule("edm"), "consistency"))  # fmt: skip


def test_multistep_with_ts_sigma_max_equals_one_step():
    model = exact_consistency(GaussianData())
    schedule = model.schedule
    one = discretize(schedule, "few_step", 1)
    ts = discretize(schedule, {"name": "few_step", "ts": [schedule.sigma_max]}, 1)
    torch.testing.assert_close(ts, one, rtol=0, atol=0)
    x = schedule.sigma_max * torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    a = sample("consistency", model, x, one)
    b = sample("consistency", model, x, ts)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    indexed = discretize(schedule, {"name": "few_step", "ts": [0, 22], "N": 40}, 2)
    assert indexed[0] == schedule.sigma_max and 0 < indexed[1] < 5 and indexed[2] == 0


def test_one_and_multistep_consistency_samples_follow_the_gaussian():
    with float64_default():
        data = GaussianData(mu=0.3, s=0.5)
        model = exact_consistency(data)
        g = torch.Generator().manual_seed(0)
        for steps in (1, 3):
            sigmas = discretize(model.schedule, "few_step", steps)
            x = sigmas[0] * torch.randn(20000, 1, 1, 1, generator=g)
            out = sample("consistency", model, x, sigmas,
                         noise=lambda t: torch.randn(t.shape, generator=g))  # fmt: skip
            assert abs(out.mean().item() - 0.3) < 0.02 and abs(out.std().item() - 0.5) < 0.02


def test_zero_shot_inpainting_with_a_mask_hook():
    """Song et al. 2023, Alg. 4: after each step the known pixels are replaced by y noised to σ."""
    model = exact_consistency(GaussianData())
    sigmas = discretize(model.schedule, "few_step", 4)
    g = torch.Generator().manual_seed(0)
    y = torch.rand(2, 1, 4, 4, generator=g)  # the known image
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2] = 1  # left half known
    calls = []

    def hook(x, i, sigma_next):
        calls.append(float(sigma_next))
        return mask * (y + sigma_next.to(x) * torch.randn_like(x)) + (1 - mask) * x

    x = sigmas[0] * torch.randn(2, 1, 4, 4, generator=g)
    out = sample("consistency", model, x, sigmas, step_hook=hook)
    assert calls == sigmas[1:].tolist()
    torch.testing.assert_close(out * mask, y * mask)  # known pixels kept exactly
    assert torch.isfinite(out).all() and not torch.allclose(out * (1 - mask), y * (1 - mask))


def test_consistency_grid_ending_above_zero_returns_the_noised_state():
    """The sampler contract's grid ending above 0, driven by the exact consistency function:
    x = f(...) + √(σ_end² − σ_min²)·z ~ N(μ, s² + σ_end²)."""
    with float64_default():
        data = GaussianData(mu=0.3, s=0.5)
        model = exact_consistency(data)
        g = torch.Generator().manual_seed(0)
        sigmas = torch.tensor([80.0, 3.0, 0.5], dtype=torch.float64)
        x = 80 * torch.randn(40000, 1, 1, 1, generator=g)
        out = sample("consistency", model, x, sigmas, sigma_min=model.schedule.sigma_min,
                     noise=lambda t: torch.randn(t.shape, generator=g))  # fmt: skip
        assert abs(out.mean().item() - 0.3) < 0.02
        assert abs(out.var().item() / (0.5**2 + 0.5**2) - 1) < 0.03
