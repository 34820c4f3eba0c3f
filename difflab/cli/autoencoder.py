"""`difflab train-autoencoder`: a KL or VQ first stage for latent diffusion (a thin call into
training/autoencoder.py), then a reconstructions grid and a loss plot."""

from __future__ import annotations

import sys
from pathlib import Path

from difflab.cli.eval import data_spec
from difflab.core.config import parse_value
from difflab.core.errors import UsageError


def _perceptual(path: str | None, channels: int):
    """The conv body of a domain feature net (from `difflab train-features`) as frozen layers."""
    if path is None:
        return None
    from difflab.evaluation.features import load_feature_net

    net = load_feature_net({"name": "domain", "path": path})
    if net.config["in_channels"] != channels:
        raise UsageError(
            f"--perceptual {path} was trained on {net.config['in_channels']}-channel images, the "
            f"data have {channels}; train a feature net on this data (difflab train-features)"
        )
    return net.body


def write_reconstructions(run: Path, data, test_fraction: float, n: int = 8) -> Path:
    """reconstructions.png: n held-out originals (top row) above their reconstructions."""
    import torch

    from difflab.core.imageio import pixels_to_uint8, save_grid
    from difflab.data.splits import holdout_split
    from difflab.storage.codecs import load_codec_file
    from difflab.training.autoencoder import FINAL, reconstruct

    codec, _ = load_codec_file(run / FINAL)
    test = holdout_split(data, test_fraction)[1]
    x = test.to_model(test.x[:n])  # [n, C, H, W]
    grid = torch.cat([pixels_to_uint8(x), pixels_to_uint8(reconstruct(codec, x))])
    return save_grid(grid.numpy(), run / "reconstructions.png", nrow=len(x))


def cmd_train_autoencoder(args) -> int:
    from tqdm import tqdm

    from difflab.data.datasets import load_dataset
    from difflab.evaluation.plots import plot_loss
    from difflab.training.autoencoder import train_autoencoder

    spec = data_spec(args.data)
    data = load_dataset(spec)
    loss = {"recon": args.recon, "perceptual_weight": args.perceptual_weight,
            "kl_weight": args.kl_weight, "commitment_weight": args.commitment_weight}  # fmt: skip
    if args.disc_start >= 0:
        loss["disc"] = {"start": args.disc_start, "weight": args.disc_weight}
    codec_options = {"num_codes": args.num_codes} if args.codec == "vq" else {}
    net = {"ch": args.ch, "attention": args.attention}
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq:
            raise UsageError(f"--set {item!r} is not of the form option=value")
        net[key.strip()] = parse_value(value.strip())
    bar = tqdm(total=args.steps, desc="train-autoencoder", disable=args.quiet, leave=False)

    def on_step(record: dict) -> None:
        if "note" in record:
            tqdm.write(record["note"], file=sys.stderr)
            return
        bar.n = record["step"]
        bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
        bar.update(0)

    try:
        path = train_autoencoder(
            spec, args.out, codec=args.codec, factor=args.factor, z_channels=args.z_channels,
            net=net, codec_options=codec_options, loss=loss,
            perceptual=_perceptual(args.perceptual, data.shape[0]),
            perceptual_source=args.perceptual, steps=args.steps, batch_size=args.batch_size,
            lr=args.lr, seed=args.seed, ckpt_every=args.ckpt_every, resume=args.resume,
            device=args.device, callback=on_step,
        )  # fmt: skip
    finally:
        bar.close()
    run = Path(args.out)
    grid = write_reconstructions(run, data, 0.1)
    plot_loss(run / "log.jsonl", run / "loss.png", ylabel="autoencoder loss")
    from difflab.storage.codecs import read_codec_meta

    info = read_codec_meta(path)["info"]
    print(f"autoencoder: {path} (held-out PSNR {info['held_out_psnr']:.2f} dB, latent scale "
          f"{info['scale']:.4g}, shift {info['shift']:.4g})")  # fmt: skip
    print(f"reconstructions: {grid}; loss plot: {run / 'loss.png'}")
    print(f'use it: --set model.codec="{{ckpt=\'{path}\'}}"')
    return 0


def add_commands(sub, common) -> None:
    """Register `train-autoencoder` on the CLI's subparsers."""
    p = sub.add_parser("train-autoencoder", parents=[common],
                       help="train a KL or VQ autoencoder (a latent-diffusion codec)")  # fmt: skip
    p.add_argument("data", help="dataset name, inline TOML table or image folder")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--codec", choices=("kl", "vq"), default="kl")
    p.add_argument("--factor", type=int, default=4, help="downsampling factor f (1, 2, 4, 8)")
    p.add_argument("--z-channels", type=int, default=4, help="latent channels")
    p.add_argument("--ch", type=int, default=32, help="base width of the conv nets")
    p.add_argument("--attention", action="store_true", help="self-attention in the middle")
    p.add_argument("--num-codes", type=int, default=256, help="VQ codebook size")
    p.add_argument("--recon", choices=("l1", "l2"), default="l1")
    p.add_argument("--perceptual", metavar="FILE",
                   help="domain feature net .safetensors (difflab train-features) for the "
                   "perceptual loss")  # fmt: skip
    p.add_argument("--perceptual-weight", type=float, default=1.0)
    p.add_argument("--kl-weight", type=float, default=1e-6)
    p.add_argument("--commitment-weight", type=float, default=0.25)
    p.add_argument("--disc-start", type=int, default=-1, help="PatchGAN from this step (-1: off)")
    p.add_argument("--disc-weight", type=float, default=0.5)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt-every", type=int, default=500, help="checkpoint every N steps")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="more net options, e.g. --set num_res_blocks=2 --set "
                   "channel_mult=[1,2,4]")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto (CUDA if present) | cpu | cuda:N")
    p.set_defaults(func=cmd_train_autoencoder)
