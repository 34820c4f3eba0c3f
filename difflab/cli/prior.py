"""`difflab train-prior DATA --clip CLIP --out RUN` and `difflab unclip DECODER --prior RUN`:
the unCLIP prior and the text → prior → decoder chain (thin calls into the library)."""

from __future__ import annotations

import json
from pathlib import Path

from difflab.cli.eval import data_spec
from difflab.cli.outputs import add_overwrite


def _overrides(args) -> list[str]:
    """`--set` items after the flags' own (--steps, --batch-size, --lr, --seed)."""
    flags = {"steps": "train.steps", "batch_size": "train.batch_size", "lr": "train.lr",
             "seed": "train.seed"}  # fmt: skip
    given = [f"{key}={getattr(args, name)}" for name, key in flags.items()
             if getattr(args, name) is not None]  # fmt: skip
    return given + list(args.set)


def cmd_train_prior(args) -> int:
    from tqdm import tqdm

    from difflab.cli.training import run_training
    from difflab.data.datasets import load_dataset
    from difflab.evaluation.prior import prior_cosine
    from difflab.inference.pipeline import load
    from difflab.storage.clip_files import open_clip
    from difflab.training.prior import prepare_prior

    clip, sha256 = open_clip(args.clip)
    bar = tqdm(desc="embed", unit="img", disable=args.quiet, leave=False)

    def on_batch(info: dict) -> None:
        bar.total = info["total"]
        bar.update(info["done"] - bar.n)

    try:
        cfg = prepare_prior(data_spec(args.data), clip, clip_sha256=sha256, cache=args.cache,
                            overrides=_overrides(args), callback=on_batch)  # fmt: skip
    finally:
        bar.close()
    print(f"embedding cache: {cfg.data.dataset['path']}")
    path = run_training(cfg, Path(args.out), args.resume, args.quiet)
    held_out = load_dataset({**cfg.data.dataset, "split": "test"})
    scores = prior_cosine(load(path), held_out, n=args.eval_n, scale=args.scale)
    print(f"prior: {path} (held-out cosine(sampled, true image embedding) = {scores['prior']:.3f} "
          f"vs {scores['baseline']:.3f} for the caption's text embedding, n={scores['n']}, "
          f"CFG scale {args.scale:g})")  # fmt: skip
    return 0


def cmd_unclip(args) -> int:
    return write_unclip(args, args.decoder, args.prompt, scale=args.scale)


def sample_unclip(args) -> int:
    """`difflab sample DECODER --prior PRIOR --prompt …`: the same as `difflab unclip`, the
    decoder's CFG from `--guidance` (e.g. cfg:scale=3)."""
    from difflab.core.errors import UsageError

    unused = [flag for flag, given in (("--class", args.classes), ("--image", args.image),
                                       ("--mask", args.mask), ("--from-png", args.from_png))
              if given]  # fmt: skip
    if unused or args.ckpt is None:
        raise UsageError(f"`sample --prior` draws text → prior → decoder: give the decoder model "
                         f"and --prompt{'; drop ' + unused[0] if unused else ''}")  # fmt: skip
    return write_unclip(args, args.ckpt, args.prompt, guidance=list(args.guidance))


def write_unclip(args, decoder_path: str, prompts: list[str], *, scale: float = 1.0,
                 guidance: list | None = None) -> int:  # fmt: skip
    """Sample text → prior (args.prior) → decoder and write the sample set in args.out."""
    from difflab.cli.outputs import SampleDir, check_sample_dir
    from difflab.core.errors import UsageError
    from difflab.inference.pipeline import load
    from difflab.inference.unclip import pipeline_decoder, unclip_sample

    if not prompts:
        raise UsageError("unCLIP samples from text: pass --prompt")
    out = Path(args.out)
    check_sample_dir(out, args.overwrite)
    prior, decoder = load(args.prior), load(decoder_path)
    decode = pipeline_decoder(decoder, scale=scale, steps=args.steps, guidance=guidance or ())
    result = unclip_sample(prior, prompts, decode, n=args.n, seed=args.seed,
                           prior_scale=args.prior_scale, prior_steps=args.prior_steps)  # fmt: skip
    target = SampleDir(out)
    target.add_images(result.images.numpy())
    (out / "labels.json").write_text(json.dumps({"prompts": result.prompts}, indent=1) + "\n")
    print(f"{args.n} unCLIP samples: {target.finish()}, {out / 'labels.json'}")
    return 0


def add_prior_arguments(parser) -> None:
    """The prior's flags of `unclip` and `sample --prior`."""
    parser.add_argument("--prior-scale", type=float, default=1.0, help="CFG scale of the prior")
    parser.add_argument("--prior-steps", type=int, help="prior sampling steps")


def add_commands(sub, common) -> None:
    """Register `train-prior` and `unclip` on the CLI's subparsers."""
    p = sub.add_parser("train-prior", parents=[common],
                       help="train the unCLIP diffusion prior (caption → CLIP image embedding) "
                       "on a Clip's embeddings of DATA")  # fmt: skip
    p.add_argument("data", help="dataset name, inline TOML table or image folder (labelled)")
    p.add_argument(
        "--clip",
        required=True,
        metavar="FILE",
        help="Clip file (difflab train-clip) or noise-aware encoder (train-encoder)",
    )
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--cache", metavar="FILE",
                   help="embedding cache (default: $DIFFLAB_CACHE/clip-embeddings-KEY"
                   ".safetensors); made once, reused")  # fmt: skip
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override the built-in `prior` config, e.g. --set model.net.width=128",
    )
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("--eval-n", type=int, default=256, help="held-out pairs for the cosine metric")
    p.add_argument("--scale", type=float, default=1.0, help="CFG scale of the held-out samples")
    p.set_defaults(func=cmd_train_prior)

    u = sub.add_parser("unclip", parents=[common],
                       help="text → prior → decoder: sample a decoder conditioned on image "
                       "embeddings drawn by a prior")  # fmt: skip
    u.add_argument("decoder", help="decoder model (.safetensors or run dir) taking embeddings")
    u.add_argument("--prior", required=True, help="prior model (train-prior run or file)")
    u.add_argument("--prompt", action="append", required=True, help="caption (repeat: cycled)")
    u.add_argument("--out", required=True, help="output directory")
    u.add_argument("-n", type=int, default=8, help="number of samples")
    u.add_argument("--seed", type=int, default=0, help="sample i uses seed + i")
    add_prior_arguments(u)
    u.add_argument("--scale", type=float, default=3.0, help="CFG scale of the decoder")
    u.add_argument("--steps", type=int, help="decoder sampling steps")
    add_overwrite(u, "sample set in --out")
    u.set_defaults(func=cmd_unclip)
