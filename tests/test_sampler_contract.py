"""The sampler contract (difflab.samplers.base), checked over every registered sampler on the
Gaussian oracle N(μ, s²): x enters at sigmas[0] (any σ), grids may end above 0, reversible
samplers integrate increasing grids (inversion), step_hook sees every step and may replace x, and
learned variance is a declared capability."""

import inspect

import pytest
import torch

from difflab.core.errors import UsageError
from difflab.core.schedules import build_schedule, discretize
from difflab.guidance.chain import wrap
from difflab.samplers import (
    SAMPLERS,
    require_variance,
    reversible_names,
    sample,
    variance_head,
    with_variance,
)
from oracles import GaussianData, float64_default

DATA = GaussianData(mu=0.3, s=0.5)
# samplers driven by a consistency function f, not a denoiser (meta fn="consistency"): their
# contract is checked with the exact consistency function in tests/test_distill.py
ALL = [n for n in SAMPLERS.names() if SAMPLERS.meta(n).get("fn") != "consistency"]
DETERMINISTIC = [n for n in ALL if not SAMPLERS.meta(n)["stochastic"]]
STOCHASTIC = [n for n in ALL if SAMPLERS.meta(n)["stochastic"]]
REVERSIBLE = reversible_names()
# options that make a sampler sample the reverse SDE (ddim is deterministic by default); the
# Langevin corrector of pc mixes within each p_σ, which keeps the marginals but forgets x, so the
# conditional law given x is checked without it (its marginal is checked below and in
# test_samplers_multistep)
SDE_OPTS = {"ddim": {"eta": 1.0}}
JOINT_OPTS = {**SDE_OPTS, "pc": {"corrector": "none"}}
SHAPE = (20, 1024)  # many dimensions per sample: pc's Langevin step uses per-sample norms


@pytest.fixture(autouse=True)
def float64():
    with float64_default():
        yield


def karras(sigma_min: float, sigma_max: float, steps: int, to_zero: bool = True):
    """Decreasing Karras grid σ_max → σ_min, with a final 0 unless `to_zero` is False."""
    grid = discretize(build_schedule("edm"), {"name": "karras", "sigma_min": sigma_min,
                                              "sigma_max": sigma_max}, steps)  # fmt: skip
    return grid if to_zero else grid[:-1]


