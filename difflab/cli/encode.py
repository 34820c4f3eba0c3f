"""`difflab encode DATA --codec-ckpt AE --out cache.safetensors`: a latent cache (a thin call
into storage/latent_cache.py); train on it with data.dataset = {name="latents", path=...}."""

from __future__ import annotations

from difflab.cli.eval import data_spec


def cmd_encode(args) -> int:
    from tqdm import tqdm

    from difflab.storage.latent_cache import encode_dataset

    bar = tqdm(desc="encode", unit="img", disable=args.quiet, leave=False)

    def on_batch(info: dict) -> None:
        bar.total = info["total"]
        bar.update(info["done"] - bar.n)

    try:
        path = encode_dataset(data_spec(args.data), args.codec_ckpt, args.out,
                              batch_size=args.batch_size, device=args.device, force=args.force,
                              callback=on_batch)  # fmt: skip
    finally:
        bar.close()
    print(f"latent cache: {path} (train with data.dataset = {{name = \"latents\", path = "
          f"\"{path}\"}} and model.codec = {{ckpt = \"{args.codec_ckpt}\"}})")  # fmt: skip
    return 0


def add_commands(sub, common) -> None:
    """Register `encode` on the CLI's subparsers."""
    p = sub.add_parser("encode", parents=[common],
                       help="encode a dataset once with a codec file (a latent cache)")  # fmt: skip
    p.add_argument("data", help="dataset name, inline TOML table or image folder")
    p.add_argument("--codec-ckpt", required=True, metavar="FILE",
                   help="autoencoder file (RUN/autoencoder.safetensors of train-autoencoder)")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.set_defaults(func=cmd_encode)
