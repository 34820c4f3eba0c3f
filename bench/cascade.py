"""Cascade vs single stage at equal training time, and noise-conditioning augmentation (CDM §3.2).

    python bench/cascade.py [--seconds 600] [--n 500] [--size 16] [--features raw] [--out DIR]

Arms on Fashion-MNIST (final size --size, base at half of it), each trained for a share of the
same wall-clock budget --seconds:
  single    one unconditional model at the final size, --seconds
  cascade   base at size/2 for --seconds/2, then SR size/2 → size for --seconds/2, with and
            without noise-conditioning augmentation (aug_max 0.5), sampled at several aug levels,
            non-truncated and truncated
FD on the --features space ("raw" pixels by default, or a domain feature net checkpoint)
against held-out test images at the final size. Writes table.json, table.md and a grid per row.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from difflab import load, train
from difflab.core.config import load_config
from difflab.core.imageio import save_grid
from difflab.data.datasets import load_dataset
from difflab.evaluation.features import extract, load_feature_net
from difflab.evaluation.metrics import feature_stats, frechet_distance
from difflab.inference.cascade import Cascade

NET = ("model.net={name='unet', model_channels=%d, channel_mult=[1, 2], num_res_blocks=1, "
       "attention_resolutions=[]}")  # fmt: skip


def train_arm(out: Path, size: int, seconds: float, width: int, cond: str | None = None) -> Path:
    """A run trained on Fashion-MNIST at `size` for `seconds` of wall time."""
    over = [NET % width, f"data.dataset.size={size}", "train.steps=1000000",
            f"train.max_seconds={seconds}", "train.batch_size=64", "train.warmup=50",
            "train.log_every=100", "train.ckpt_every=1000000", "train.ema_decay=0.99"]
    if cond:
        over.append(f"model.cond={cond}")
    if not (out / "config.toml").exists():
        train(load_config("fashion_mnist16", over), out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=600.0, help="training budget per arm")
    p.add_argument("--n", type=int, default=500, help="samples per FD")
    p.add_argument("--size", type=int, default=16, help="final image size")
    p.add_argument("--width", type=int, default=32, help="U-Net model_channels")
    p.add_argument("--steps", type=int, default=20, help="sampling steps per stage")
    p.add_argument("--features", default="raw", help="'raw' or a domain feature net checkpoint")
    p.add_argument("--out", default="bench-out/cascade")
    args = p.parse_args()
    out = Path(args.out)
    size, half, t = args.size, args.size // 2, args.seconds
    runs = {
        "single": train_arm(out / "single", size, t, args.width),
        "base": train_arm(out / "base", half, t / 2, args.width),
        "sr_aug": train_arm(out / "sr_aug", size, t / 2, args.width,
                            "{name='image', factor=2, aug_max=0.5}"),  # fmt: skip
        "sr_plain": train_arm(out / "sr_plain", size, t / 2, args.width, "{name='image', factor=2}"),
    }
    pipes = {k: load(v) for k, v in runs.items()}
    feature_net = load_feature_net(
        "raw" if args.features == "raw" else {"name": "domain", "path": args.features}
    )
    test = load_dataset({"name": "fashion_mnist", "split": "test", "size": size,
                         "resize": "bilinear"})
    held = test.x[: max(2000, args.n)]  # uint8 [N, 1, size, size]
    feats, _ = extract(feature_net, held)
    mu, sigma = feature_stats(feats)
    arms = {"single (size only)": (lambda: pipes["single"](args.n, seed=0, steps=args.steps))}
    for sr in ("sr_plain", "sr_aug"):
        levels = (0.0,) if sr == "sr_plain" else (0.0, 0.1, 0.25)
        for level in levels:
            for truncate in (False, True) if level else (False,):
                cascade = Cascade([pipes["base"], pipes[sr]],
                                  [{"steps": args.steps}, {"steps": args.steps, "aug_level": level}],
                                  truncate=truncate)  # fmt: skip
                name = f"cascade {sr} s={level}" + (" truncated" if truncate else "")
                arms[name] = (lambda c=cascade: c(args.n, seed=0))
    rows = []
    for name, make in arms.items():
        start = time.perf_counter()
        images = make()
        seconds = time.perf_counter() - start
        fd = frechet_distance(mu, sigma, *feature_stats(extract(feature_net, images)[0]))
        rows.append({"arm": name, "fd": round(float(fd), 3), "sample_s": round(seconds, 1)})
        save_grid(images[:64].numpy(), out / "grids" / (name.replace(" ", "_") + ".png"))
        print(f"{name:40s} FD {fd:8.3f}  ({seconds:.1f}s to sample {args.n})", flush=True)
    steps = {k: load(v).info.get("step") for k, v in runs.items()}
    result = {"args": vars(args), "train_steps": steps, "rows": rows}
    (out / "table.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["| arm | FD | sampling s |", "|---|---|---|"]
    lines += [f"| {r['arm']} | {r['fd']} | {r['sample_s']} |" for r in rows]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print(f"training steps in the budget: {steps}")


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
