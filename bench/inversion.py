"""Reconstruction PSNR vs steps of DDIM inversion at CFG 1 and CFG w, with and without null-text.

    python bench/inversion.py [--run RUN | --train-steps 600] [--scales 3,7.5] [--steps 10,20,40]
        [-n 8] [--inner-steps 10] [--out bench-out/inversion] [--no-clip]

Held-out Fashion-MNIST (test split, 16×16) images are inverted with a class-conditional model
(trained briefly from `fashion_mnist16_class` when --run is not given) and sampled back:
  cfg1          invert at CFG 1, reconstruct at CFG 1 (the ODE round trip; first-order error)
  w:ddim        invert at CFG 1, reconstruct at CFG w (the pivot without null-text)
  w:ddim-both   invert and reconstruct at CFG w (diffusers' DDIM inversion at w)
  w:null-text   null-text inversion at CFG w, reconstruct at CFG w (Mokady et al. 2023)
Prints one PSNR table (dB, mean over images) and writes grids (input row, then each method) and
SDEdit/RePaint grids of the same images to --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import difflab
from difflab.conditioning.masks import seeded_masks
from difflab.core.imageio import save_grid
from difflab.data.datasets import load_dataset
from difflab.evaluation.metrics import psnr
from difflab.inference.edit import repaint, sdedit
from difflab.inference.inversion import invert, reconstruct
from difflab.inference.null_text import null_text_inversion


def train_model(out: Path, steps: int) -> Path:
    """A brief fashion_mnist16_class run with a small U-Net (fp32 on CPU)."""
    cfg = difflab.load_config("fashion_mnist16_class", [
        "model.net={name='unet', model_channels=16, channel_mult=[1, 2], num_res_blocks=1, "
        "attention_resolutions=[], num_heads=1}",
        f"train.steps={steps}", "train.batch_size=32", "train.bf16=false", "train.warmup=50",
        f"train.ckpt_every={steps}", "train.log_every=25", "train.ema_decay=0.99",
    ])  # fmt: skip
    return difflab.train(cfg, out)


def held_out(n: int) -> tuple[torch.Tensor, list[int]]:
    """The first n test images (uint8 [n, 1, 16, 16]) with their classes."""
    data = load_dataset({"name": "fashion_mnist", "split": "test", "size": 16,
                         "resize": "bilinear"})  # fmt: skip
    return data.x[:n], data.labels[:n].tolist()  # uint8 already


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run")
    p.add_argument("--train-steps", type=int, default=600)
    p.add_argument("--scales", default="3,7.5")
    p.add_argument("--steps", default="10,20,40")
    p.add_argument("-n", type=int, default=8)
    p.add_argument("--inner-steps", type=int, default=10)
    p.add_argument("--out", default="bench-out/inversion")
    p.add_argument("--no-clip", action="store_true",
                   help="drop the config's default guidance (static x̂0 clipping) in every run")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    run = Path(args.run) if args.run else train_model(out / "run", args.train_steps)
    pipe = difflab.load(run)
    if args.no_clip:
        pipe.config["sample"]["guidance"] = []  # request() appends the config's defaults
    print(f"model: {run} (ready in {time.perf_counter() - t0:.0f}s)")
    x, classes = held_out(args.n)
    scales = [float(s) for s in args.scales.split(",")]
    rows = {"input": x}
    print("| steps | cfg1 | " + " | ".join(
        f"{w:g}:{m}" for w in scales for m in ("ddim", "ddim-both", "null-text")) + " | seconds |")  # fmt: skip
    for steps in (int(s) for s in args.steps.split(",")):
        t = time.perf_counter()
        opts = {"classes": classes, "steps": steps, "sampler": "ddim"}
        inv = invert(pipe, x, **opts)
        rec = {"cfg1": reconstruct(pipe, inv)}
        for w in scales:
            g = f"cfg:scale={w}"
            rec[f"{w:g}:ddim"] = reconstruct(pipe, inv, guidance=g)
            rec[f"{w:g}:ddim-both"] = reconstruct(pipe, invert(pipe, x, guidance=g, **opts))
            nt = null_text_inversion(pipe, x, scale=w, inner_steps=args.inner_steps, **opts)
            rec[f"{w:g}:null-text"] = reconstruct(pipe, nt)
        cells = " | ".join(f"{psnr(r, x):.2f}" for r in rec.values())
        print(f"| {steps} | {cells} | {time.perf_counter() - t:.0f} |", flush=True)
        rows.update({f"{k}@{steps}": v for k, v in rec.items()})
    last = max(int(s) for s in args.steps.split(","))
    keep = ["input"] + [k for k in rows if k.endswith(f"@{last}")]
    save_grid(torch.cat([rows[k] for k in keep]).numpy(), out / "inversion_grid.png", nrow=args.n)
    print(f"inversion grid rows: {', '.join(keep)} -> {out / 'inversion_grid.png'}")
    edits = [x]
    for strength in (0.3, 0.6, 0.9):
        edits.append(sdedit(pipe, x, strength=strength, classes=classes, steps=20))
    save_grid(torch.cat(edits).numpy(), out / "sdedit_grid.png", nrow=args.n)
    inpaint = [x]
    for kind in ("centre", "half", "free_form"):
        m = seeded_masks(len(x), (16, 16), kind)
        inpaint += [torch.where(m.bool(), x, torch.full_like(x, 128)),
                    repaint(pipe, x, m, jump_length=5, resample=5, steps=20, classes=classes)]  # fmt: skip
    save_grid(torch.cat(inpaint).numpy(), out / "repaint_grid.png", nrow=args.n)
    print(f"sdedit rows: input, strength 0.3/0.6/0.9 -> {out / 'sdedit_grid.png'}")
    print(f"repaint rows: input, (masked, result) × centre/half/free_form -> {out / 'repaint_grid.png'}")
    print(f"total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
