"""`difflab edit {sdedit,repaint,invert,reconstruct,interpolate,variations,textdiff} RUN`: thin
calls into inference.edit / inversion / null_text / interpolate / unclip_edit; the CLI reads
files, draws bars, writes PNGs."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from difflab.cli.request_args import (
    DISCRETIZATION_HELP,
    add_guidance_argument,
    add_sampler_arguments,
    parse_classes,
    sampler_choice,
    spec_arg,
)
from difflab.core.errors import UsageError


def _common(p: argparse.ArgumentParser, *, images: bool = True) -> None:
    p.add_argument("ckpt", help="model .safetensors file or run directory (newest checkpoint)")
    p.add_argument("--out", required=True, help="output directory")
    if images:
        p.add_argument("--image", action="append", default=[], metavar="FILE",
                       help="input image (repeatable), resized and centre-cropped to the model")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="sample i uses seed + i")
    add_sampler_arguments(p)
    p.add_argument("--steps", type=int, help="number of sampling steps of the grid")
    p.add_argument("--discretization", type=spec_arg, help=DISCRETIZATION_HELP)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--class", dest="classes", action="append", default=[], metavar="K",
                   help="class index per image (repeat or comma list; cycled)")  # fmt: skip
    p.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                   help="text prompt (repeatable; cycled)")  # fmt: skip
    p.add_argument("--negative-prompt", action="append", default=[], metavar="TEXT",
                   help="negative prompt: CFG's null condition for a text model")  # fmt: skip
    add_guidance_argument(p, "e.g. cfg:scale=3 or \"{name='cfg', scale=3}\" (difflab list guidances)")


def _options(args, bar=None) -> dict:
    """The library's editing options from the parsed flags (None = the config's default)."""
    return {"seed": args.seed, "sampler": sampler_choice(args), "steps": args.steps,
            "discretization": args.discretization, "batch_size": args.batch_size,
            "classes": parse_classes(args.classes), "prompts": args.prompt,
            "negative_prompts": args.negative_prompt, "guidance": args.guidance,
            "callback": (lambda info: bar.update(1)) if bar else None}  # fmt: skip


def _read(pipe, files: list[str], count: int | None = None):
    """--image files as uint8 [n, C, H, W] at the model's image size."""
    import torch

    from difflab.core.imageio import load_image

    if not files or (count is not None and len(files) != count):
        want = "one or more" if count is None else str(count)
        raise UsageError(f"give {want} input images with --image (got {len(files)})")
    c, h, w = pipe.image_shape
    for f in files:
        if not Path(f).is_file():
            raise UsageError(f"--image {f} does not exist; pass an existing PNG or JPEG")
    return torch.stack([load_image(Path(f), c, h) for f in files])


def _bar(total: int, desc: str, quiet: bool):
    from difflab.cli.training import progress_bar

    return progress_bar(total, desc, quiet)


def _write(out: Path, rows: list, name: str = "grid.png") -> str:
    """Each row of uint8 images [n, C, H, W] under the previous in out/<name>; the last row's
    images as PNGs in out/images."""
    import torch

    from difflab.core.imageio import save_grid, save_images

    out.mkdir(parents=True, exist_ok=True)
    c = max(r.shape[1] for r in rows)
    rows = [r.expand(-1, c, -1, -1) if r.shape[1] != c else r for r in rows]
    save_grid(torch.cat(rows).numpy(), out / name, nrow=len(rows[-1]))
    save_images(rows[-1].numpy(), out / "images")
    return f"{out / name} and {len(rows[-1])} PNGs in {out / 'images'}"


def _load(args):
    from difflab.inference.pipeline import load

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory")
    return load(args.ckpt), out


