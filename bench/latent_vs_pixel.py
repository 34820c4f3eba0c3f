"""Latent vs pixel diffusion at equal network width (issue 13): training images/s, sampling
images/s, and FD at equal wall-clock training time.

Both models are the same difflab U-Net (same model_channels, channel_mult, res blocks); the
latent one works on a KL codec's latents (f=4: 32×32×1 → 8×8×4; emoji 64×64×3 → 16×16×4) and
trains from a latent cache
(`encode_dataset`, timed separately: it is paid once). Throughput: short training runs and
sampling passes interleaved A/B/A/B, medians. Quality: each model trains for the same wall-clock
seconds, then n samples (same sampler and steps) are compared with held-out test images by the
Fréchet distance in a domain feature net's space (trained here unless --features is given).

    python bench/latent_vs_pixel.py --codec RUN/autoencoder.safetensors
    python bench/latent_vs_pixel.py --seconds 1800 --n 2000 --width 64      # the full-size run
    python bench/latent_vs_pixel.py --data emoji --size 64 --limit 0 --ref-split train
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too
import difflab  # noqa: E402
from difflab.core.config import load_config  # noqa: E402
from difflab.data.datasets import load_dataset  # noqa: E402
from difflab.evaluation.feature_training import train_feature_net  # noqa: E402
from difflab.evaluation.features import load_feature_net  # noqa: E402
from difflab.evaluation.metrics import feature_stats, frechet_distance  # noqa: E402
from difflab.storage.latent_cache import encode_dataset  # noqa: E402
from difflab.training.autoencoder import train_autoencoder  # noqa: E402
from difflab.training.loop import train  # noqa: E402


def config(args, data: dict, codec: str | None, *extra: str):
    net = (f"model.net={{name='unet', model_channels={args.width}, channel_mult=[1, 2, 2], "
           "num_res_blocks=1, attention_resolutions=[]}")  # fmt: skip
    sets = ["data.dataset={" + ", ".join(f"{k}={v!r}" for k, v in data.items()) + "}", net,
            f"train.batch_size={args.batch}", "train.log_every=5", "train.ckpt_every=0",
            f"sample.steps={args.sample_steps}", *extra]  # fmt: skip
    if codec:
        sets.append(f"model.codec={{ckpt='{codec}'}}")
    return load_config(None, sets)


def train_rate(args, data, codec, out: Path) -> float:
    """Median images/s of a short run (log records after the first, which includes start-up)."""
    if not (args.reuse and (out / "log.jsonl").is_file()):
        train(config(args, data, codec, f"train.steps={args.rate_steps}"), out)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return statistics.median(r["images_per_s"] for r in records[1:] or records)


def sample_rate(pipe, n: int) -> float:
    t = time.perf_counter()
    pipe(n, seed=0)
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion_mnist", help="labelled image dataset name")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--limit", type=int, default=10000, help="training images (0: all)")
    ap.add_argument("--factor", type=int, default=4, help="codec downsampling (trained here)")
    ap.add_argument("--codec", help="KL codec file for these images (default: train one here)")
    ap.add_argument("--ae-steps", type=int, default=300)
    ap.add_argument("--width", type=int, default=32, help="U-Net model_channels (both models)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rate-steps", type=int, default=16, help="steps per throughput run")
    ap.add_argument("--reps", type=int, default=2, help="A/B repetitions")
    ap.add_argument("--seconds", type=float, default=60, help="equal wall-clock training time")
    ap.add_argument("--n", type=int, default=256, help="samples for FD and sampling rate")
    ap.add_argument("--sample-steps", type=int, default=10)
    ap.add_argument("--features", help="domain feature net file (default: train one here)")
    ap.add_argument("--ref-split", default="test", help="FD reference images: test | train")
    ap.add_argument("--out", help="keep runs here (default: a temp dir)")
    ap.add_argument("--reuse", action="store_true",
                    help="load the latent cache, rate_* and timed_* runs already in --out "
                    "instead of making them")  # fmt: skip
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="latent_vs_pixel_"))
    pixels = {"name": args.data, "size": args.size, **({"limit": args.limit} if args.limit else {})}
    t = time.perf_counter()
    codec = args.codec or str(
        train_autoencoder(
            pixels,
            out / "ae",
            codec="kl",
            factor=args.factor,
            steps=args.ae_steps,
            net={"ch": 32},
            device="cpu",
        )
    )
    print(f"codec: {codec} ({time.perf_counter() - t:.0f} s)")
    t = time.perf_counter()
    cache = out / "latents.safetensors"
    if args.reuse and cache.is_file():
        print(f"latent cache: {cache} reused")
    else:
        cache = encode_dataset(pixels, codec, cache)
        print(f"latent cache: {pixels} encoded once in {time.perf_counter() - t:.1f} s")
    latents = {"name": "latents", "path": str(cache)}
    models = {"pixel": (pixels, None), "latent": (latents, codec)}
    rates = {k: [] for k in models}
    for rep in range(args.reps):  # A/B/A/B
        for name, (data, c) in models.items():
            rates[name].append(train_rate(args, data, c, out / f"rate_{name}_{rep}"))
    train_ips = {k: statistics.median(v) for k, v in rates.items()}
    pipes = {}
    for name, (data, c) in models.items():
        cfg = config(args, data, c, "train.steps=1000000", f"train.max_seconds={args.seconds}")
        run = out / f"timed_{name}"
        reused = args.reuse and (run / "config.toml").is_file()
        pipes[name] = difflab.load(run if reused else train(cfg, run))
        steps = pipes[name].info["step"]
        print(
            f"{name}: {steps} steps in {args.seconds:.0f} s (net shape {list(pipes[name].shape)})"
        )
    srates = {k: [] for k in pipes}
    for _ in range(args.reps):
        for name, pipe in pipes.items():
            srates[name].append(sample_rate(pipe, min(args.n, 64)))
    sample_ips = {k: statistics.median(v) for k, v in srates.items()}
    features = args.features or train_feature_net(
        pixels, steps=300, out_path=out / "features.safetensors")  # fmt: skip
    net = load_feature_net({"name": "domain", "path": str(features)})
    test = load_dataset({"name": args.data, "size": args.size, "split": args.ref_split})
    with torch.no_grad():
        ref = feature_stats(net(test.x[: max(args.n, 1000)]).numpy())
        fd = {k: frechet_distance(*feature_stats(net(p(args.n, seed=1)).numpy()), *ref)
              for k, p in pipes.items()}  # fmt: skip
    print(
        f"width {args.width}, batch {args.batch}, {args.size}×{args.size} {args.data}; "
        f"FD vs {min(len(test.x), max(args.n, 1000))} {args.ref_split} images; "
        f"sampler {pipes['pixel'].defaults['sampler']['name']} × {args.sample_steps} steps"
    )
    print(
        f"{'':>7} {'train img/s':>12} {'sample img/s':>13} {'FD@' + str(int(args.seconds)) + 's':>10}"
    )
    for k in pipes:
        print(f"{k:>7} {train_ips[k]:12.1f} {sample_ips[k]:13.1f} {fd[k]:10.2f}")
    print(
        f"latent/pixel: training {train_ips['latent'] / train_ips['pixel']:.2f}×, sampling "
        f"{sample_ips['latent'] / sample_ips['pixel']:.2f}×, FD {fd['latent'] / fd['pixel']:.2f}× "
        "(< 1: latent better)"
    )


if __name__ == "__main__":
    main()
