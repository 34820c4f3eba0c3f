"""Inpainting and SDEdit on held-out Fashion-MNIST 16×16: replace-only, RePaint and a trained
inpainting model (GLIDE §4 / Palette §3, the image conditioner's `masked` source) at equal NFE,
and SDEdit's faithfulness/realism curve over strengths.

    python bench/inpainting.py --features FEAT.safetensors [--uncond RUN --inpaint RUN |
        --train-steps 1400] [-n 300] [--nfe 20] [--out bench-out/inpainting]

Two models with the same small U-Net and training budget are trained when not given: an
unconditional one (`fashion_mnist16`) for replace-only and RePaint, and an inpainting one
(`fashion_mnist16_inpaint`, random box / free-form training masks). All three sample with one
Euler (DDIM) grid so NFE = network calls per image: replace-only takes `nfe` steps, RePaint
with jump length j and r resamplings takes a grid whose time-travelled path has `nfe` steps.
Inpainting table: masked-region L2 (mean squared error over the filled pixels, pixels in
[-1, 1]) and FD (domain features, FEAT from `difflab train-features`) against held-out images
(a disjoint slice of the test split), for a centre box and free-form masks.
SDEdit table: the inputs are blurred or noised held-out images; L2 to the clean image and to the
degraded input, and FD, per strength. Writes edit_inpaint.png and edit_sdedit.png grids.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import difflab
from difflab.conditioning.degrade import gaussian_blur
from difflab.conditioning.masks import seeded_masks
from difflab.core.imageio import pixels_to_uint8, save_grid, uint8_to_pixels
from difflab.data.datasets import load_dataset
from difflab.evaluation.features import extract, load_feature_net
from difflab.evaluation.metrics import feature_stats, frechet_distance
from difflab.inference.edit import repaint, repaint_steps, sdedit

NET = ("model.net={name='unet', model_channels=16, channel_mult=[1, 2], num_res_blocks=1, "
       "attention_resolutions=[], num_heads=1}")  # fmt: skip
GRID = {"sampler": "ddim", "discretization": {"name": "karras", "sigma_max": 80.0}}


def train(config: str, out: Path, steps: int) -> Path:
    """A brief run of `config` with a small U-Net (fp32 on CPU)."""
    cfg = difflab.load_config(config, [
        NET, f"train.steps={steps}", "train.batch_size=48", "train.bf16=false", "train.warmup=50",
        f"train.ckpt_every={steps}", "train.log_every=50", "train.ema_decay=0.995",
    ])  # fmt: skip
    return difflab.train(cfg, out)


def held_out(n: int, n_ref: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the first n test images, the next n_ref as FD reference), uint8 [k, 1, 16, 16]."""
    data = load_dataset({"name": "fashion_mnist", "split": "test", "size": 16,
                         "resize": "bilinear"})  # fmt: skip
    x = data.x[: n + n_ref]  # uint8
    return x[:n], x[n:]


class FD:
    """Fréchet distance of uint8 images to the reference images, in domain features."""

    def __init__(self, features: str, ref: torch.Tensor):
        self.net = load_feature_net({"name": "domain", "path": features})
        self.ref = feature_stats(extract(self.net, ref)[0].numpy())

    def __call__(self, images: torch.Tensor) -> float:
        return frechet_distance(*feature_stats(extract(self.net, images)[0].numpy()), *self.ref)


def masked_l2(out: torch.Tensor, x: torch.Tensor, m: torch.Tensor) -> float:
    """Mean squared error over the filled pixels (m = 0), pixels in [-1, 1]."""
    fill = 1 - m.expand_as(x)
    err = (uint8_to_pixels(out) - uint8_to_pixels(x)) ** 2 * fill
    return float(err.sum() / fill.sum())


