"""Sampling-time editing: SDEdit and RePaint, against the Gaussian oracle and exact identities."""

from __future__ import annotations

import pytest
import torch
from test_pipeline import Down2  # noqa: F401  (registers the toy latent codec "toy_down2")

from difflab.conditioning.masks import MASK_KINDS, seeded_masks
from difflab.core.errors import UsageError
from difflab.core.schedules import build_schedule, discretize
from difflab.inference.edit import (
    monotone_runs,
    repaint,
    repaint_path,
    repaint_steps,
    sdedit,
    sdedit_sigmas,
)
from difflab.inference.generate import SeededNoise
from difflab.inference.masks import latent_mask, resolve_mask
from difflab.inference.pipeline import Pipeline
from oracles import GaussianData, perfect_denoiser

DATA = GaussianData(mu=0.3, s=0.5)


def oracle_pipe(codec: str = "identity", sampler: str = "euler", size: int = 4) -> Pipeline:
    """A Pipeline around the exact denoiser of N(0.3, 0.5²) (EDM), images [1, size, size]."""
    config = {"model": {"shape": [1, size, size], "codec": {"name": codec}},
              "sample": {"sampler": {"name": sampler}, "steps": 12}}  # fmt: skip
    return Pipeline(perfect_denoiser(DATA, build_schedule("edm"), "edm"), config)


def images(n: int = 4, size: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)


# ---- SDEdit ---------------------------------------------------------------------------------------


def test_sdedit_tends_to_the_input_as_strength_tends_to_zero():
    """At strength → 0 the start σ → the grid's smallest σ and the output → the input; at
    strength 1 the input is forgotten (the oracle's samples are N(0.3, 0.5²) whatever it was)."""
    pipe, x = oracle_pipe(), images()
    err = {s: (sdedit(pipe, x, strength=s, steps=200).int() - x.int()).abs().float().mean()
           for s in (1.0, 0.3, 0.05, 0.005)}  # fmt: skip
    assert err[1.0] > 40 and err[1.0] > err[0.3] > err[0.05] > err[0.005]
    assert err[0.005] < 0.5  # of 255: σ₀ ≈ 0.002, one Euler step


def test_sdedit_starts_on_the_models_grid_at_strength():
    grid = torch.linspace(10, 0, 11, dtype=torch.float64)
    assert torch.equal(sdedit_sigmas(grid, 1.0), grid)
    assert torch.equal(sdedit_sigmas(grid, 0.3), grid[7:])  # the last 3 of 10 steps
    assert torch.equal(sdedit_sigmas(grid, 1e-6), grid[9:])  # at least one step
    for bad in (0, 0.0, -0.1, 1.5, float("nan"), True, "0.5"):
        with pytest.raises(UsageError, match=r"`strength` must be in \(0, 1\]"):
            sdedit_sigmas(grid, bad)


def test_sdedit_equals_the_oracle_ode_solution_from_its_start():
    """With Heun on a fine grid the result is the exact ODE solution from E(x) + σ₀·z."""
    pipe, x = oracle_pipe(sampler="heun"), images()
    out = sdedit(pipe, x, strength=0.5, steps=400, seed=3)
    sigmas = sdedit_sigmas(discretize(pipe.denoiser.schedule, "karras", 400), 0.5)
    x0 = pipe.encode(x).double()
    start = x0 + sigmas[0] * SeededNoise([3, 4, 5, 6])(x0)
    sigma_end = float(sigmas[-2])  # Heun's last step to 0 is an Euler step: compare before it
    exact = DATA.ode_solution(start, float(sigmas[0]), sigma_end)
    final = DATA.denoise(exact, torch.full((4,), sigma_end, dtype=torch.float64))
    assert (out.int() - pipe.to_images(final.float()).int()).abs().max() <= 1


def test_sdedit_runs_any_sampler_on_a_latent_codec():
    pipe, x = oracle_pipe("toy_down2", size=8), images(2, 8)
    for sampler in ("euler_ancestral", "dpmpp_2m", "ddpm"):
        out = sdedit(pipe, x, strength=0.4, sampler=sampler, steps=10)
        assert out.shape == (2, 1, 8, 8) and out.dtype == torch.uint8


def test_sdedit_refuses_images_of_the_wrong_channels_or_size():
    pipe = oracle_pipe()
    with pytest.raises(UsageError, match="`images` have 3 channels but this model makes 1"):
        sdedit(pipe, torch.zeros(1, 3, 4, 4, dtype=torch.uint8), strength=0.5)
    with pytest.raises(UsageError, match="`images` are 8×8 but this model makes 4×4"):
        sdedit(pipe, torch.zeros(1, 1, 8, 8, dtype=torch.uint8), strength=0.5)
    with pytest.raises(UsageError, match="unknown editing option `stregth`"):
        sdedit(pipe, images(), strength=0.5, stregth=1)


# ---- RePaint --------------------------------------------------------------------------------------


def official_schedule(t_T: int, jump_length: int, jump_n_sample: int) -> list[int]:
    """RePaint's `get_schedule_jump` (guided_diffusion/scheduler.py), transcribed as the peer."""
    jumps = {j: jump_n_sample - 1 for j in range(0, t_T - jump_length, jump_length)}
    t, ts = t_T, []
    while t >= 1:
        t = t - 1
        ts.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] = jumps[t] - 1
            for _ in range(jump_length):
                t = t + 1
                ts.append(t)
    ts.append(-1)
    return ts


