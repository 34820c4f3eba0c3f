"""L_simple vs L_hybrid with learned variance on Fashion-MNIST (cosine schedule, same wall clock).

    python bench/nll_hybrid.py [--size 16] [--seconds 600] [--n 500] [--fd-n 1000]
        [--features FEAT.safetensors] [--out bench-out/nll_hybrid]

Trains (or, with --reuse, loads) two models for --seconds each: `fashion_mnist16` (ε, L_simple,
fixed variance) and `fashion_mnist_hybrid` (ε + learned variance, L_hybrid), then reports on the
test split bits/dim by the full variational bound (per term) and by the probability-flow ODE, FD
of DDPM ancestral samples (learned variance for the hybrid model, fixed small for L_simple) at 50
and 1000 steps against a domain feature net (trained here unless --features is given), and writes
sample grids. Writes table.json and table.md in --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from difflab import train
from difflab.core.config import load_config
from difflab.core.imageio import save_grid
from difflab.data.datasets import load_dataset
from difflab.evaluation.evaluate import evaluate, reference_stats
from difflab.evaluation.feature_training import train_feature_net
from difflab.evaluation.features import load_feature_net
from difflab.evaluation.likelihood import bits_per_dim
from difflab.inference.pipeline import load
from difflab.storage import checkpoint as ckpt

MODELS = {"simple": "fashion_mnist16", "hybrid": "fashion_mnist_hybrid"}


def data_spec(size: int, split: str) -> dict:
    return {"name": "fashion_mnist", "split": split, "size": size, "resize": "bilinear"}


def train_or_load(name: str, config: str, args) -> Path:
    run = args.out / f"run-{name}"
    if args.reuse and ckpt.list_checkpoints(run):
        return ckpt.list_checkpoints(run)[-1]
    cfg = load_config(config, [f"train.max_seconds={args.seconds}", "train.steps=1000000",
                               "train.ckpt_every=0", f"train.seed={args.seed}"])  # fmt: skip
    cfg.data.dataset = data_spec(args.size, "train")
    start = time.perf_counter()
    path = train(cfg, run)
    print(f"{name}: trained {time.perf_counter() - start:.0f} s -> {path}")
    return path


def fd_at(pipe, steps: int, args, ref, net, grid_path: Path) -> float:
    """FD of DDPM ancestral samples, x̂0 clipped as improved-diffusion's clip_denoised does."""
    images = pipe(args.fd_n, seed=0, batch_size=args.batch_size, sampler="ddpm", steps=steps,
                  discretization="uniform", guidance=["static_threshold"])  # fmt: skip
    save_grid(images[:64].numpy(), grid_path)
    return evaluate(images, ref, net, ("fd",))["fd"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--seconds", type=float, default=600.0, help="training wall clock per model")
    p.add_argument("--n", type=int, default=500, help="test images for bits/dim")
    p.add_argument("--fd-n", type=int, default=1000, help="samples per FD")
    p.add_argument("--fd-steps", default="50,1000")
    p.add_argument("--vlb-steps", type=int, help="respaced VLB steps (default: all T; smoke only)")
    p.add_argument("--probes", type=int, default=1)
    p.add_argument("--features", help="domain feature net (.safetensors); trained if absent")
    p.add_argument("--feature-steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reuse", action="store_true", help="load existing runs in --out")
    p.add_argument("--out", type=Path, default=Path("bench-out/nll_hybrid"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    features = args.features or str(args.out / "features.safetensors")
    if not Path(features).exists():
        train_feature_net(data_spec(args.size, "train"), steps=args.feature_steps,
                          out_path=features, seed=args.seed)  # fmt: skip
    net = load_feature_net({"name": "domain", "path": features})
    ref = reference_stats(data_spec(args.size, "test"), net, args.fd_n)
    test = load_dataset(data_spec(args.size, "test")).x[: args.n]

    rows = {}
    for name, config in MODELS.items():
        path = train_or_load(name, config, args)
        pipe = load(path)
        info = pipe.info
        start = time.perf_counter()
        nll = bits_per_dim(pipe.denoiser, test, pipe.shape, method="both",
                           batch_size=args.batch_size, steps=args.vlb_steps, probes=args.probes,
                           seed=args.seed)  # fmt: skip
        row = {"train_steps": info.get("step"), "nll": nll,
               "nll_seconds": time.perf_counter() - start}  # fmt: skip
        for steps in (int(s) for s in args.fd_steps.split(",")):
            grid = args.out / f"grid-{name}-{steps}.png"
            row[f"fd_{steps}"] = fd_at(pipe, steps, args, ref, net, grid)
        rows[name] = row
        print(name, json.dumps({k: v for k, v in row.items() if k != "nll"}))

    (args.out / "table.json").write_text(json.dumps({"args": vars(args), "rows": rows},
                                                    indent=1, default=str))  # fmt: skip
    lines = [f"n = {args.n} test images, FD with {args.fd_n} samples ({ref['fd_name']})", "",
             "| model | steps | VLB bits/dim (prior / KL / decoder) | ODE bits/dim | "
             + " | ".join(f"FD@{s}" for s in args.fd_steps.split(",")) + " |",
             "|---" * (4 + len(args.fd_steps.split(","))) + "|"]  # fmt: skip
    for name, row in rows.items():
        v, o = row["nll"]["vlb"], row["nll"]["ode"]
        fds = " | ".join(f"{row[f'fd_{s}']:.2f}" for s in args.fd_steps.split(","))
        lines.append(
            f"| {name} | {row['train_steps']} | {v['total']['mean']:.3f} ± {v['total']['ci95']:.3f}"
            f" ({v['prior']['mean']:.3f} / {v['kl']['mean']:.3f} / {v['decoder']['mean']:.3f}) | "
            f"{o['total']['mean']:.3f} ± {o['total']['ci95']:.3f} | {fds} |"
        )
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
