"""`difflab demo`: train the built-in demo model (class-conditional digits) within a time budget,
then draw PNGs."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import torch

from difflab.cli.training import run_training
from difflab.core.config import load_config
from difflab.core.errors import UsageError
from difflab.core.imageio import save_grid
from difflab.evaluation.plots import plot_loss, plot_trajectory
from difflab.inference.pipeline import load
from difflab.inference.provenance import grid_settings, run_settings

MARKER = "demo.json"


def _claim(out: Path) -> None:
    """Use `out` if it is new, empty or an earlier demo's output (which is replaced)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory")
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise UsageError(f"--out {out} holds other files; choose a new or empty directory")
        shutil.rmtree(out / "run", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def run_demo(out: Path, seconds: float = 160.0, quiet: bool = False, seed: int = 0) -> dict:
    """Train the demo config's fixed steps (`seconds` is a guard), write the PNGs; return timings.

    The step count, not the machine's speed, sets the quality: it fits the default budget with
    room to spare on a machine well slower than 2 busy cores. Should the budget run out first,
    training stops there and a note says so.
    """
    _claim(out)
    start = time.perf_counter()
    cfg = load_config("demo", [f"train.max_seconds={seconds}", f"train.seed={seed}",
                               "train.grid_n=0"])  # its own samples.png and loss.png follow
    ckpt = run_training(cfg, out / "run", resume=False, quiet=quiet)
    trained = time.perf_counter() - start
    pipe = load(ckpt)  # samples with the config's defaults (n, seed, sampler, steps, ...)
    info = pipe.info
    if info["step"] < cfg.train.steps:
        print(f"note: the {seconds:.0f}s budget ran out after {info['step']} of "
              f"{cfg.train.steps} steps; samples will be worse than usual (this machine is slow "
              "or busy: raise --seconds)", file=sys.stderr)  # fmt: skip
    steps_x0, step_sigmas = [], []

    def keep_first(info):
        if info["start"] == 0:
            steps_x0.append(info["denoised"][:1].clone())
            step_sigmas.append(float(info["sigma"]))

    result = pipe.sample(callback=keep_first)
    samples = result.x  # model space
    base = run_settings(ckpt, pipe, result.asked, result.settings)
    meta = grid_settings(base, result.asked, len(samples), {})
    save_grid(pipe.to_images(samples).numpy(), out / "samples.png", nrow=10, meta=meta)
    frames, sigmas = [*steps_x0, samples[:1]], [*step_sigmas, 0.0]
    keep = sorted(set(torch.linspace(0, len(frames) - 1, 12).round().long().tolist()))
    trajectory = pipe.to_images(torch.cat([frames[i].cpu() for i in keep])).numpy()
    plot_trajectory(trajectory, [sigmas[i] for i in keep], out / "trajectory.png")
    plot_loss(out / "run" / "log.jsonl", out / "loss.png")
    report = {
        "steps": info["step"], "planned_steps": cfg.train.steps, "train_seconds": round(trained, 1),
        "total_seconds": round(time.perf_counter() - start, 1), "checkpoint": str(ckpt),
    }  # fmt: skip
    (out / MARKER).write_text(json.dumps(report, indent=1))
    print(
        f"trained {report['steps']} steps in {trained:.0f}s; wrote {out / 'samples.png'}, "
        f"{out / 'trajectory.png'}, {out / 'loss.png'} (total {report['total_seconds']:.0f}s)"
    )
    return report


__all__ = ["run_demo"]
