"""diffusers model / pipeline folders loaded offline: parity of the denoiser and of full
text-to-image and class-conditional runs with diffusers itself, and the loader's refusals."""

from __future__ import annotations

import json
import shutil
import socket

import pytest
import torch
from diffusers_models import sd_pipeline, set_scheduler, unet2d_folder
from requires import require_module

import difflab
from difflab.core.errors import UsageError

SD_BETAS = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
SCHEDULERS = {  # difflab sampler → the diffusers scheduler it reproduces
    "euler": {"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "leading",
              "steps_offset": 1},
    "dpmpp_2m": {"_class_name": "DPMSolverMultistepScheduler"},  # linspace, its own N+1 grid
    "ddim": {"_class_name": "DDIMScheduler", "timestep_spacing": "leading", "steps_offset": 1,
             "set_alpha_to_one": True, "clip_sample": False},
}  # fmt: skip
PROMPT, NEGATIVE, STEPS = ["apple red"], ["red"], 10


def max_diff(a, b) -> float:
    return (a.double() - b.double()).abs().max().item()


@pytest.fixture(scope="session")
def sd_root(tmp_path_factory):
    require_module("diffusers")
    root = tmp_path_factory.mktemp("diffusers") / "sd"
    return sd_pipeline(root, {"_class_name": "EulerDiscreteScheduler", **SD_BETAS})


def sd_copy(sd_root, tmp_path, scheduler: dict):
    root = tmp_path / "sd"
    shutil.copytree(sd_root, root)
    set_scheduler(root, {**SD_BETAS, **scheduler})
    return root


def diffusers_pipeline(root):
    diffusers = require_module("diffusers")
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(root), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_denoiser_is_the_unet_output_as_x0(sd_root, tmp_path, prediction):
    root = sd_copy(sd_root, tmp_path, {"_class_name": "DDIMScheduler",
                                       "prediction_type": prediction})  # fmt: skip
    ref = diffusers_pipeline(root)
    pipe = difflab.load(root)
    cond, _ = pipe.conditioner.build(difflab.conditioning.ConditionRequest(
        2, prompts=PROMPT, negative_prompts=NEGATIVE))  # fmt: skip
    embeds, negative = ref.encode_prompt(PROMPT * 2, "cpu", 1, True, NEGATIVE * 2)
    assert max_diff(cond["tokens"], embeds) == 0 and max_diff(cond["null.tokens"], negative) == 0
    t = torch.tensor([999, 421])
    alpha_bar = ref.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)  # [B, 1, 1, 1]
    sigma = ((1 - alpha_bar) / alpha_bar).sqrt()
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1)) * (1 + sigma**2).sqrt()
    native = x * alpha_bar.sqrt()  # x_t = √ᾱ·(x0 + σε)
    with torch.no_grad():
        out = ref.unet(native, t, encoder_hidden_states=embeds).sample
        x0 = {"epsilon": (native - (1 - alpha_bar).sqrt() * out) / alpha_bar.sqrt(),
              "v_prediction": alpha_bar.sqrt() * native - (1 - alpha_bar).sqrt() * out,
              "sample": out}[prediction]  # fmt: skip
        denoised = pipe.denoiser(x, sigma.flatten().float(), cond)
    print(f"\nparity D vs UNet2DConditionModel {prediction}: {max_diff(denoised, x0):.2e}")
    assert max_diff(denoised, x0) < 1e-4 * max(1.0, x0.abs().max().item())


@pytest.mark.parametrize("sampler", list(SCHEDULERS))
def test_text_to_image_matches_stable_diffusion_pipeline(sd_root, tmp_path, sampler):
    root = sd_copy(sd_root, tmp_path, SCHEDULERS[sampler])
    ref = diffusers_pipeline(root)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))  # [1, 4, h, w]
    latents = ref(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS,
                  guidance_scale=7.5, latents=z, output_type="latent", height=16,
                  width=16).images  # fmt: skip
    pipe = difflab.load(root)
    assert pipe.defaults["sampler"]["name"] == sampler
    sigma0 = ref.scheduler.sigmas[0].double() if hasattr(ref.scheduler, "sigmas") else None
    if sampler == "ddim":
        sigma0 = ((1 - ref.scheduler.alphas_cumprod[ref.scheduler.timesteps[0]]).double()
                  / ref.scheduler.alphas_cumprod[ref.scheduler.timesteps[0]]).sqrt()  # fmt: skip
    native = sampler != "euler"  # Euler's state is already σ-space (x0 + σε)
    start = z * ref.scheduler.init_noise_sigma * ((1 + sigma0**2).sqrt() if native else 1)
    x = pipe.sample(1, prompts=PROMPT, negative_prompts=NEGATIVE, steps=STEPS,
                    start=start.float()).x  # fmt: skip
    diff = max_diff(x, latents)
    print(f"\nparity SD text-to-image {sampler} CFG 7.5 (latents): {diff:.2e}")
    assert diff < 1e-4
    with torch.no_grad():
        images = ref.vae.decode(latents / ref.vae.config.scaling_factor).sample
    assert max_diff(pipe.decode(x), images) < 1e-4


