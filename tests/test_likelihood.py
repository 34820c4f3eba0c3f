"""Likelihood oracles: KL and discretised-Gaussian terms against numerical integration, the ODE
estimate against closed-form Gaussian densities, the VLB as a tightening upper bound."""

import json
import math

import pytest
import torch
from scipy import integrate, stats

from difflab.core.errors import UsageError
from difflab.core.posterior import discretized_gaussian_log_likelihood, normal_kl
from difflab.core.schedules import build_schedule
from difflab.evaluation.likelihood import vlb_grid, vlb_terms
from difflab.evaluation.likelihood_ode import ode_log_likelihood
from oracles import ATOMS, GaussianData, PixelGaussian


@pytest.mark.parametrize(
    "m1,v1,m2,v2", [(0.0, 1.0, 0.0, 1.0), (0.3, 0.2, -0.5, 1.7), (2, 3, 1, 0.5)]
)
def test_normal_kl_matches_numerical_integration(m1, v1, m2, v2):
    p, q = stats.norm(m1, v1**0.5), stats.norm(m2, v2**0.5)
    direct, _ = integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), -30, 30)
    t = lambda v: torch.tensor(float(v), dtype=torch.float64)  # noqa: E731
    ours = normal_kl(t(m1), t(math.log(v1)), t(m2), t(math.log(v2))).item()
    assert ours == pytest.approx(direct, rel=1e-7, abs=1e-10)


@pytest.mark.parametrize("mean,std", [(0.0, 0.01), (0.37, 0.2), (-0.99, 0.05), (0.999, 0.003)])
def test_discretized_gaussian_matches_numerical_integration(mean, std):
    x0 = ATOMS[[0, 1, 64, 128, 129, 200, 254, 255]]
    logvar = torch.full_like(x0, 2 * math.log(std))
    ours = discretized_gaussian_log_likelihood(x0, torch.full_like(x0, mean), logvar).exp()
    g = stats.norm(mean, std)
    for x, p in zip(x0.tolist(), ours.tolist()):
        lo = -math.inf if x < -0.999 else x - 1 / 255
        hi = math.inf if x > 0.999 else x + 1 / 255
        direct = sum(integrate.quad(g.pdf, a, b)[0] for a, b in _split(lo, hi, mean))
        assert p == pytest.approx(direct, rel=1e-6, abs=1e-11)
    total = discretized_gaussian_log_likelihood(
        ATOMS, torch.full_like(ATOMS, mean), torch.full_like(ATOMS, 2 * math.log(std))
    )
    assert total.exp().sum().item() == pytest.approx(1.0, abs=1e-6)  # the bins tile ℝ


def _split(lo: float, hi: float, at: float) -> list[tuple[float, float]]:
    """[lo, hi] cut at the Gaussian's mean so quad cannot miss a narrow peak."""
    return [(lo, at), (at, hi)] if lo < at < hi else [(lo, hi)]


def _gaussian_log_prob(data: GaussianData, x: torch.Tensor) -> torch.Tensor:
    z = (x - data.mu) / data.s
    return (-0.5 * z**2 - math.log(data.s * math.sqrt(2 * math.pi))).sum(1)  # [B]


@pytest.mark.parametrize("probe,probes", [("gaussian", 1), ("gaussian", 4), ("rademacher", 1)])
def test_ode_nll_matches_the_gaussian_density_within_its_error(probe, probes):
    data = GaussianData(mu=0.3, s=0.5)
    g = torch.Generator().manual_seed(0)
    x = data.sample((256, 3), g)  # [B, D]
    sigma_max = 1e4
    out = ode_log_likelihood(
        data.denoise, x, sigma_min=1e-4, sigma_max=sigma_max, prior_var=data.s**2 + sigma_max**2,
        probes=probes, probe=probe, rtol=1e-6, atol=1e-6, generator=g,
    )  # fmt: skip
    err = out["log_prob"] - _gaussian_log_prob(data, x)  # [B] estimator noise + solver error
    se = err.std() / math.sqrt(len(err))
    assert err.mean().abs() < 4 * se + 1e-3, (err.mean(), se)
    if probe == "rademacher":  # J is diagonal with equal entries: the estimate is exact
        assert err.abs().max() < 1e-3
    else:  # per-sample error shrinks with more probes
        assert err.std() < 30 / probes**0.5


def test_ode_reports_a_solver_that_does_not_converge():
    data = GaussianData()
    x = data.sample((4, 2))
    with pytest.raises(UsageError, match="did not converge within max_steps=2"):
        ode_log_likelihood(data.denoise, x, sigma_min=1e-3, sigma_max=80.0, prior_var=6400.0,
                           rtol=1e-9, atol=1e-9, max_steps=2)  # fmt: skip


@pytest.mark.parametrize(
    "grids,n", [((4, 16, 64), 100), pytest.param((10, 100, 1000), 200, marks=pytest.mark.slow)]
)
def test_vlb_is_an_upper_bound_that_tightens_with_more_steps(grids, n):
    data = PixelGaussian()
    g = torch.Generator().manual_seed(0)
    x0 = data.sample((n, 2), g)  # [B, D]
    true = data.nll_bits(x0)
    schedule = build_schedule({"name": "cosine", "T": 1000})
    bounds = []
    for steps in grids:
        terms = vlb_terms(data.denoise, x0, vlb_grid(schedule, steps), generator=g)
        gap = terms["total"] - true  # [B]
        se = gap.std() / math.sqrt(len(gap))
        assert gap.mean() > -3 * se, (steps, gap.mean(), se)
        bounds.append(terms["total"].mean().item())
    assert bounds[0] > bounds[1] > bounds[2], bounds


def test_vlb_needs_a_discrete_vp_schedule():
    with pytest.raises(UsageError, match='`method="ode"`'):
        vlb_grid(build_schedule("edm"), 10)


def test_nll_cli_reports_bits_per_dim_and_refuses_bad_input(tmp_path, capsys, one_thread):
    from difflab import train
    from difflab.cli.main import main
    from difflab.core.config import load_config

    cfg = load_config("digits", ["train.steps=1", "train.batch_size=4", "model.net={name='unet', "
                                 "model_channels=8, channel_mult=[1], num_res_blocks=1, "
                                 "attention_resolutions=[]}"])  # fmt: skip
    path = str(train(cfg, tmp_path / "run"))
    out = tmp_path / "nll.json"
    args = [
        "nll",
        path,
        "--data",
        "{name='digits', split='test'}",
        "-n",
        "3",
        "--quiet",
        "--rtol",
        "1e-3",
        "--atol",
        "1e-3",
    ]
    assert main([*args, "--method", "ode", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["n"] == 3 and report["ode"]["total"]["n"] == 3
    assert "ode    total" in capsys.readouterr().out
    assert main([*args, "--method", "vlb"]) == 2  # EDM schedule: no discrete VP chain
    assert "--method ode" in capsys.readouterr().err
    assert main([*args, "--method", "ode", "--max-steps", "1"]) == 2
    assert "did not converge" in capsys.readouterr().err
    bad = ["nll", path, "--data", "{name='digits', split='test', size=4}", "--method", "ode"]
    assert main([*bad, "-n", "2", "--quiet"]) == 2
    assert "does not fit the model" in capsys.readouterr().err
