"""unCLIP prior quality: held-out cosine(sampled, true CLIP image embedding) vs the paper's
baseline, the caption's own text embedding used as the image embedding (Ramesh et al. 2022).

    python bench/unclip_prior.py [--clip CLIP.safetensors] [--size 16] [--limit N] [--prior-steps 1000]
        [--encoder-steps 400] [--scales 1,2] [--seeds 0,1,2] [--eval-n 256] [--out bench-out/prior]

Data: emoji with label = "name" (each emoji its own caption "<name> emoji"); held out: the fixed
10% of the embedding cache's items (emoji names the prior never saw). Without --clip, a quick Clip
is trained here: a noise-aware encoder (`train_encoder`) read at its smallest σ (σ → 0), in
MiniLM's text space; an image tower trained on clean images only (`difflab train-clip`) is the
real one. The prior is sampled with each seed (64 DDIM steps); the median over seeds is reported
with its ratio to the baseline, which is the same for every seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from difflab.data.datasets import load_dataset
from difflab.data.embeddings import to_unit
from difflab.evaluation.prior import prior_cosine
from difflab.inference.pipeline import load
from difflab.storage.clip_files import open_clip
from difflab.training.encoder import train_encoder
from difflab.training.prior import train_prior


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clip", help="Clip file (train-clip) or noise-aware encoder (train-encoder)")
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--limit", type=int, help="keep this many emoji (evenly spaced; default all)")
    p.add_argument("--encoder-steps", type=int, default=400)
    p.add_argument("--prior-steps", type=int, default=1000)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--scales", default="1,2")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--eval-n", type=int, default=256)
    p.add_argument("--out", default="bench-out/prior")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {"name": "emoji", "label": "name", "size": args.size, "split": "all"}
    if args.limit:
        data["limit"] = args.limit
    start = time.perf_counter()
    clip_path = args.clip
    if clip_path is None:
        clip_path = out / "encoder.safetensors"
        if not clip_path.exists():
            train_encoder(data, clip_path, steps=args.encoder_steps, batch_size=64,
                          net={"model_channels": 16})  # fmt: skip
    clip, sha256 = open_clip(clip_path)
    t_clip = time.perf_counter() - start
    run = out / "prior"
    overrides = [f"train.steps={args.prior_steps}", f"model.net.width={args.width}"]
    path = train_prior(data, clip, run, clip_sha256=sha256, cache=out / "embeddings.safetensors",
                       overrides=overrides, resume=run.exists())  # fmt: skip
    t_prior = time.perf_counter() - start - t_clip
    held_out = load_dataset({"name": "clip_embeddings", "path": str(out / "embeddings.safetensors"),
                             "split": "test"})  # fmt: skip
    train_set = load_dataset({"name": "clip_embeddings",
                              "path": str(out / "embeddings.safetensors"), "split": "train"})
    mean = to_unit(train_set.x).mean(0)  # [D] the reference that ignores the caption
    prior, rows = load(path), []
    for scale in [float(s) for s in args.scales.split(",")]:
        runs = [prior_cosine(prior, held_out, n=args.eval_n, seed=int(seed), scale=scale,
                             mean=mean) for seed in args.seeds.split(",")]  # fmt: skip
        median = statistics.median(r["prior"] for r in runs)
        baseline = runs[0]["baseline"]
        rows.append({"scale": scale, "prior": median, "baseline": baseline, "mean": runs[0]["mean"],
                     "ratio": median / baseline, "n": runs[0]["n"],
                     "per_seed": [r["prior"] for r in runs]})  # fmt: skip
    print(f"clip: {clip_path} ({clip.meta.get('kind', 'clip')}, {t_clip:.0f}s); prior: {path} "
          f"({args.prior_steps} steps, {t_prior:.0f}s)")  # fmt: skip
    print("| CFG scale | prior cos (median over seeds) | caption-embedding baseline | ratio | "
          "mean training embedding | n |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scale']:g} | {r['prior']:.3f} | {r['baseline']:.3f} | {r['ratio']:.2f} "
              f"| {r['mean']:.3f} | {r['n']} |")  # fmt: skip
    (out / "table.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