def test_class_conditional_unet2d_matches_ddim_loop(tmp_path):
    diffusers = require_module("diffusers")
    folder = unet2d_folder(tmp_path, num_classes=3)
    unet = diffusers.UNet2DModel.from_pretrained(str(folder), local_files_only=True)
    sched = diffusers.DDIMScheduler.from_pretrained(str(tmp_path / "scheduler"))
    sched.set_timesteps(STEPS)
    labels = torch.tensor([0, 2])
    z = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    x = z
    with torch.no_grad():
        for t in sched.timesteps:  # clip_sample: ε recomputed from the clipped x̂0, as difflab
            out = unet(x, t, class_labels=labels).sample
            x = sched.step(out, t, x, use_clipped_model_output=True).prev_sample
    pipe = difflab.load(folder)
    assert pipe.defaults["guidance"] == ["static_threshold"]
    sigma0 = ((1 - sched.alphas_cumprod[sched.timesteps[0]]) / sched.alphas_cumprod[
        sched.timesteps[0]]).sqrt()  # fmt: skip
    got = pipe.sample(2, classes=[0, 2], steps=STEPS, start=z * (1 + sigma0**2).sqrt()).x
    print(f"\nparity UNet2DModel class-conditional ddim: {max_diff(got, x):.2e}")
    assert max_diff(got, x) < 1e-4
    with pytest.raises(UsageError, match="no null class"):
        pipe.sample(1, classes=[1], steps=2, guidance="cfg:scale=2")


def test_loading_and_sampling_open_no_network(sd_root, tmp_path, monkeypatch):
    root = sd_copy(sd_root, tmp_path, SCHEDULERS["euler"])

    def refuse(*args, **kwargs):
        raise AssertionError(f"network connection attempted: {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    pipe = difflab.load(root)
    assert pipe(1, prompts=PROMPT, steps=2).shape == (1, 3, 16, 16)


@pytest.mark.parametrize("part,name", [("text_encoder", "model.safetensors"),
                                       ("unet", "diffusion_pytorch_model.safetensors"),
                                       ("scheduler", "scheduler_config.json"),
                                       ("vae", "config.json")])  # fmt: skip
def test_incomplete_folder_names_the_missing_file(sd_root, tmp_path, part, name):
    root = tmp_path / "sd"
    shutil.copytree(sd_root, root)
    (root / part / name).unlink()
    with pytest.raises(UsageError, match=name.replace(".", r"\.")):
        difflab.load(root)(1, prompts=PROMPT, steps=1)


def test_unsupported_scheduler_options_are_named(sd_root, tmp_path):
    root = tmp_path / "sd"
    shutil.copytree(sd_root, root)
    path = root / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text()) | {"beta_schedule": "sigmoid", "thresholding": True}
    path.write_text(json.dumps(config))
    with pytest.raises(UsageError, match="beta_schedule='sigmoid', thresholding=True"):
        difflab.load(root)


def test_pickled_weights_need_opt_in(tmp_path):
    from safetensors.torch import load_file

    folder = unet2d_folder(tmp_path, num_classes=None)
    weights = folder / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(str(weights)), folder / "diffusion_pytorch_model.bin")
    weights.unlink()
    with pytest.raises(UsageError, match="pickled weights.*`allow_pickle=True`"):
        difflab.load(folder)
    pipe = difflab.load(folder, allow_pickle=True)
    assert pipe(1, steps=2).shape == (1, 3, 16, 16)
    torch.save({"w": torch.zeros(1), "f": print}, folder / "diffusion_pytorch_model.bin")
    with pytest.raises(UsageError, match="objects other than tensors"):
        difflab.load(folder, allow_pickle=True)


