"""DDIM inversion, reconstruction, null-text inversion and interpolation."""

from __future__ import annotations

import pytest
import torch
from test_edit import DATA, images, oracle_pipe
from test_train import TINY_UNET

from difflab.core.config import load_config
from difflab.core.errors import UsageError
from difflab.core.types import null_cond
from difflab.inference.interpolate import (
    interpolate_inverted,
    interpolate_latent,
    interpolate_noise,
    slerp,
)
from difflab.inference.inversion import inversion_run, invert, reconstruct, reconstruct_x
from difflab.inference.null_text import null_gradient, null_text_inversion, with_null
from difflab.inference.pipeline import Pipeline
from difflab.storage.models import build_denoiser


def class_pipe(steps: int = 6) -> Pipeline:
    """A random-weight tiny class-conditional U-Net (8×8, EDM): CFG changes its output."""
    cfg = load_config("digits_class", [TINY_UNET, "model.cond={name='class', num_classes=4}",
                                       f"sample.steps={steps}", "sample.guidance=[]"])  # fmt: skip
    cfg.model.shape = [1, 8, 8]
    torch.manual_seed(0)
    denoiser = build_denoiser(cfg.model).eval()
    with torch.no_grad():  # the output layer starts at zero: perturb every weight
        for p in denoiser.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return Pipeline(denoiser, cfg)


@pytest.mark.parametrize("sampler", ["euler", "ddim"])
def test_inversion_and_reconstruction_converge_at_first_order(sampler):
    """Gaussian data, exact denoiser: the round trip x0 → x(σ_max) → x0 errs by O(1/N) (DDIM =
    Euler in σ-space), so doubling the steps halves the error."""
    pipe = oracle_pipe()
    x = DATA.sample((8, 1, 4, 4), torch.Generator().manual_seed(0)).float()
    err = []
    for steps in (16, 32, 64, 128):
        inv = invert(pipe, x, steps=steps, sampler=sampler)
        assert inv.sigmas[0] > 0 and (inv.sigmas.diff() > 0).all() and len(inv.sigmas) == steps + 1
        err.append((reconstruct_x(pipe, inv) - x).abs().max().item())
    ratios = [a / b for a, b in zip(err, err[1:])]
    assert all(1.6 < r < 2.2 for r in ratios) and 1.85 < ratios[-1] < 2.1, (err, ratios)


def test_x0_clipping_keeps_inversion_first_order():
    """Static x̂0 clipping (the default guidance of ε-prediction cosine configs, which inversion
    keeps) is 1-Lipschitz, so the clipped ODE is still a flow: its round trip also halves its error
    when the steps double, though the clip binds (data beyond ±1 here) and changes the states."""
    pipe = oracle_pipe()
    x = DATA.sample((8, 1, 4, 4), torch.Generator().manual_seed(0)).float()
    assert (x.abs() > 1).any()
    err = []
    for steps in (16, 32, 64, 128):
        inv = invert(pipe, x, steps=steps, sampler="ddim", guidance="static_threshold")
        err.append((reconstruct_x(pipe, inv) - x).abs().max().item())
    ratios = [a / b for a, b in zip(err, err[1:])]
    assert all(1.6 < r < 2.2 for r in ratios) and 1.85 < ratios[-1] < 2.1, (err, ratios)
    assert not torch.allclose(inv.x, invert(pipe, x, steps=128, sampler="ddim").x)


def test_inversion_follows_the_exact_ode_solution():
    """The inverted state is the ODE solution from x0 at σ_min, up to Heun's second-order error."""
    pipe = oracle_pipe()
    x = DATA.sample((4, 1, 4, 4), torch.Generator().manual_seed(1)).float()
    inv = invert(pipe, x, steps=200, sampler="heun")
    lo, hi = float(inv.sigmas[0]), float(inv.sigmas[-1])
    exact = DATA.ode_solution(x.double(), lo, hi).float()
    torch.testing.assert_close(inv.x, exact, rtol=1e-3, atol=1e-3 * hi)
    assert torch.equal(reconstruct(pipe, inv), pipe.to_images(reconstruct_x(pipe, inv)))


def test_inversion_refuses_stochastic_samplers_and_another_grid():
    pipe, x = oracle_pipe(), images(2)
    for sampler in ("euler_ancestral", "ddpm", {"name": "ddim", "eta": 1.0}):
        with pytest.raises(UsageError, match="increasing sigma grid"):
            invert(pipe, x, sampler=sampler)
    inv = invert(pipe, x, steps=5)
    with pytest.raises(UsageError, match="cannot integrate an increasing sigma grid"):
        reconstruct(pipe, inv, sampler="euler_ancestral")
    with pytest.raises(UsageError, match="pass the same `steps`"):
        reconstruct(pipe, inv, steps=6)