def seeded(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return lambda like: torch.randn(like.shape, generator=g, dtype=like.dtype)


def noisy(sigma: float, shape=SHAPE, seed: int = 0):
    """(x0, x0 + σε): data from the oracle and its noised version at σ."""
    g = torch.Generator().manual_seed(seed)
    x0 = DATA.sample(shape, g)
    return x0, x0 + sigma * torch.randn(shape, generator=g, dtype=torch.float64)


def ode_error(name: str, x: torch.Tensor, sigmas: torch.Tensor, **opts) -> float:
    """Max |sampler − exact probability-flow ODE solution| from sigmas[0] to sigmas[-1]."""
    out = sample(name, DATA.denoise, x.clone(), sigmas, **opts)
    exact = DATA.ode_solution(x, sigmas[0].item(), sigmas[-1].item())
    return (out - exact).abs().max().item()


def converges(coarse: float, fine: float, bound: float) -> bool:
    """Error on the finer grid is small and smaller (or already at solver tolerance)."""
    return fine < bound and (fine < 0.7 * coarse or fine < 1e-4)


# ---- (a) x enters at sigmas[0], whatever it is ------------------------------------------------


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_sampler_from_an_intermediate_sigma_follows_the_exact_ode(name):
    """SDEdit: x = x0 + σε at σ = 2 (not σ_max) is carried along the exact ODE solution."""
    _, x = noisy(2.0, shape=(2000,))
    coarse, fine = (ode_error(name, x, karras(0.002, 2.0, n)) for n in (20, 40))
    assert converges(coarse, fine, 0.08), (coarse, fine)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_sampler_from_an_intermediate_sigma_samples_the_posterior(name):
    """From x = x0 + σ₁ε the reverse SDE draws x0 | x ~ N(D(x; σ₁), s²σ₁²/(s² + σ₁²)): regressing
    the output on x gives slope s²/(s² + σ₁²) and that residual spread (a sampler that ignored x,
    or took it for another σ, would not)."""
    s2, sigma1 = DATA.s**2, 2.0
    _, x = noisy(sigma1)
    out = sample(name, DATA.denoise, x, karras(0.002, sigma1, 200), noise=seeded(),
                 **JOINT_OPTS.get(name, {}))  # fmt: skip
    xc, oc = x - x.mean(), out - out.mean()
    slope = (xc * oc).sum() / (xc * xc).sum()
    resid = (oc - slope * xc).std()
    assert abs(out.mean().item() - DATA.mu) < 0.01
    assert abs(slope.item() / (s2 / (s2 + sigma1**2)) - 1) < 0.1, slope
    assert abs(resid.item() / (s2 * sigma1**2 / (s2 + sigma1**2)) ** 0.5 - 1) < 0.035, resid


# ---- (d) a grid ending above 0 returns the state at sigmas[-1] --------------------------------


@pytest.mark.parametrize("name", ALL)
def test_grid_ending_above_zero_returns_the_state_at_that_sigma(name):
    """From pure noise at σ = 10 to σ_end = 0.5: mean μ, variance s² + σ_end² (no final denoise);
    deterministic samplers also match the exact ODE solution at σ_end."""
    sigma_end = 0.5
    stochastic = SAMPLERS.meta(name)["stochastic"]
    _, x = noisy(10.0, seed=3)
    sigmas = karras(sigma_end, 10.0, 200 if stochastic else 40, to_zero=False)
    out = sample(name, DATA.denoise, x, sigmas, noise=seeded(), **SDE_OPTS.get(name, {}))
    assert abs(out.mean().item() - DATA.mu) < 0.02
    assert abs(out.var().item() / (DATA.s**2 + sigma_end**2) - 1) < 0.05, out.var()
    if not stochastic:
        exact = DATA.ode_solution(x, 10.0, sigma_end)
        assert (out - exact).abs().max().item() < 0.05


# ---- (b) step_hook: once per step, and a returned tensor replaces x ---------------------------


class Recorder:
    """A DenoiseFn logging every call, and a step_hook logging (i, σ_next) that returns `y` at
    step `k` (None otherwise); `after` is the first fn call that follows the replacement."""

    def __init__(self, k: int | None = None, y: torch.Tensor | None = None):
        self.k, self.y, self.steps, self.calls, self.after = k, y, [], [], None

    def fn(self, x, sigma):
        self.calls.append((x, sigma))
        if self.after is None and self.k is not None and len(self.steps) > self.k:
            self.after = (x, sigma)
        return DATA.denoise(x, sigma)

    def hook(self, x, i, sigma_next):
        assert x.shape == SMALL and sigma_next.ndim == 0
        self.steps.append((i, sigma_next.item()))
        return self.y if i == self.k else None


SMALL = (6, 3)


def run(name, sigmas, rec: Recorder, x, **kw):
    return sample(name, rec.fn, x.clone(), sigmas, noise=torch.zeros_like, step_hook=rec.hook,
                  **kw)  # fmt: skip


@pytest.mark.parametrize("name", ALL)
def test_step_hook_sees_every_step_and_none_changes_nothing(name):
    sigmas = karras(0.01, 5.0, 8)
    x = 5.0 * torch.randn(SMALL, generator=torch.Generator().manual_seed(0))
    rec, seen = Recorder(), []
    out = sample(name, rec.fn, x.clone(), sigmas, noise=seeded(), step_hook=rec.hook,
                 callback=lambda info: seen.append(info["i"]))  # fmt: skip
    assert rec.steps == [(i, sigmas[i + 1].item()) for i in range(8)]
    assert seen == list(range(8))
    torch.testing.assert_close(out, sample(name, DATA.denoise, x.clone(), sigmas, noise=seeded()),
                               rtol=0, atol=0)  # fmt: skip


@pytest.mark.parametrize("name", ALL)
def test_step_hook_replacement_is_where_the_next_step_starts(name):
    """A tensor returned at step k is the x the sampler continues from (its next network call, and
    the final result when k is the last step); the callback sees it."""
    sigmas = karras(0.01, 5.0, 8)
    x = 5.0 * torch.randn(SMALL, generator=torch.Generator().manual_seed(0))
    y = torch.full(SMALL, 0.7)
    rec = Recorder(k=3, y=y)
    seen = {}
    run(name, sigmas, rec, x, callback=lambda info: seen.setdefault(info["i"], info["x"]))
    assert seen[3] is y
    assert rec.after is not None and torch.equal(rec.after[0], y)
    assert torch.all(rec.after[1] == sigmas[4])
    last = run(name, sigmas, Recorder(k=7, y=y), x)
    assert torch.equal(last, y)
    with pytest.raises(UsageError, match="shaped like x"):
        sample(name, DATA.denoise, x, sigmas, step_hook=lambda x, i, s: x[:1])


@pytest.mark.parametrize("name", ALL)
def test_step_hook_replacement_equals_sampling_from_it(name):
    """Samplers without a history (noise off) equal a fresh `sample` from the replacement on the
    remaining grid; multistep ones (history=True) replace only the state and keep past outputs,
    so replacing x by an equal tensor (a new object) changes nothing."""
    sigmas = karras(0.01, 5.0, 40)
    k = 10
    x = 5.0 * torch.randn(SMALL, generator=torch.Generator().manual_seed(0))
    y = DATA.mu + 2.0 * torch.randn(SMALL, generator=torch.Generator().manual_seed(1))
    out = run(name, sigmas, Recorder(k=k, y=y), x)
    plain = run(name, sigmas, Recorder(), x)
    assert not torch.allclose(out, plain)
    if not SAMPLERS.meta(name).get("history"):
        fresh = sample(name, DATA.denoise, y.clone(), sigmas[k + 1 :], noise=torch.zeros_like)
        torch.testing.assert_close(out, fresh, rtol=1e-12, atol=1e-12)
    else:
        rec = Recorder(k=k)
        rec.hook = lambda x, i, sigma_next: x.clone() if i == k else None
        same = run(name, sigmas, rec, x)
        torch.testing.assert_close(same, plain, rtol=1e-12, atol=1e-12)


# ---- (c) increasing grids: inversion for reversible samplers, a clear error for the others ----


@pytest.mark.parametrize("name", REVERSIBLE)
def test_reversible_sampler_inverts_and_reconstructs(name):
    """DDIM-style inversion x0 (at σ = 0.01) → σ = 10 follows the exact ODE, and sampling back on
    the reversed grid reconstructs x0; both errors shrink with the number of steps."""
    x0, _ = noisy(0.0, shape=(2000,))
    inv, rec = [], []
    for n in (20, 40):
        up_grid = karras(0.01, 10.0, n, to_zero=False).flip(0)  # increasing
        inv.append(ode_error(name, x0, up_grid) / 10)
        latent = sample(name, DATA.denoise, x0.clone(), up_grid)
        back = sample(name, DATA.denoise, latent, up_grid.flip(0))
        rec.append((back - x0).abs().max().item())
    assert converges(*inv, 0.2), inv
    assert converges(*rec, 0.2), rec


@pytest.mark.parametrize("name", sorted(set(ALL) - set(REVERSIBLE)))
def test_non_reversible_sampler_refuses_an_increasing_grid(name):
    up_grid = torch.tensor([0.1, 1.0, 10.0])
    with pytest.raises(UsageError, match=f"cannot integrate an increasing.*{REVERSIBLE[0]}"):
        sample(name, DATA.denoise, torch.zeros(SMALL), up_grid)


@pytest.mark.parametrize("name", ALL)
def test_every_sampler_refuses_non_monotone_grids_and_inversion_from_zero(name):
    x = torch.zeros(SMALL)
    with pytest.raises(UsageError, match="strictly decreasing .* or strictly increasing"):
        sample(name, DATA.denoise, x, torch.tensor([5.0, 1.0, 2.0, 0.0]))
    with pytest.raises(UsageError, match="must start above 0"):
        sample(name, DATA.denoise, x, torch.tensor([0.0, 1.0, 10.0]))


def test_inversion_needs_the_noise_options_at_zero():
    assert {"euler", "ddim", "heun", "dpmpp_2m", "dpm_solver"} <= set(REVERSIBLE)
    up_grid = torch.tensor([0.1, 1.0, 10.0])
    for name, opts in (("ddim", {"eta": 0.5}), ("heun", {"s_churn": 1.0})):
        with pytest.raises(UsageError, match=f"set `{next(iter(opts))}`=0"):
            sample(name, DATA.denoise, torch.zeros(SMALL), up_grid, **opts)
    x = torch.randn(SMALL)
    torch.testing.assert_close(sample("ddim", DATA.denoise, x, up_grid, eta=0.0),
                               sample("euler", DATA.denoise, x, up_grid))  # fmt: skip


# ---- (e) learned variance is a declared capability ---------------------------------------------


def head(x, sigma):
    return DATA.denoise(x, sigma), torch.zeros_like(x)  # v = ½: between β and β̃


@pytest.mark.parametrize("name", ALL)
def test_learned_variance_without_the_capability_is_refused(name):
    sigmas = karras(0.01, 5.0, 4)
    with pytest.raises(UsageError, match="learned-variance head|takes no option 'variance'"):
        sample(name, DATA.denoise, torch.zeros(SMALL), sigmas, variance="learned")


@pytest.mark.parametrize("name", ALL)
def test_declaring_learned_variance_changes_only_samplers_that_read_it(name):
    sigmas = karras(0.01, 5.0, 6)
    x = 5.0 * torch.randn(SMALL, generator=torch.Generator().manual_seed(0))
    fn = with_variance(DATA.denoise, head)
    with_head = sample(name, fn, x.clone(), sigmas, noise=seeded())
    without = sample(name, DATA.denoise, x.clone(), sigmas, noise=seeded())
    if "variance" in inspect.signature(SAMPLERS.get(name)).parameters:  # ddpm
        assert not torch.allclose(with_head, without)  # the head is read by default
        fixed = sample(name, fn, x.clone(), sigmas, noise=seeded(), variance="small")
        torch.testing.assert_close(fixed, without, rtol=0, atol=0)
    else:
        torch.testing.assert_close(with_head, without, rtol=0, atol=0)


def test_learned_variance_helpers_and_forwarding():
    denoise = DATA.denoise
    assert variance_head(denoise) is None and with_variance(denoise, None) is denoise
    with pytest.raises(UsageError, match="learned-variance head"):
        require_variance(denoise)
    fn = with_variance(denoise, head)
    x, sigma = torch.randn(SMALL), torch.full((SMALL[0],), 0.5)
    assert require_variance(fn) is head and torch.equal(fn(x, sigma), DATA.denoise(x, sigma))
    doubled = wrap(fn, lambda x, sigma, d: 2 * d)  # a guidance term forwards the head
    d, v = require_variance(doubled)(x, sigma)
    torch.testing.assert_close(d, 2 * DATA.denoise(x, sigma))
    assert torch.equal(v, torch.zeros_like(x))
    assert variance_head(wrap(DATA.denoise, lambda x, sigma, d: d)) is None
