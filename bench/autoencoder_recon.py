"""Autoencoder reconstruction quality: KL vs VQ codecs on held-out images (issue 13).

For each (codec, factor): `train_autoencoder` on the training split, then on n held-out images of
the dataset's test split: PSNR, rFD (Fréchet distance between the domain feature net's features
of the originals and of the reconstructions; the feature net is trained here with
`train_feature_net` unless --features is given) and, for VQ, codebook usage and perplexity of the
held-out codes. The peer of each row is the other codec at the same factor, trained the same
steps in the same run; the KL/VQ ratios are printed. A `resize` row per factor (area-downsample
by f, bilinear upsample: no training) puts the PSNR and rFD scale in context.

    python bench/autoencoder_recon.py                                   # Fashion-MNIST 32×32, f=4
    python bench/autoencoder_recon.py --steps 3000 --n 2000 --factors 4 8 --limit 0
    python bench/autoencoder_recon.py --data emoji --size 64 --limit 0 --factors 4 8 --batch 16
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too
from difflab.codecs.vq import usage  # noqa: E402
from difflab.core.imageio import pixels_to_uint8  # noqa: E402
from difflab.data.datasets import load_dataset  # noqa: E402
from difflab.evaluation.feature_training import train_feature_net  # noqa: E402
from difflab.evaluation.features import load_feature_net  # noqa: E402
from difflab.evaluation.metrics import feature_stats, frechet_distance  # noqa: E402
from difflab.storage.codecs import load_codec_file  # noqa: E402
from difflab.training.autoencoder import psnr, reconstruct, train_autoencoder  # noqa: E402


def rfd(net, originals, recons) -> float:
    """Fréchet distance between feature statistics of originals and reconstructions (uint8)."""
    with torch.no_grad():
        a, b = net(originals).numpy(), net(recons).numpy()
    return frechet_distance(*feature_stats(a), *feature_stats(b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion_mnist", help="dataset name with a test split")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--limit", type=int, default=4000, help="training images (0: all)")
    ap.add_argument("--codecs", nargs="+", default=["kl", "vq"])
    ap.add_argument("--factors", nargs="+", type=int, default=[4])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--ch", type=int, default=32)
    ap.add_argument("--n", type=int, default=512, help="held-out images")
    ap.add_argument("--features", help="domain feature net file (default: train one here)")
    ap.add_argument("--feature-steps", type=int, default=300)
    ap.add_argument("--out", help="keep the runs here (default: a temp dir)")
    ap.add_argument("--reuse", action="store_true",
                    help="evaluate OUT/CODEC_fF/autoencoder.safetensors where it exists "
                    "instead of training it (train s then prints as nan)")  # fmt: skip
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="ae_recon_"))
    train_spec = {
        "name": args.data,
        "size": args.size,
        **({"limit": args.limit} if args.limit else {}),
    }
    test = load_dataset({"name": args.data, "size": args.size, "split": "test"})
    originals = test.x[: args.n]  # [n, C, H, W] uint8
    features = args.features
    if features is None:
        t = time.perf_counter()
        features = train_feature_net(
            train_spec, steps=args.feature_steps, out_path=out / "features.safetensors"
        )
        print(
            f"feature net: {features} ({args.feature_steps} steps, {time.perf_counter() - t:.0f} s)"
        )
    net = load_feature_net({"name": "domain", "path": str(features)})
    print(
        f"data: {args.data} {args.size}×{args.size}, train {train_spec}, held-out n={len(originals)}, "
        f"{args.steps} steps × batch {args.batch}, ch={args.ch}"
    )
    print(
        f"{'codec':>5} {'f':>2} {'latent':>10} {'PSNR dB':>8} {'rFD':>9} {'usage':>6} {'perplex':>8} {'train s':>8}"
    )
    rows = {}
    for factor in args.factors:
        for name in args.codecs:
            t = time.perf_counter()
            path = out / f"{name}_f{factor}" / "autoencoder.safetensors"
            seconds = float("nan")
            if not (args.reuse and path.is_file()):
                path = train_autoencoder(
                    train_spec,
                    out / f"{name}_f{factor}",
                    codec=name,
                    factor=factor,
                    net={"ch": args.ch},
                    steps=args.steps,
                    batch_size=args.batch,
                    device="cpu",
                )
                seconds = time.perf_counter() - t
            codec, meta = load_codec_file(path)
            x = test.to_model(originals)
            recon = reconstruct(codec, x)
            value = psnr(recon, x).mean().item()
            dist = rfd(net, originals, pixels_to_uint8(recon))
            used = perplexity = float("nan")
            if name == "vq":
                with torch.no_grad():
                    idx = torch.cat(
                        [
                            codec.codebook(codec.latents(x[i : i + 128]))[1]
                            for i in range(0, len(x), 128)
                        ]
                    )
                used, perplexity = usage(idx, len(codec.codebook.embed))
            rows[name, factor] = (value, dist)
            print(
                f"{name:>5} {factor:>2} {str(meta['latent_shape']):>10} {value:8.2f} {dist:9.3f} "
                f"{used:6.2f} {perplexity:8.1f} {seconds:8.0f}"
            )
        x = test.to_model(originals)
        small = F.interpolate(x, scale_factor=1 / factor, mode="area")  # [n, C, H/f, W/f]
        resized = F.interpolate(small, size=x.shape[-2:], mode="bilinear").clamp(-1, 1)
        print(
            f"{'resize':>5} {factor:>2} {str(list(small.shape[1:])):>10} "
            f"{psnr(resized, x).mean().item():8.2f} "
            f"{rfd(net, originals, pixels_to_uint8(resized)):9.3f}"
        )
        if ("kl", factor) in rows and ("vq", factor) in rows:
            (pk, fk), (pv, fv) = rows["kl", factor], rows["vq", factor]
            print(
                f"f={factor}: PSNR KL−VQ = {pk - pv:+.2f} dB, rFD VQ/KL = {fv / max(fk, 1e-12):.2f}"
            )


if __name__ == "__main__":
    main()
