"""`difflab {train-classifier,train-encoder}`: the noise-aware nets of guidance (thin calls)."""

from __future__ import annotations

from difflab.cli.eval import data_spec
from difflab.core.config import apply_overrides
from difflab.core.errors import UsageError


def _options(overrides: list[str]) -> dict:
    """Default training options with `--set net.x=… / density.x=… / ema_decay=…` applied."""
    from difflab.training.noise_aware import default_options

    options = default_options()
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if key.count(".") == 0 and key in ("net", "density"):
            raise UsageError(f"--set {item!r}: set one option at a time, e.g. --set {key}.x=1")
    return apply_overrides(options, overrides)


def _train(args, train_fn, what: str, **extra) -> int:
    """Run one noise-aware training with a tqdm bar; print the held-out accuracy per σ."""
    from tqdm import tqdm

    options = _options(args.set)
    bar = tqdm(total=args.steps, desc=f"train-{what}", disable=args.quiet, leave=False)

    def on_step(record: dict) -> None:
        bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
        bar.update(1)

    try:
        model = train_fn(
            data_spec(args.data), args.out, steps=args.steps, max_seconds=args.max_seconds,
            batch_size=args.batch_size,
            lr=args.lr, seed=args.seed, force=args.force, device=args.device, callback=on_step,
            codec=args.codec_ckpt, **options, **extra,
        )  # fmt: skip
    finally:
        bar.close()
    label = "accuracy" if what == "classifier" else "zero-shot caption accuracy"
    accs = ", ".join(f"σ={s}: {a:.3f}" for s, a in model.meta["test_accuracy"].items())
    print(f"{what}: {args.out} (held-out {label}: {accs})")
    return 0


def cmd_train_classifier(args) -> int:
    from difflab.training.classifier import train_classifier

    return _train(args, train_classifier, "classifier")


def cmd_train_encoder(args) -> int:
    from difflab.training.encoder import train_encoder

    return _train(args, train_encoder, "encoder", text_encoder=args.text_encoder)


def add_training_parser(sub, common, name: str, help: str, func, codec: bool = True):
    """A `difflab <name> DATA --out FILE` parser with the options every noise-aware trainer takes."""
    p = sub.add_parser(name, parents=[common], help=help)
    p.add_argument("data", help="dataset name, inline TOML table or image folder")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop after this many seconds of training, even before --steps")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="net.<option>=…, density.<option>=… (log_uniform sigma_min/sigma_max "
                   "or lognormal p_mean/p_std), ema_decay=…, weight_decay=…")  # fmt: skip
    p.add_argument("--force", "--overwrite", dest="force", action="store_true",
                   help="overwrite an existing --out file")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto (CUDA if present) | cpu | cuda:N")
    if codec:
        p.add_argument("--codec-ckpt", metavar="FILE",
                       help="a latent model's codec file: train on its latents (needed to guide "
                       "latent models in their own space)")  # fmt: skip
    p.set_defaults(func=func)
    return p


def add_commands(sub, common) -> None:
    """Register the noise-aware training subcommands on the CLI's subparsers."""
    helps = {
        "classifier": "train a noise-aware classifier (classifier guidance) on labelled images",
        "encoder": "train a noise-aware image encoder against caption embeddings (semantic "
        "guidance)",
    }
    for what, func in (("classifier", cmd_train_classifier), ("encoder", cmd_train_encoder)):
        p = add_training_parser(sub, common, f"train-{what}", helps[what], func)
        if what == "encoder":
            p.add_argument("--text-encoder", default="minilm", help="frozen text encoder name")