def _batches(pipe, args, n: int) -> int:
    return -(-n // pipe.settings(batch_size=args.batch_size).batch_size)


def cmd_sdedit(args) -> int:
    from difflab.inference.edit import sdedit

    pipe, out = _load(args)
    x = _read(pipe, args.image)
    steps = pipe.settings(steps=args.steps).steps
    bar = _bar(_batches(pipe, args, len(x)) * max(1, math.ceil(args.strength * steps)), "sdedit",
               args.quiet)  # fmt: skip
    result = sdedit(pipe, x, strength=args.strength, **_options(args, bar))
    bar.close()
    print(f"sdedit at strength {args.strength}: {_write(out, [x, result])}")
    return 0


def cmd_repaint(args) -> int:
    import torch

    from difflab.core.imageio import pixels_to_uint8
    from difflab.inference.edit import repaint, repaint_steps
    from difflab.inference.masks import resolve_mask

    pipe, out = _load(args)
    x = _read(pipe, args.image)
    mask = resolve_mask(args.mask, len(x), pipe.image_shape, args.seed)  # [n, 1, H, W]
    steps = pipe.settings(steps=args.steps).steps
    per = repaint_steps(steps, args.jump_length, args.resample)
    bar = _bar(_batches(pipe, args, len(x)) * per, "repaint", args.quiet)
    result = repaint(pipe, x, mask, jump_length=args.jump_length, resample=args.resample,
                     **_options(args, bar))  # fmt: skip
    bar.close()
    shown = pixels_to_uint8(mask * 2 - 1)  # white = keep
    masked = torch.where(mask.bool(), x, torch.full_like(x, 128))
    print(f"repaint ({per} steps per image): {_write(out, [x, shown, masked, result])}")
    return 0


def cmd_invert(args) -> int:
    from difflab.evaluation.metrics import psnr
    from difflab.inference.inversion import invert, reconstruct, save_inversion
    from difflab.inference.null_text import null_text_inversion

    pipe, out = _load(args)
    x = _read(pipe, args.image)
    options = _options(args)
    if args.null_text:
        inv = null_text_inversion(pipe, x, scale=args.scale, inner_steps=args.inner_steps,
                                  **options)  # fmt: skip
    else:
        inv = invert(pipe, x, **options)
    rec = reconstruct(pipe, inv)
    out.mkdir(parents=True, exist_ok=True)
    save_inversion(out / "inverted.safetensors", inv)
    written = _write(out, [x, rec])
    print(f"inverted {len(x)} images ({len(inv.sigmas) - 1} steps): {out / 'inverted.safetensors'}; "
          f"reconstruction PSNR {psnr(rec, x):.2f} dB: {written}")  # fmt: skip
    return 0


def cmd_reconstruct(args) -> int:
    from difflab.inference.inversion import load_inversion, reconstruct

    pipe, out = _load(args)
    inv = load_inversion(args.inverted)
    over = {"guidance": args.guidance} if args.guidance else {}
    rec = reconstruct(pipe, inv, **over)
    print(f"reconstructed {len(rec)} images: {_write(out, [rec])}")
    return 0


def cmd_interpolate(args) -> int:
    from difflab.inference import interpolate as ip

    pipe, out = _load(args)
    options = _options(args)
    if args.space == "noise":
        seeds = parse_classes(args.seeds) if args.seeds else [args.seed, args.seed + 1]
        if len(seeds) != 2:
            raise UsageError(f"--seeds takes two seeds, got {len(seeds)}")
        options.pop("callback")
        row = ip.interpolate_noise(pipe, tuple(seeds), frames=args.frames, **options)
    elif args.space == "inverted":
        options.pop("callback")
        row = ip.interpolate_inverted(pipe, _read(pipe, args.image, 2), frames=args.frames,
                                      **options)  # fmt: skip
    elif args.space == "embedding":  # unCLIP: slerp of the two images' CLIP embeddings
        from difflab.inference.unclip_edit import interpolate_embeddings

        row = interpolate_embeddings(pipe, _read(pipe, args.image, 2), frames=args.frames,
                                     **options)  # fmt: skip
    else:
        row = ip.interpolate_latent(pipe, _read(pipe, args.image, 2), frames=args.frames)
    print(f"{args.frames} frames ({args.space}): {_write(out, [row])}")
    return 0


def cmd_variations(args) -> int:
    import torch

    from difflab.inference.unclip_edit import variations

    pipe, out = _load(args)
    x = _read(pipe, args.image)  # [k, C, H, W]
    bar = _bar(_batches(pipe, args, len(x) * args.n) * pipe.settings(steps=args.steps).steps,
               "variations", args.quiet)  # fmt: skip
    result = variations(pipe, x, n=args.n, **_options(args, bar))  # [k·n, C, H, W]
    bar.close()
    rows = [torch.cat([x[j : j + 1], result[j * args.n : (j + 1) * args.n]]) for j in range(len(x))]
    print(f"{args.n} variations of each of {len(x)} images (first column: the input): "
          f"{_write(out, rows)}")  # fmt: skip
    return 0


def cmd_textdiff(args) -> int:
    import torch

    from difflab.inference.unclip_edit import text_diff_edit

    pipe, out = _load(args)
    x = _read(pipe, args.image, 1)  # [1, C, H, W]
    strengths = torch.linspace(0, args.max_strength, args.frames)  # θ
    bar = _bar(_batches(pipe, args, args.frames) * pipe.settings(steps=args.steps).steps,
               "textdiff", args.quiet)  # fmt: skip
    row = text_diff_edit(pipe, x, args.source, args.target, strengths=strengths,
                         **_options(args, bar))  # fmt: skip
    bar.close()
    thetas = ", ".join(f"{t:.2f}" for t in strengths.tolist())
    print(f"text diff {args.source!r} → {args.target!r} at θ = {thetas} (first image: the "
          f"input): {_write(out, [torch.cat([x, row])])}")  # fmt: skip
    return 0


def add_unclip_commands(what, common: argparse.ArgumentParser) -> None:
    """`difflab edit {variations,textdiff}`: unCLIP manipulations (Ramesh et al. 2022 §3)."""
    v = what.add_parser("variations", parents=[common],
                        help="unCLIP: decode each image's CLIP embedding with new noise")  # fmt: skip
    _common(v)
    v.add_argument("-n", type=int, default=8, help="variations per image")
    v.set_defaults(func=cmd_variations)
    t = what.add_parser("textdiff", parents=[common],
                        help="unCLIP: move an image's embedding along a text difference")  # fmt: skip
    _common(t)
    t.add_argument("--from", dest="source", required=True, help="a caption of the image as is")
    t.add_argument("--to", dest="target", required=True, help="a caption of the wanted edit")
    t.add_argument("--max-strength", type=float, default=0.5, help="largest slerp θ in [0, 1]")
    t.add_argument("--frames", type=int, default=6, help="θ values from 0 to --max-strength")
    t.set_defaults(func=cmd_textdiff)


def add_commands(sub, common: argparse.ArgumentParser) -> None:
    """Register `difflab edit {sdedit,repaint,invert,reconstruct,interpolate}`."""
    edit = sub.add_parser("edit", parents=[common], help="edit images with a trained model")
    what = edit.add_subparsers(dest="edit", required=True)
    s = what.add_parser("sdedit", parents=[common], help="SDEdit: noise to a strength, denoise")
    _common(s)
    s.add_argument("--strength", type=float, default=0.5, help="in (0, 1]: how much to change")
    s.set_defaults(func=cmd_sdedit)
    r = what.add_parser("repaint", parents=[common], help="RePaint inpainting of a mask")
    _common(r)
    r.add_argument("--mask", default="centre",
                   help="PNG (white = keep, black = fill) or a generated mask: "
                   "centre, half, box, free_form, mixed, uncrop")  # fmt: skip
    r.add_argument("--jump-length", type=int, default=10, help="time-travel jump length")
    r.add_argument("--resample", type=int, default=10, help="resamplings per jump (1 = none)")
    r.set_defaults(func=cmd_repaint)
    i = what.add_parser("invert", parents=[common], help="DDIM (or null-text) inversion")
    _common(i)
    i.add_argument("--null-text", action="store_true", help="null-text inversion at --scale")
    i.add_argument("--scale", type=float, default=7.5, help="CFG scale of null-text inversion")
    i.add_argument("--inner-steps", type=int, default=10, help="null optimisation steps per step")
    i.set_defaults(func=cmd_invert)
    c = what.add_parser("reconstruct", parents=[common], help="sample an inversion back")
    _common(c, images=False)
    c.add_argument("--inverted", required=True, help="inverted.safetensors from edit invert")
    c.set_defaults(func=cmd_reconstruct)
    p = what.add_parser("interpolate", parents=[common], help="a row between two ends")
    _common(p)
    p.add_argument("--space", choices=("noise", "inverted", "latent", "embedding"),
                   default="inverted", help="slerp of seeded noises, of inverted images, lerp in "
                   "the latent, or slerp of CLIP image embeddings (unCLIP decoders)")  # fmt: skip
    p.add_argument("--seeds", action="append", default=[], help="two seeds (--space noise)")
    p.add_argument("--frames", type=int, default=8, help="images in the row")
    p.set_defaults(func=cmd_interpolate)
    add_unclip_commands(what, common)