def test_null_text_gradient_is_zero_at_cfg_1_and_not_above():
    pipe = class_pipe()
    x = images(2, 8)
    for scale, zero in ((1.0, True), (3.0, False)):
        run, sigmas = inversion_run(pipe, 2, {"classes": [1, 2], "guidance": f"cfg:scale={scale}"})
        idx = slice(0, 2)
        null = {"vector": null_cond(run.cond)["vector"]}
        state = pipe.encode(x) + sigmas[-1] * torch.randn(2, 1, 8, 8)
        down = sigmas.flip(0)[:2]
        loss, grads = null_gradient(run, idx, null, state, down, torch.zeros_like(state))
        assert loss > 0 and (grads["vector"].abs().max() == 0) == zero, scale


def test_a_conditions_own_null_replaces_the_zero_null_in_cfg():
    cond = {"vector": torch.ones(2, 3), "labels": torch.tensor([0, 1])}
    assert torch.equal(null_cond(cond)["vector"], torch.zeros(2, 3))
    own = with_null(cond, {"vector": torch.full((2, 3), 5.0)})
    assert torch.equal(null_cond(own)["vector"], torch.full((2, 3), 5.0))
    assert torch.equal(null_cond(own)["labels"], cond["labels"])


def test_null_text_inversion_reconstructs_at_high_cfg_where_ddim_inversion_drifts():
    pipe = class_pipe(steps=6)
    x = images(2, 8)
    opts = {"classes": [1, 3], "steps": 6}
    x0 = pipe.encode(x)

    def error(inv, **over):
        return (reconstruct_x(pipe, inv, **over) - x0).pow(2).mean().item()

    plain = invert(pipe, x, **opts)  # CFG 1 both ways
    drift = error(plain, guidance="cfg:scale=5")  # inverted at 1, sampled at 5
    inv = null_text_inversion(pipe, x, scale=5.0, inner_steps=20, lr=0.05, **opts)
    assert len(inv.nulls) == 6 and inv.nulls[0]["vector"].shape == (2, 4)
    # a 4-d null per step cannot undo all of CFG 5 on a random net, but most of its drift
    assert error(inv) < min(0.6 * drift, error(plain)), (error(inv), drift, error(plain))
    unit = null_text_inversion(pipe, x, scale=1.0, inner_steps=3, **opts)
    assert all(n["vector"].abs().max() == 0 for n in unit.nulls)  # zero gradient: nulls stay ∅
    with pytest.raises(UsageError, match="pass its scale as `scale`"):
        null_text_inversion(pipe, x, scale=3.0, guidance="cfg:scale=3", **opts)
    with pytest.raises(UsageError, match="keeps a history"):
        null_text_inversion(pipe, x, scale=3.0, sampler="dpmpp_2m", **opts)
    with pytest.raises(UsageError, match="needs a condition; pass `classes` or `prompts`"):
        null_text_inversion(oracle_pipe(), images(2), scale=1.0)


def test_slerp_keeps_the_norm_of_orthogonal_noises_and_hits_the_ends():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    path = slerp(a, b, torch.linspace(0, 1, 5))
    torch.testing.assert_close(path.norm(dim=1), torch.ones(5))
    assert torch.equal(path[0], a) and torch.allclose(path[-1], b, atol=1e-7)
    torch.testing.assert_close(slerp(a, 2 * a, torch.tensor([0.5]))[0], 1.5 * a)  # parallel: lerp


def test_interpolations_return_rows_whose_ends_are_the_inputs():
    pipe, x = oracle_pipe("toy_down2", size=8), images(2, 8)
    row = interpolate_latent(pipe, x, frames=5)
    assert row.shape == (5, 1, 8, 8)
    assert torch.equal(row[0], pipe.to_images(pipe.encode(x[:1]))[0])
    noise_row = interpolate_noise(pipe, (3, 4), frames=4, steps=8)
    assert torch.equal(noise_row[0], pipe(1, seed=3, steps=8)[0])  # the seed's own sample
    pipe = oracle_pipe()
    x = pipe.to_images(DATA.sample((2, 1, 4, 4), torch.Generator().manual_seed(2)).float())
    row = interpolate_inverted(pipe, x, frames=6, steps=100, sampler="heun")
    assert row.shape == (6, 1, 4, 4)
    assert (row[[0, -1]].int() - x.int()).abs().max() <= 2  # inversion error only
    with pytest.raises(UsageError, match="`frames` must be an integer >= 2"):
        interpolate_latent(pipe, x, frames=1)
    with pytest.raises(UsageError, match="takes 2 `images`"):
        interpolate_latent(pipe, images(3), frames=3)
