"""Seconds per image: difflab on a diffusers pipeline folder vs diffusers' StableDiffusionPipeline.

    python bench/diffusers_overhead.py [--steps 4] [--reps 3] [--sd-latent 32] [--skip-sd]
        [--sampler euler] [--out bench-out/diffusers_overhead]

Both sides load the same saved folder (random weights: timing does not depend on them) and make
one image's latents with the same scheduler, steps, CFG 7.5 and starting noise, interleaved
A/B/A/B; medians of --reps. Two U-Nets: the tests' tiny one (8×8 latents) and an SD-1.x-sized
UNet2DConditionModel (diffusers' default config, 860M parameters) at --sd-latent latents, with a
one-layer 768-wide CLIP text encoder. Target: ratio difflab / diffusers ≤ 1.05.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from diffusers_models import sd_pipeline, set_scheduler, write_tokenizer  # noqa: E402

import difflab  # noqa: E402

SCHEDULERS = {"euler": "EulerDiscreteScheduler", "dpmpp_2m": "DPMSolverMultistepScheduler",
              "ddim": "DDIMScheduler"}  # fmt: skip
SD_BETAS = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
            "timestep_spacing": "leading", "steps_offset": 1}  # fmt: skip


def sd_sized(root: Path, latent: int) -> Path:
    """An SD-1.x-sized random U-Net with a tiny VAE and a one-layer 768-wide CLIP encoder."""
    import diffusers
    import transformers

    sd_pipeline(root, {"_class_name": "EulerDiscreteScheduler", **SD_BETAS})
    torch.manual_seed(0)
    diffusers.UNet2DConditionModel(sample_size=latent, cross_attention_dim=768).save_pretrained(str(root / "unet"))
    write_tokenizer(root / "tokenizer")
    tok = transformers.CLIPTokenizer.from_pretrained(str(root / "tokenizer"))
    transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(tok), hidden_size=768, intermediate_size=1024, num_hidden_layers=1,
        num_attention_heads=12, max_position_embeddings=tok.model_max_length,
    )).save_pretrained(str(root / "text_encoder"))  # fmt: skip
    return root


def timed(fn) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        fn()
    return time.perf_counter() - start


def compare(root: Path, sampler: str, steps: int, reps: int) -> dict:
    """Medians of seconds per image, A/B interleaved, and their ratio."""
    import diffusers

    set_scheduler(root, {"_class_name": SCHEDULERS[sampler], **SD_BETAS})
    ref = diffusers.StableDiffusionPipeline.from_pretrained(str(root), local_files_only=True)
    ref.set_progress_bar_config(disable=True)
    pipe = difflab.load(root)
    shape = (1, *pipe.shape)
    z = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    ref.scheduler.set_timesteps(steps)
    start = z * ref.scheduler.init_noise_sigma
    if sampler != "euler":
        a = ref.scheduler.alphas_cumprod[ref.scheduler.timesteps[0]]
        start = start / a.sqrt()  # native → σ-space
    size = pipe.image_shape[-1]
    runs = {
        "diffusers": lambda: ref(prompt=["apple red"], negative_prompt=["red"], height=size,
                                 width=size, num_inference_steps=steps, guidance_scale=7.5,
                                 latents=z, output_type="latent"),
        "difflab": lambda: pipe.sample(1, prompts=["apple red"], negative_prompts=["red"],
                                       steps=steps, start=start),
    }  # fmt: skip
    for fn in runs.values():  # warm-up: lazy loads, allocator
        timed(fn)
    times = {k: [] for k in runs}
    for _ in range(reps):
        for k, fn in runs.items():
            times[k].append(timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"sampler": sampler, "steps": steps, "latent": list(pipe.shape), **med,
            "ratio": med["difflab"] / med["diffusers"]}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--sd-latent", type=int, default=32)
    p.add_argument("--sampler", default="euler", choices=list(SCHEDULERS))
    p.add_argument("--skip-sd", action="store_true", help="only the tiny U-Net")
    p.add_argument("--out", default="bench-out/diffusers_overhead")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = {"tiny": lambda: sd_pipeline(Path(tmp) / "tiny", {"_class_name":
                                              "EulerDiscreteScheduler", **SD_BETAS})}  # fmt: skip
        if not args.skip_sd:
            models["sd-sized"] = lambda: sd_sized(Path(tmp) / "sd", args.sd_latent)
        for name, build in models.items():
            row = {"unet": name, **compare(build(), args.sampler, args.steps, args.reps)}
            rows.append(row)
            print(f"{name:9s} {row['sampler']:9s} latent {row['latent']} steps {row['steps']}: "
                  f"difflab {row['difflab']:.3f} s/img, diffusers {row['diffusers']:.3f} s/img, "
                  f"ratio {row['ratio']:.3f}", flush=True)  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
