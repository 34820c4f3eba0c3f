"""`difflab train-clip DATA`: CLIP's image tower against a frozen text encoder (unCLIP)."""

from __future__ import annotations

from difflab.cli.eval import data_spec
from difflab.cli.noise_aware import _options, add_training_parser
from difflab.core.errors import UsageError


def cmd_train_clip(args) -> int:
    """Train with a tqdm bar; print held-out image→caption retrieval against chance."""
    from tqdm import tqdm

    from difflab.training.clip import train_clip

    if any(item.split("=", 1)[0].strip().startswith("density") for item in args.set):
        raise UsageError("train-clip reads clean images at one σ: use --sigma, not --set density.*")
    options = _options(args.set)
    options.pop("density")
    bar = tqdm(total=args.steps, desc="train-clip", disable=args.quiet, leave=False)

    def on_step(record: dict) -> None:
        bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
        bar.update(1)

    try:
        clip = train_clip(
            data_spec(args.data), args.out, steps=args.steps, max_seconds=args.max_seconds,
            batch_size=args.batch_size,
            lr=args.lr, seed=args.seed, force=args.force, device=args.device, callback=on_step,
            text_encoder=args.text_encoder, sigma=args.sigma, **options,
        )  # fmt: skip
    finally:
        bar.close()
    r = clip.meta["test_retrieval"]
    print(f"clip: {args.out} (held-out image→caption retrieval over {r['candidates']} captions: "
          f"top-1 {r['top1']:.3f} (chance {r['chance_top1']:.3f}), "
          f"top-5 {r['top5']:.3f} (chance {r['chance_top5']:.3f}))")  # fmt: skip
    return 0


def add_commands(sub, common) -> None:
    """Register `train-clip` on the CLI's subparsers."""
    p = add_training_parser(
        sub, common, "train-clip", "train a CLIP image encoder on clean images against a frozen "
        "text encoder (unCLIP's embedding space)", cmd_train_clip, codec=False,
    )  # fmt: skip
    p.add_argument("--text-encoder", default="minilm", help="frozen text encoder name")
    p.add_argument("--sigma", type=float, default=0.002,
                   help="the fixed σ the encoder reads clean images at (≈ 0)")  # fmt: skip