def l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared error of uint8 images as pixels in [-1, 1]."""
    return float(((uint8_to_pixels(a) - uint8_to_pixels(b)) ** 2).mean())


def inpaint_table(uncond, inpaint, x, fd, nfe: int, rp: tuple[int, int, int], rows: dict) -> None:
    """Replace-only, RePaint and the trained model on centre / free-form masks at equal NFE."""
    steps, jump, resample = rp
    if repaint_steps(steps, jump, resample) != nfe:
        raise SystemExit(f"RePaint {rp} takes {repaint_steps(steps, jump, resample)} steps, "
                         f"not --nfe {nfe}; choose another --repaint")  # fmt: skip
    print(f"\ninpainting, n={len(x)}, NFE {nfe} each (RePaint: {steps} steps, jump {jump}, "
          f"resample {resample}); masked-region L2 (pixels in [-1, 1]) and FD-domain")
    print("| mask | method | masked L2 | FD | seconds |\n|---|---|---|---|---|")
    for kind in ("centre", "free_form"):
        m = seeded_masks(len(x), (16, 16), kind, seed=0)  # [n, 1, 16, 16], 1 = keep
        rows[f"{kind}: masked"] = torch.where(m.bool(), x, torch.full_like(x, 128))
        runs = {
            "replace-only": lambda: repaint(uncond, x, m, resample=1, steps=nfe, **GRID),
            "RePaint": lambda: repaint(uncond, x, m, jump_length=jump, resample=resample,
                                       steps=steps, **GRID),  # fmt: skip
            "inpainting model": lambda: inpaint(len(x), images=x, masks=m, steps=nfe, **GRID),
        }
        for name, fn in runs.items():
            t = time.perf_counter()
            out = fn()
            rows[f"{kind}: {name}"] = out
            print(f"| {kind} | {name} | {masked_l2(out, x, m):.4f} | {fd(out):.2f} | "
                  f"{time.perf_counter() - t:.0f} |", flush=True)  # fmt: skip


def sdedit_table(uncond, x, fd, steps: int, strengths: list[float], rows: dict) -> None:
    """SDEdit from blurred and noised held-out images: faithfulness vs realism per strength."""
    g = torch.Generator().manual_seed(0)
    pixels = uint8_to_pixels(x)
    degraded = {
        "blur σ=1px": pixels_to_uint8(gaussian_blur(pixels, torch.ones(len(x)))),
        "noise σ=0.4": pixels_to_uint8(pixels + 0.4 * torch.randn(pixels.shape, generator=g)),
    }
    print(f"\nSDEdit, n={len(x)}, {steps}-step grid (NFE = ⌈strength·{steps}⌉); L2 to the clean "
          "image and to the degraded input (pixels in [-1, 1]), FD-domain")
    print("| input | strength | L2 clean | L2 input | FD |\n|---|---|---|---|---|")
    for name, y in degraded.items():
        print(f"| {name} | 0 (input) | {l2(y, x):.4f} | 0 | {fd(y):.2f} |", flush=True)
        rows[f"{name}"] = y
        for s in strengths:
            out = sdedit(uncond, y, strength=s, steps=steps, **GRID)
            rows[f"{name} → {s:g}"] = out
            print(f"| {name} | {s:g} | {l2(out, x):.4f} | {l2(out, y):.4f} | {fd(out):.2f} |",
                  flush=True)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--features", required=True)
    p.add_argument("--uncond")
    p.add_argument("--inpaint")
    p.add_argument("--train-steps", type=int, default=1400)
    p.add_argument("-n", type=int, default=300)
    p.add_argument("--n-ref", type=int, default=2000)
    p.add_argument("--nfe", type=int, default=20)
    p.add_argument("--repaint", default="10,5,3", help="RePaint steps,jump,resample")
    p.add_argument("--strengths", default="0.2,0.4,0.6,0.8,1.0")
    p.add_argument("--show", type=int, default=8, help="images per grid row")
    p.add_argument("--out", default="bench-out/inpainting")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    uncond = difflab.load(args.uncond or train("fashion_mnist16", out / "uncond",
                                               args.train_steps))  # fmt: skip
    inpaint = difflab.load(args.inpaint or train("fashion_mnist16_inpaint", out / "inpaint",
                                                 args.train_steps))  # fmt: skip
    x, ref = held_out(args.n, args.n_ref)
    fd = FD(args.features, ref)
    print(f"models ready in {time.perf_counter() - t0:.0f}s; FD-domain of {args.n} held-out "
          f"images to the {args.n_ref} reference images: {fd(x):.2f}")
    rows = {"input": x}
    rp = tuple(int(v) for v in args.repaint.split(","))
    inpaint_table(uncond, inpaint, x, fd, args.nfe, rp, rows)
    grid = [rows[k][: args.show] for k in rows]
    save_grid(torch.cat(grid).numpy(), out / "edit_inpaint.png", nrow=args.show)
    print(f"grid rows: {', '.join(rows)} -> {out / 'edit_inpaint.png'}")
    rows = {"input": x}
    sdedit_table(uncond, x, fd, args.nfe, [float(s) for s in args.strengths.split(",")], rows)
    save_grid(torch.cat([rows[k][: args.show] for k in rows]).numpy(), out / "edit_sdedit.png",
              nrow=args.show)  # fmt: skip
    print(f"grid rows: {', '.join(rows)} -> {out / 'edit_sdedit.png'}")
    print(f"total {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
