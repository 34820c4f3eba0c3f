"""Seconds per image of each difflab sampler vs the matching diffusers scheduler, same network.

    python bench/sampler_overhead.py [--run RUN] [--steps 20] [--batch 64] [--reps 3]
        [--out bench-out/sampler_overhead]

Both sides drive the same ε-prediction U-Net (a trained RUN, or the fashion_mnist16 architecture
with random weights: timing does not depend on the weights) for the same number of steps at the
same batch size, interleaved A/B/A/B; medians of --reps. The scheduler's own cost is what differs,
so the ratio should be ≈ 1 (the network dominates). Writes table.json and table.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from difflab.core.config import load_config
from difflab.core.schedules import discretize
from difflab.inference.pipeline import Pipeline, load
from difflab.samplers.base import sample
from difflab.storage.models import build_denoiser

# difflab sampler → (diffusers scheduler class, its options, difflab sampler options)
PEERS = {
    "ddpm": ("DDPMScheduler", {}, {}),
    "ddim": ("DDIMScheduler", {}, {}),
    "euler": ("EulerDiscreteScheduler", {}, {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}, {}),
    "heun": ("HeunDiscreteScheduler", {}, {}),
    "dpm2": ("KDPM2DiscreteScheduler", {}, {}),
    "dpm2_ancestral": ("KDPM2AncestralDiscreteScheduler", {}, {}),
    "lms": ("LMSDiscreteScheduler", {}, {}),
    "plms": ("PNDMScheduler", {"skip_prk_steps": True}, {}),
    "dpm_solver": ("DPMSolverSinglestepScheduler", {}, {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}, {}),
    "dpmpp_3m": ("DPMSolverMultistepScheduler", {"solver_order": 3}, {}),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, {}),
    "unipc": ("UniPCMultistepScheduler", {}, {}),
    "deis": ("DEISMultistepScheduler", {}, {}),
}


def diffusers_seconds(denoiser, cls_name, opts, steps, x_shape) -> float:
    """One diffusers sampling loop calling the same net F_θ(x_in, t) for ε."""
    import diffusers

    schedule = denoiser.schedule
    sched = getattr(diffusers, cls_name)(
        num_train_timesteps=schedule.num_timesteps, trained_betas=schedule.betas.numpy(), **opts
    )
    sched.set_timesteps(steps)
    net = denoiser.net
    start = time.perf_counter()
    x = torch.randn(x_shape) * sched.init_noise_sigma
    for t in sched.timesteps:
        inp = sched.scale_model_input(x, t)
        eps = net(inp, t.float().expand(len(x)), {})
        x = sched.step(eps, t, x).prev_sample
    return time.perf_counter() - start


def difflab_seconds(denoiser, name, opts, steps, x_shape) -> float:
    """One difflab sampling run (σ grid, Precond scalings and σ→t lookups included)."""
    start = time.perf_counter()
    sigmas = discretize(denoiser.schedule, {"name": "uniform", "spacing": "trailing"}, steps)
    x = torch.randn(x_shape) * sigmas[0]
    sample(name, lambda x, sigma: denoiser(x, sigma, {}), x, sigmas, **opts)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="trained run/checkpoint (default: random fashion_mnist16 net)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--samplers", default=",".join(PEERS))
    ap.add_argument("--out", default="bench-out/sampler_overhead")
    args = ap.parse_args()
    if args.run:
        pipe = load(args.run)
    else:
        cfg = load_config("fashion_mnist16")
        cfg.model.shape = [1, 16, 16]
        pipe = Pipeline(build_denoiser(cfg.model).eval().requires_grad_(False), cfg)
    denoiser = pipe.denoiser
    x_shape = (args.batch, *pipe.shape)  # the net's (model-space) shape
    rows = []
    with torch.inference_mode():
        difflab_seconds(denoiser, "euler", {}, 2, x_shape)  # warm-up (oneDNN kernels)
        for name in args.samplers.split(","):
            cls_name, peer_opts, opts = PEERS[name]
            ours, theirs = [], []
            for _ in range(args.reps):  # interleaved A/B
                ours.append(difflab_seconds(denoiser, name, opts, args.steps, x_shape))
                theirs.append(diffusers_seconds(denoiser, cls_name, peer_opts, args.steps, x_shape))
            a, b = statistics.median(ours) / args.batch, statistics.median(theirs) / args.batch
            rows.append({"sampler": name, "diffusers": cls_name, "steps": args.steps,
                         "difflab_s_per_image": a, "diffusers_s_per_image": b, "ratio": a / b})  # fmt: skip
            print(f"{name:>16} {a * 1e3:8.2f} ms/img  {cls_name:>32} {b * 1e3:8.2f} ms/img  "
                  f"difflab/diffusers {a / b:.3f}")  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.json").write_text(json.dumps(rows, indent=1))
    lines = ["| sampler | diffusers scheduler | difflab ms/img | diffusers ms/img | ratio |",
             "|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['sampler']} | {r['diffusers']} | {r['difflab_s_per_image'] * 1e3:.2f} | "
              f"{r['diffusers_s_per_image'] * 1e3:.2f} | {r['ratio']:.3f} |" for r in rows]  # fmt: skip
    ratios = [r["ratio"] for r in rows]
    lines.append(f"\nmedian ratio {statistics.median(ratios):.3f} over {len(rows)} samplers "
                 f"({args.steps} steps, batch {args.batch})")  # fmt: skip
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print(lines[-1])


if __name__ == "__main__":
    main()