@pytest.mark.parametrize(("steps", "jump", "resample"), [(10, 1, 1), (10, 3, 2), (250, 10, 10),
                                                         (20, 5, 1), (7, 10, 4)])  # fmt: skip
def test_repaint_path_is_the_papers_jump_schedule(steps, jump, resample):
    path = repaint_path(steps, jump, resample)
    assert path == [steps - 1 - t for t in official_schedule(steps, jump, resample)]
    assert (
        path[0] == 0 and path[-1] == steps and all(abs(b - a) == 1 for a, b in zip(path, path[1:]))
    )
    jumps = len(range(0, steps - jump, jump))
    assert repaint_steps(steps, jump, resample) == steps + (resample - 1) * jump * jumps
    runs = monotone_runs(path)
    assert [p for r in runs for p in r[1:]] == path[1:] and all(r[0] != r[1] for r in runs)


def test_repaint_with_an_all_known_mask_returns_the_input_exactly():
    for pipe, x in ((oracle_pipe(), images()), (oracle_pipe("toy_down2", size=8), images(4, 8))):
        out = repaint(pipe, x, torch.ones(x.shape[-2:]), jump_length=3, resample=2, steps=8)
        assert torch.equal(out, x)


@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral", "dpmpp_2m", "heun"])
def test_repaint_with_an_all_unknown_mask_and_no_time_travel_is_unconditional_sampling(sampler):
    pipe, x = oracle_pipe(sampler=sampler), images(5)
    for jump, resample in ((1, 1), (4, 1), (12, 5)):  # resample 1 or one jump ≥ the grid
        out = repaint(pipe, x, torch.zeros(4, 4), jump_length=jump, resample=resample, seed=7,
                      batch_size=2)  # fmt: skip
        assert torch.equal(out, pipe(5, seed=7)), (jump, resample)


def test_repaint_keeps_the_known_pixels_and_fills_the_rest_from_the_data():
    """The oracle's dimensions are independent, so the filled half is distributed as unconditional
    samples of the same sampler, whatever is kept; time travel with the exact denoiser keeps that."""
    pipe = oracle_pipe(sampler="euler_ancestral", size=8)
    x = torch.full((64, 1, 8, 8), 255, dtype=torch.uint8)
    out = repaint(pipe, x, "half", jump_length=5, resample=4, steps=30, seed=0)
    assert torch.equal(out[..., :4], x[..., :4])
    filled, free = pipe.encode(out)[..., 4:], pipe.encode(pipe(64, seed=100, steps=30))
    assert abs(filled.mean() - 0.3) < 0.04 and abs(free.mean() - 0.3) < 0.04
    assert abs(filled.std() / free.std() - 1) < 0.08, (filled.std(), free.std())


def test_masks_are_binary_of_the_image_size_and_seeded_per_sample():
    for kind in MASK_KINDS:
        m = seeded_masks(3, (16, 12), kind, seed=5)
        assert m.shape == (3, 1, 16, 12) and ((m == 0) | (m == 1)).all()
        assert 0 < m.mean() < 1, kind
        assert torch.equal(seeded_masks(2, (16, 12), kind, seed=6), m[1:])  # mask i ← seed + i
    free_form = [seeded_masks(1, (16, 16), "free_form", seed) for seed in (0, 1)]
    assert not torch.equal(*free_form)
    m = resolve_mask(torch.ones(4, 4), 3, (1, 4, 4))
    assert m.shape == (3, 1, 4, 4)
    half = seeded_masks(1, (8, 8), "half")
    assert torch.equal(latent_mask(half, (1, 4, 4)), seeded_masks(1, (4, 4), "half"))
    box = torch.ones(1, 1, 8, 8)
    box[..., 3, 3] = 0  # one unknown pixel makes its whole latent cell unknown
    assert latent_mask(box, (1, 4, 4)).sum() == 15


def test_repaint_refuses_a_mask_of_the_wrong_size_or_not_binary(tmp_path):
    from PIL import Image

    pipe, x = oracle_pipe(), images()
    with pytest.raises(UsageError, match=r"`mask` has shape \[8, 8\] but the images are 4×4"):
        repaint(pipe, x, torch.ones(8, 8))
    with pytest.raises(UsageError, match="`mask` is not binary"):
        repaint(pipe, x, torch.full((4, 4), 0.5))
    grey = tmp_path / "grey.png"
    Image.new("L", (4, 4), 128).save(grey)
    with pytest.raises(UsageError, match="not binary"):
        repaint(pipe, x, grey)
    with pytest.raises(UsageError, match="does not exist"):
        repaint(pipe, x, tmp_path / "missing.png")
    with pytest.raises(UsageError, match="`jump_length` must be an integer >= 1"):
        repaint(pipe, x, "centre", jump_length=0)
    white = tmp_path / "white.png"
    Image.new("L", (4, 4), 255).save(white)
    assert torch.equal(repaint(pipe, x, white, steps=4), x)  # a PNG: white = keep
