"""Semantic guidance (Liu et al. 2023) on an unconditional model: reference / unguided / guided grid.

    python bench/semantic_grid.py --run RUN --encoder ENC.safetensors --judge FEAT.safetensors
        [--refs 9,1,8] [--kinds content,style,structure,text]
        [--scales content=4,style=4,structure=4,text=4] [-n 100] [--out bench-out/semantic]

For each reference (the first test image of each class in --refs) it samples n images with the
same seeds unguided and with each guidance kind (content/structure/style use the reference image,
text uses the class's first caption), clips x̂0 (static threshold), and reports how many samples a
judge (a domain feature net trained on clean real data, never the guiding encoder) assigns to the
reference's class. Writes grid.png (row = reference × kind, first cell = the reference), table.md
and table.json. The encoder comes from `difflab train-encoder` on the same data.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from difflab.conditioning.captions import captions
from difflab.core.imageio import save_images
from difflab.data.datasets import load_dataset
from difflab.evaluation.features import extract, load_feature_net
from difflab.evaluation.plots import pyplot
from difflab.inference.pipeline import load


def judged(judge, images: torch.Tensor) -> torch.Tensor:
    """Judge's argmax class [N] for uint8 images [N, C, H, W]."""
    return extract(judge, images, with_probs=True)[1].argmax(-1)


def draw(rows: list[tuple[str, np.ndarray, np.ndarray]], path: Path, cells: int) -> None:
    """One labelled row per (title, reference [C,H,W], samples [N,C,H,W]) as a PNG."""
    plt = pyplot()
    fig, axes = plt.subplots(len(rows), cells + 1,
                             figsize=(0.8 * (cells + 1) + 1.0, 0.85 * len(rows)))  # fmt: skip
    for r, (title, ref, samples) in enumerate(rows):
        for c, img in enumerate([ref, *samples[:cells]]):
            ax = axes[r, c]
            ax.imshow(img[0], cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(title, rotation=0, ha="right", va="center", fontsize=7)
                for side in ax.spines.values():
                    side.set_color("red")
    fig.tight_layout(pad=0.2)
    fig.subplots_adjust(left=1.0 / (0.8 * (cells + 1) + 1.0))  # room for the row labels
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="unconditional image model (checkpoint or run)")
    ap.add_argument("--encoder", required=True, help="`difflab train-encoder` checkpoint")
    ap.add_argument("--judge", required=True, help="domain feature net trained on clean data")
    ap.add_argument("--refs", default="9,1,8", help="classes whose first test image is a ref")
    ap.add_argument("--kinds", default="content,style,structure,text")
    ap.add_argument("--scales", default="content=4,style=4,structure=4,text=4")
    ap.add_argument("-n", type=int, default=100, help="samples per setting (judged)")
    ap.add_argument("--cells", type=int, default=10, help="samples shown per grid row")
    ap.add_argument("--sampler", default="dpmpp_2m")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--discretization", default="karras")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--out", type=Path, default=Path("bench-out/semantic"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pipe = load(args.run)
    judge = load_feature_net({"name": "domain", "path": args.judge})
    test = load_dataset({**judge.description["dataset"], "split": "test"})
    prompts = captions(judge.description["dataset"]["name"], test.class_names)
    scales = dict(item.split("=") for item in args.scales.split(","))
    kinds = args.kinds.split(",")

    def sample(guidance: list[str], prompt: list[str] = ()) -> torch.Tensor:
        return pipe(args.n, seed=0, batch_size=args.batch_size, sampler=args.sampler,
                    steps=args.steps, discretization=args.discretization, prompts=prompt,
                    guidance=[*guidance, "static_threshold"])  # [n, C, H, W] uint8

    unguided = sample([])
    base = judged(judge, unguided)
    rows, table = [], []
    for k in (int(v) for v in args.refs.split(",")):
        index = int((test.labels == k).nonzero()[0])
        ref_img = test.x[index].numpy()  # [C, H, W]
        save_images(ref_img[None], args.out / "refs", first_index=k)
        ref_path = args.out / "refs" / f"{k:06d}.png"
        name = test.class_names[k]
        rows.append((f"{name}\nunguided", ref_img, unguided.numpy()))
        table.append({"class": name, "kind": "unguided", "scale": 0.0,
                      "same_class": float((base == k).float().mean())})  # fmt: skip
        for kind in kinds:
            scale = float(scales.get(kind, 1.0))
            ckpt = f"ckpt={args.encoder},scale={scale}"
            if kind == "text":
                images = sample([f"text:{ckpt}"], prompt=[prompts[k][0]])
            else:
                images = sample([f"{kind}:{ckpt},ref={ref_path}"])
            same = float((judged(judge, images) == k).float().mean())
            table.append({"class": name, "kind": kind, "scale": scale, "same_class": same})
            rows.append((f"{kind} ×{scale:g}", ref_img, images.numpy()))
            print(f"{name:>12} {kind:>9} scale {scale:g}: judged {name} {same:.2f}")
    draw(rows, args.out / "grid.png", args.cells)
    (args.out / "table.json").write_text(json.dumps({"args": vars(args), "rows": table},
                                                    indent=1, default=str))  # fmt: skip
    lines = ["| reference class | guidance | scale | judged same class |", "|---|---|---|---|"]
    lines += [f"| {r['class']} | {r['kind']} | {r['scale']:g} | {r['same_class']:.2f} |"
              for r in table]  # fmt: skip
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out}/grid.png, table.md")


if __name__ == "__main__":
    main()
