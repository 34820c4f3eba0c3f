"""Your own images: the folder recipe ("new") vs fashion_mnist16 pointed at the folder ("old").

Two folders nobody tuned difflab to are built offline from scikit-learn's bundled photos
(china.jpg, flower.jpg; random crops at random scales): (a) ~300 grayscale 25×25 images, (b) ~400
colour 32×32 patches, each with a held-out 20 %. Each recipe trains for --seconds, samples 64
with its default sampler (the old config also with its pre-#21 default, dpmpp_2m, "old-ode"),
writes a grid PNG of the first 64 and prints per-channel mean/std vs the data, the share of
saturated tiles and KID ± its jackknife standard error (unbiased at small n) vs the held-out
images, in raw pixels and in a self-supervised feature net trained on the folder's training
images (SimCLR, `train_feature_net(objective="simclr")`, no labels), with the new/old KID ratio.

    python bench/own_folders.py --seconds 60            # small scale, ~5 minutes on 2 cores
    python bench/own_folders.py --seconds 600 --out own  # the issue's 10 minutes per training
    # the two recipes side by side under identical load (one thread each), after --prepare:
    python bench/own_folders.py --prepare --out own
    OMP_NUM_THREADS=1 python bench/own_folders.py --seconds 600 --out own --recipes new &
    OMP_NUM_THREADS=1 python bench/own_folders.py --seconds 600 --out own --recipes old
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

FOLDERS = {"gray25": dict(n=300, size=25, channels=1), "colour32": dict(n=400, size=32, channels=3)}
HELD_OUT = 0.2


def build_folder(root: Path, n: int, size: int, channels: int, seed: int = 0) -> tuple[Path, Path]:
    """n random square crops (side 1–4× size, random photo) resized to size; (train, held-out)."""
    from sklearn.datasets import load_sample_images

    train, held = root / "train", root / "heldout"
    if train.is_dir() and held.is_dir():
        return train, held
    photos = [Image.fromarray(im) for im in load_sample_images().images]
    rng = np.random.default_rng(seed)
    for i in range(n):
        photo = photos[rng.integers(len(photos))]
        side = int(size * rng.uniform(1, 4))
        x, y = rng.integers(photo.width - side), rng.integers(photo.height - side)
        crop = photo.crop((x, y, x + side, y + side)).resize((size, size), Image.BICUBIC)
        folder = held if i < int(n * HELD_OUT) else train
        folder.mkdir(parents=True, exist_ok=True)
        (crop.convert("L") if channels == 1 else crop).save(folder / f"{i:04d}.png")
    return train, held


def recipe_config(recipe: str, train_dir: Path, seconds: float):
    """The config of `recipe` for the folder: the folder recipe, or fashion_mnist16 pointed at it
    (the recipe's image size; attention moved to the net's lowest level, the user's edit)."""
    from difflab.core.config import load_config
    from difflab.training.recipe import folder_recipe

    new = folder_recipe(train_dir)
    if recipe == "new":
        budget = [f"train.max_seconds={seconds}", "train.steps=100000", "train.log_every=5"]
        cfg = load_config(new.config, budget)
        return cfg, new.notes
    ds = dict(new.config["data"]["dataset"])
    size = ds["size"] // 4 * 4
    sets = [f"data.dataset={{name='folder', path='{ds['path']}', channels={ds['channels']}, "
            f"size={size}}}", f"model.net.attention_resolutions=[{size // 4}]",
            f"train.max_seconds={seconds}", "train.steps=100000", "train.ckpt_every=0", "train.log_every=5"]  # fmt: skip
    return load_config("fashion_mnist16", sets), [f"fashion_mnist16 at {size}×{size}"]


def pixels(x: torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] → [-1, 1]."""
    return x.float() / 127.5 - 1


def feature_file(root: Path, folder: str, steps: int = 1500) -> Path:
    """A SimCLR feature net trained (once, cached) on the folder's training images, no labels."""
    from difflab.evaluation.feature_training import train_feature_net

    path = root / f"{folder}_features.safetensors"
    if not path.exists():
        train_dir, _ = build_folder(root / folder, **FOLDERS[folder])
        from difflab.training.recipe import net_size

        spec = {"name": "folder", "path": str(train_dir.resolve()),
                "channels": FOLDERS[folder]["channels"],
                "size": net_size(FOLDERS[folder]["size"])[0]}  # the size the samples have  # fmt: skip
        train_feature_net(spec, steps=steps, out_path=path, objective="simclr")
    return path


def report(tag: str, samples: torch.Tensor, data: torch.Tensor, held: torch.Tensor,
           features: Path) -> dict[str, float]:  # fmt: skip
    """Print per-channel mean/std vs the data, saturated share and KID vs held-out (raw pixels and
    the folder's own features); return the numbers."""
    from difflab.evaluation.features import extract, load_feature_net
    from difflab.evaluation.metrics import kid_jackknife

    s, d = pixels(samples), pixels(data)
    kids = {}
    for name, spec in (("raw", "raw"), ("ssl", {"name": "domain", "path": str(features)})):
        net = load_feature_net(spec)
        kids[name] = kid_jackknife(extract(net, samples)[0], extract(net, held)[0])
    fmt = lambda v: "(" + ", ".join(f"{a:.2f}" for a in v.tolist()) + ")"  # noqa: E731
    saturated = float(((s.abs() > 0.98).float().mean((1, 2, 3)) > 0.5).float().mean())
    print(f"  {tag:9s} mean {fmt(s.mean((0, 2, 3)))} vs data {fmt(d.mean((0, 2, 3)))}; std "
          f"{fmt(s.std((0, 2, 3)))} vs {fmt(d.std((0, 2, 3)))}; saturated tiles "
          f"{saturated:.0%}; " + "; ".join(f"KID-{k} {m:.4f} ± {se:.4f}"
                                            for k, (m, se) in kids.items()))  # fmt: skip
    return {f"kid_{k}": m for k, (m, _) in kids.items()} | {"saturated": saturated}


def run(folder: str, recipe: str, root: Path, seconds: float, n: int) -> dict[str, float]:
    from difflab.core.imageio import save_grid
    from difflab.data.datasets import load_dataset
    from difflab.evaluation.in_loop import train
    from difflab.inference.pipeline import load

    train_dir, held_dir = build_folder(root / folder, **FOLDERS[folder])
    cfg, notes = recipe_config(recipe, train_dir, seconds)
    print(f"{folder} / {recipe}: " + "; ".join(notes))
    run_dir = root / f"{folder}_{recipe}_run"
    ckpt = train(cfg, run_dir, resume=run_dir.exists())
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    print(f"  trained {max((r['step'] for r in log if 'step' in r), default=0)} steps")
    pipe = load(ckpt)
    fit = lambda spec: load_dataset({**spec, "size": cfg.data.dataset["size"]}).x  # noqa: E731
    data, held = fit(cfg.data.dataset), fit({**cfg.data.dataset, "path": str(held_dir)})
    samplers = {"default": {}}
    if recipe == "old":
        samplers["old-ode"] = {"sampler": {"name": "dpmpp_2m"}}  # the pre-#21 default
    kids, features = {}, feature_file(root, folder)
    for tag, options in samplers.items():
        images = pipe.to_images(pipe.sample(n, seed=0, **options).x)  # uint8 [n, C, H, W]
        save_grid(images[:64].numpy(), root / f"{folder}_{recipe}_{tag}.png", nrow=8)
        numbers = report(f"{recipe}/{tag}", images, data, held, features)
        kids[f"{recipe}/{tag}"] = numbers["kid_ssl"]
        with open(root / "results.jsonl", "a") as f:
            f.write(json.dumps({"folder": folder, "recipe": recipe, "sampler": tag, **numbers})
                    + "\n")  # fmt: skip
    return kids


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="training time per recipe")
    p.add_argument("--out", default="own_folders", help="folders, runs and grids")
    p.add_argument("--folders", nargs="+", default=list(FOLDERS), choices=list(FOLDERS))
    p.add_argument("--recipes", nargs="+", default=["new", "old"], choices=["new", "old"])
    p.add_argument("-n", type=int, default=256, help="samples per recipe (the grid shows 64)")
    p.add_argument("--prepare", action="store_true",
                   help="only build the folders and their feature nets (before parallel runs)")
    args = p.parse_args()
    root = Path(args.out)
    if args.prepare:
        for folder in args.folders:
            print(f"{folder}: features {feature_file(root, folder)}")
        return
    for folder in args.folders:
        kids = {}
        for recipe in args.recipes:
            kids |= run(folder, recipe, root, args.seconds, args.n)
        if "new/default" in kids and "old/default" in kids:
            ratio = kids["new/default"] / max(kids["old/default"], 1e-9)
            print(f"  {folder}: KID-ssl new/old = {ratio:.2f}")


if __name__ == "__main__":
    main()