def test_export_schedule_loads_back_in_diffusers(tmp_path):
    import subprocess
    import sys

    from test_pipeline import _config, _save

    from difflab.core.schedules import build_schedule, respaced_timesteps
    from difflab.storage import checkpoint as ckpt
    from difflab.storage.diffusers.scheduler import translate_scheduler

    diffusers = require_module("diffusers")
    cfg = _config("model.schedule={name='scaled_linear'}", "model.parameterization='v'",
                  "sample.sampler={name='ddim'}",
                  "sample.discretization={name='uniform',spacing='trailing'}")  # fmt: skip
    path = _save(ckpt.model_path(tmp_path / "run", 1), cfg)
    r = subprocess.run([sys.executable, "-m", "difflab", "export", str(path), "--format",
                        "diffusers", "--out", str(tmp_path / "out")], capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "not exported: unet" in r.stdout
    sched = diffusers.DDIMScheduler.from_pretrained(str(tmp_path / "out" / "scheduler"))
    assert sched.config.prediction_type == "v_prediction"
    ours = build_schedule({"name": "scaled_linear"})
    torch.testing.assert_close(sched.alphas_cumprod.double(), ours.alphas_cumprod,
                               rtol=2e-6, atol=1e-7)  # diffusers' cumprod is float32
    sched.set_timesteps(20)
    assert sched.timesteps.tolist() == respaced_timesteps(1000, 20, "trailing").tolist()
    schedule, parameterization, _, _ = translate_scheduler(dict(sched.config))
    assert (schedule["name"], parameterization) == ("scaled_linear", "v")
    edm = _save(ckpt.model_path(tmp_path / "edm", 1), _config())
    from difflab.storage.diffusers.export import export_diffusers

    with pytest.raises(UsageError, match="schedule 'edm' has no diffusers scheduler config"):
        export_diffusers(edm, tmp_path / "out2")


def test_sdedit_and_inversion_run_on_a_loaded_pipeline(sd_root, tmp_path):
    """Editing needs nothing diffusers-specific: encode with the VAE codec, enter the grid part
    way (SDEdit), or integrate an increasing grid with DDIM (inversion) and come back."""
    from difflab.core.schedules import discretize

    pipe = difflab.load(sd_copy(sd_root, tmp_path, SCHEDULERS["ddim"]))
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    x0 = pipe.encode(image)  # [1, 4, 8, 8]
    sigmas = discretize(pipe.denoiser.schedule, pipe.defaults["discretization"], STEPS)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    edited = pipe.sample(1, prompts=PROMPT, sigmas=sigmas[5:], start=x0 + sigmas[5] * noise).x
    assert edited.shape == x0.shape and torch.isfinite(edited).all()
    fine = discretize(pipe.denoiser.schedule, pipe.defaults["discretization"], 100)
    up = fine[-20:-1].flip(0)  # increasing, σ(t=1) → σ(t=181): DDIM's error is O(step)
    plain = {"guidance": "cfg:scale=1"}
    z = pipe.sample(1, prompts=PROMPT, sampler="ddim", sigmas=up, start=x0, **plain).x
    back = pipe.sample(1, prompts=PROMPT, sampler="ddim", sigmas=up.flip(0), start=z, **plain).x
    print(f"\ninversion round trip {max_diff(back, x0):.2e}, noise {max_diff(z, x0):.2e}")
    assert max_diff(back, x0) < 0.25 * max_diff(z, x0)  # O(step) on a rough random net


def test_library_edits_run_on_a_loaded_pipeline(sd_root, tmp_path):
    """The editing functions take a diffusers pipeline like any other: RePaint through the VAE
    codec keeps the known pixels exactly, SDEdit returns images of the pipeline's shape."""
    from difflab.inference.edit import repaint, sdedit

    pipe = difflab.load(sd_copy(sd_root, tmp_path, SCHEDULERS["euler"]))
    image = (torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 255).to(
        torch.uint8
    )
    mask = torch.ones(16, 16)
    mask[4:12, 4:12] = 0  # fill the centre
    out = repaint(pipe, image, mask, jump_length=2, resample=2, prompts=PROMPT, steps=4,
                  negative_prompts=["blurry"], guidance="cfg:scale=7.5")  # fmt: skip
    keep = mask.bool().expand_as(image)
    assert out.dtype == torch.uint8 and torch.equal(out[keep], image[keep])
    assert not torch.equal(out[~keep], image[~keep])
    edited = sdedit(pipe, image, strength=0.5, prompts=PROMPT, steps=4)
    assert edited.shape == image.shape and edited.dtype == torch.uint8


def test_the_web_ui_lists_diffusers_folders_beside_difflab_runs(sd_root, tmp_path):
    """`difflab serve DIR` finds a diffusers pipeline folder and a UNet2DModel folder, and shows
    the prompt and negative-prompt inputs for the text-to-image one."""
    require_module("gradio")
    from difflab.web.models import Models, capabilities, find_models

    shutil.copytree(sd_root, tmp_path / "sd")
    unet2d_folder(tmp_path / "ddpm", num_classes=None)
    found = find_models(tmp_path)
    assert set(found) == {"sd", "ddpm/unet"}
    caps = capabilities(Models(tmp_path).get("sd")[1])
    assert caps["prompt"] and caps["negative"]
