"""Judged class accuracy and FD of guided samples vs guidance scale (the fidelity/diversity trade).

    python bench/guidance_accuracy.py --judge FEAT.safetensors --ref REF.npz
        [--cfg-run CLASS_RUN --cfg-scales 0,1,2,4]
        [--clf-run RUN --classifier CLF.safetensors --clf-scales 0,1,4,10]
        [--text-run TEXT_RUN --text-scales 1,2,4] [-n 500] [--sampler dpmpp_2m --steps 20]
        [--out bench-out/guidance]

Sample i is asked for class i mod K. The judge is a domain feature net trained on clean real data
(`difflab train-features`), never the classifier used for guidance; accuracy = its argmax equals
the asked class. CFG uses a class-conditional model (scale 0 = unconditional, 1 = conditional);
classifier guidance uses any model plus a noise-aware classifier (`difflab train-classifier`);
text-to-image asks a text-conditional model with a caption naming the class. Every setting also
gets x̂0 clipped to [−1, 1] (static threshold). Writes table.json, table.md, accuracy_fd.png and one
grid per setting (row = class).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from difflab.core.imageio import save_grid
from difflab.evaluation.evaluate import evaluate, load_ref
from difflab.evaluation.features import load_feature_net
from difflab.evaluation.plots import pyplot
from difflab.inference.pipeline import load


def run_setting(args, run, specs, labels, judge, ref) -> tuple[dict, torch.Tensor]:
    """Samples for one (model, guidance) setting → metrics and uint8 images."""
    pipe = load(run)
    guided = pipe.conditioner is not None or any(s.startswith("classifier") for s in specs)
    classes = labels.unique().tolist() if guided else []  # sample i asks for class i mod K
    start = time.perf_counter()
    images = pipe(len(labels), seed=args.seed, batch_size=args.batch_size, sampler=args.sampler,
                  steps=args.steps, discretization=args.discretization, classes=classes,
                  guidance=[*specs, "static_threshold"])  # fmt: skip
    seconds = time.perf_counter() - start
    metrics = evaluate(images, ref, judge, ("fd", "acc"), labels=labels)
    return {"fd": metrics["fd"], "accuracy": metrics["accuracy"], "n": len(images),
            "s_per_image": seconds / len(images)}, images  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judge", required=True, help="domain feature net trained on clean data")
    ap.add_argument("--ref", required=True, help="reference stats made with the judge net")
    ap.add_argument("--cfg-run")
    ap.add_argument("--cfg-scales", default="0,1,2,4")
    ap.add_argument("--clf-run")
    ap.add_argument("--classifier")
    ap.add_argument("--clf-scales", default="0,1,4,10")
    ap.add_argument("--text-run")
    ap.add_argument("--text-scales", default="1,2,4")
    ap.add_argument("-n", type=int, default=500)
    ap.add_argument("--sampler", default="dpmpp_2m")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--discretization", default="karras")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench-out/guidance")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    judge = load_feature_net({"name": "domain", "path": args.judge})
    ref = load_ref(args.ref)
    labels = torch.arange(args.n) % judge.num_classes  # [n]

    settings = []
    if args.cfg_run:
        settings += [("cfg", args.cfg_run, float(w), [f"cfg:scale={w}"])
                     for w in args.cfg_scales.split(",")]  # fmt: skip
    if args.clf_run:
        settings += [("classifier", args.clf_run, float(s),
                      [f"classifier:ckpt={args.classifier},scale={s}"] if float(s) else [])
                     for s in args.clf_scales.split(",")]  # fmt: skip
    if args.text_run:
        settings += [("text cfg", args.text_run, float(w), [f"cfg:scale={w}"])
                     for w in args.text_scales.split(",")]  # fmt: skip
    rows = []
    for kind, run, scale, specs in settings:
        result, images = run_setting(args, run, specs, labels, judge, ref)
        rows.append({"guidance": kind, "scale": scale, **result})
        order = torch.argsort(labels[:100], stable=True)  # a row per class
        save_grid(images[:100][order].numpy(), out / f"{kind.replace(' ', '_')}_{scale:g}.png",
                  nrow=10)  # fmt: skip
        print(
            f"{kind:>10} scale {scale:5g}: accuracy {result['accuracy']:.3f}  "
            f"{ref['fd_name']} {result['fd']:.3f}  ({result['s_per_image'] * 1e3:.1f} ms/img)"
        )

    (out / "table.json").write_text(json.dumps({"judge": judge.description, "rows": rows,
                                                "sampler": args.sampler, "steps": args.steps},
                                               indent=1))  # fmt: skip
    lines = [
        f"| guidance | scale | judged accuracy | {ref['fd_name']} | n |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['guidance']} | {r['scale']:g} | {r['accuracy']:.3f} | {r['fd']:.3f} | "
              f"{r['n']} |" for r in rows]  # fmt: skip
    (out / "table.md").write_text("\n".join(lines) + "\n")
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for kind in dict.fromkeys(r["guidance"] for r in rows):
        pts = [r for r in rows if r["guidance"] == kind]
        a1.plot([r["scale"] for r in pts], [r["accuracy"] for r in pts], marker="o", label=kind)
        a2.plot([r["scale"] for r in pts], [r["fd"] for r in pts], marker="o", label=kind)
    a1.set(xlabel="guidance scale", ylabel="judged accuracy")
    a2.set(xlabel="guidance scale", ylabel=ref["fd_name"])
    a1.legend()
    fig.tight_layout()
    fig.savefig(out / "accuracy_fd.png", dpi=120)
    print(f"wrote {out}/table.md, accuracy_fd.png and grids")


if __name__ == "__main__":
    main()
