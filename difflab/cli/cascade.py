"""`difflab sample CASCADE.toml`: a cascade (base → SR → SR) sampled as one model."""

from __future__ import annotations

import time
from pathlib import Path

from difflab.cli.request_args import parse_classes
from difflab.cli.training import progress_bar
from difflab.core.errors import UsageError


def sample_cascade(args, out: Path) -> int:
    """The `sample` command on a cascade TOML: --steps/--sampler/--discretization apply to
    every stage, --aug-level to every SR stage; the TOML's per-stage options are the defaults."""
    from difflab.core.imageio import pixels_to_uint8, save_grid, save_images
    from difflab.inference.cascade import load_cascade

    if args.image or args.mask or args.guidance or args.option or args.eta is not None:
        raise UsageError("a cascade takes --class/--prompt and per-stage options from its TOML; "
                         "drop --image/--mask/--guidance/--option/--eta")  # fmt: skip
    cascade = load_cascade(args.ckpt)
    common = {k: v for k, v in (("sampler", args.sampler), ("steps", args.steps),
                                ("discretization", args.discretization)) if v is not None}
    stages = [dict(common) for _ in cascade.stages]
    for stage in stages[1:]:
        if args.aug_level is not None:
            stage["aug_level"] = args.aug_level
    total = sum(p.settings(steps=s.get("steps"), batch_size=args.batch_size).steps
                * -(-args.n // args.batch_size) for p, s in zip(cascade.stages, stages))
    bar = progress_bar(total, "cascade", args.quiet)
    start = time.perf_counter()
    outputs = cascade.sample(args.n, seed=args.seed, classes=parse_classes(args.classes),
                             prompts=args.prompt, stages=stages, batch_size=args.batch_size,
                             callback=lambda info: bar.update(1))  # fmt: skip
    bar.close()
    out.mkdir(parents=True, exist_ok=True)
    images = pixels_to_uint8(outputs[-1]).numpy()
    save_images(images, out / "images")
    save_grid(images, out / "grid.png")
    for k, x in enumerate(outputs[:-1]):
        save_grid(pixels_to_uint8(x).numpy(), out / f"stage{k + 1}.png")
    seconds = time.perf_counter() - start
    print(f"{args.n} samples through {len(outputs)} stages ({repr(cascade)}) in {seconds:.1f}s: "
          f"{out / 'grid.png'} and {len(images)} PNGs in {out / 'images'}")
    return 0
