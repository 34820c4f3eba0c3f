"""The likelihood's defaults against oracles: the exact trace is exact, Rademacher probes (the
default) have the analytic variance 2·Σ_{i≠j}B_ij² below Gaussian probes' 2·‖B‖_F², and the VLB's
x̂0 clipping (the default) only ever shrinks the KL terms and is recorded in the report."""

import json
import math

import pytest
import torch

from difflab.core.errors import UsageError
from difflab.core.schedules import build_schedule
from difflab.evaluation.likelihood import vlb_grid, vlb_terms
from difflab.evaluation.likelihood_ode import EXACT_MAX_DIMS, ode_log_likelihood
from oracles import CorrelatedGaussian, PixelGaussian

SIGMA_MIN, SIGMA_MAX = 1e-4, 1e6  # the prior N(0, σ²I) ignores μ: error ~ μ/σ_max


def correlated(dims: int = 4) -> CorrelatedGaussian:
    """N(μ, Σ) with eigenvalues spread over [0.05, 1] in a random basis: ∂f/∂x is not diagonal."""
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(dims, dims, generator=g, dtype=torch.float64))
    lam = torch.logspace(math.log10(0.05), 0, dims, dtype=torch.float64)
    return CorrelatedGaussian(torch.linspace(-0.3, 0.4, dims, dtype=torch.float64),
                              q @ torch.diag(lam) @ q.T)  # fmt: skip


def nll_error(data: CorrelatedGaussian, n: int, seed: int, **opts) -> torch.Tensor:
    """Per-sample error [n] of the ODE log-likelihood against the exact log N(x; μ, Σ + σ_min²I)."""
    g = torch.Generator().manual_seed(seed)
    x = data.sample(n, g)  # [n, D]
    prior_var = float(data.lam.mean()) + SIGMA_MAX**2
    out = ode_log_likelihood(data.denoise, x, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX,
                             prior_var=prior_var, rtol=1e-7, atol=1e-7, generator=g,
                             **opts)  # fmt: skip
    return out["log_prob"] - data.log_prob(x, SIGMA_MIN)


def test_exact_trace_matches_the_gaussian_density_tightly():
    err = nll_error(correlated(), 64, seed=0, probe="exact")
    assert err.abs().max() < 2e-5, err.abs().max()


def test_rademacher_default_has_the_analytic_variance_below_gaussian():
    """Probes are drawn once per solve, so the estimate's error is εᵀBε − tr B with B the integral
    of ∂f/∂x: Var = 2·‖B‖_F² for Gaussian ε, 2·Σ_{i≠j} B_ij² for Rademacher ε."""
    data = correlated()
    b = data.divergence_integral(SIGMA_MIN, SIGMA_MAX)  # [D, D]
    sd_gauss = (2 * (b**2).sum()).sqrt().item()
    sd_rad = (2 * (b**2).sum() - 2 * (b.diagonal() ** 2).sum()).sqrt().item()
    assert sd_rad < 0.2 * sd_gauss  # the oracle separates the two clearly
    n = 512
    measured = {"gaussian": nll_error(data, n, seed=2, probe="gaussian").std().item(),
                "default": nll_error(data, n, seed=2).std().item()}  # fmt: skip
    # the sample SD of n draws of εᵀBε is within ±25% of its true SD (well over 4 standard errors)
    assert measured["gaussian"] == pytest.approx(sd_gauss, rel=0.25), (measured, sd_gauss)
    assert measured["default"] == pytest.approx(sd_rad, rel=0.25), (measured, sd_rad)
    assert measured["default"] < 0.3 * measured["gaussian"]


def test_exact_trace_is_refused_above_its_dimension_limit():
    x = torch.zeros(1, EXACT_MAX_DIMS + 1, dtype=torch.float64)
    with pytest.raises(UsageError, match='use `probe="rademacher"`'):
        ode_log_likelihood(lambda x, s: x, x, sigma_min=0.1, sigma_max=1.0, prior_var=2.0,
                           probe="exact")  # fmt: skip
    with pytest.raises(UsageError, match="rademacher, gaussian, exact"):
        ode_log_likelihood(lambda x, s: x, x[:, :4], sigma_min=0.1, sigma_max=1.0, prior_var=2.0,
                           probe="uniform")  # fmt: skip


def _vlb(fn, x0, clip: bool, steps: int = 20) -> dict:
    grid = vlb_grid(build_schedule({"name": "cosine", "T": 1000}), steps)
    return vlb_terms(fn, x0, grid, clip_denoised=clip, generator=torch.Generator().manual_seed(3))


def test_clipping_changes_nothing_when_the_estimate_is_in_range():
    """The exact denoiser of data on [−1, 1] is a posterior mean, so inside the data range."""
    data = PixelGaussian(mu=0.6, s=0.5)  # much mass at the +1 edge
    x0 = data.sample((64, 3), torch.Generator().manual_seed(0))  # [B, D]
    clipped, raw = _vlb(data.denoise, x0, True), _vlb(data.denoise, x0, False)
    for term in ("prior", "kl", "decoder", "total"):
        assert torch.equal(clipped[term], raw[term]), term


def test_clipping_only_shrinks_the_kl_terms_of_a_bad_model():
    """x̂0 = 3·sin(5x), mostly outside [−1, 1]: clipping moves x̂0 towards x0 ∈ [−1, 1]."""
    data = PixelGaussian()
    x0 = data.sample((64, 3), torch.Generator().manual_seed(0))  # [B, D]
    bad = lambda x, sigma: 3 * torch.sin(5 * x)  # noqa: E731
    clipped, raw = _vlb(bad, x0, True), _vlb(bad, x0, False)
    assert torch.equal(clipped["prior"], raw["prior"])
    assert (clipped["kl"] <= raw["kl"] + 1e-12).all()
    assert clipped["total"].mean() < 0.5 * raw["total"].mean(), (clipped["total"].mean(),
                                                                  raw["total"].mean())  # fmt: skip


def test_nll_cli_says_which_vlb_and_trace_it_used(tmp_path, capsys, one_thread):
    """A random-weight cosine ε-model: the report records clip_denoised and the probe, and the
    clipped bound is the smaller one."""
    from tiny_models import save_run

    from difflab.cli.main import main

    run = save_run(tmp_path / "run", None, 8, "model.schedule={name='cosine', T=1000}",
                   "model.parameterization='eps'")  # fmt: skip
    base = ["nll", str(run), "--data", "{name='digits', split='test'}", "-n", "4", "--quiet",
            "--steps", "10", "--rtol", "1e-2", "--atol", "1e-2"]  # fmt: skip
    reports = {}
    for flag in ("--clip-denoised", "--no-clip-denoised"):
        out = tmp_path / f"{flag}.json"
        assert main([*base, flag, "--json", str(out)]) == 0
        reports[flag] = json.loads(out.read_text())
        printed = capsys.readouterr().out
        assert ("x̂0 clipped to [-1, 1]" in printed) == (flag == "--clip-denoised"), printed
        assert "ode: Hutchinson trace, 1 rademacher probe(s)" in printed
    clipped, raw = reports["--clip-denoised"], reports["--no-clip-denoised"]
    assert clipped["vlb"]["options"] == {"steps": 10, "clip_denoised": True}
    assert raw["vlb"]["options"] == {"steps": 10, "clip_denoised": False}
    assert clipped["ode"]["options"]["probe"] == "rademacher"
    assert clipped["vlb"]["kl"]["mean"] <= raw["vlb"]["kl"]["mean"]
    assert clipped["vlb"]["total"]["mean"] < raw["vlb"]["total"]["mean"]
