"""What to sample: each sample's condition and the guidance chain, from a user's request.

One function shared by `difflab sample`, `difflab eval`, the in-loop FD and the benches, so each
samples the same way: the config's default guidance (`sample.guidance`, e.g. the x̂0 clipping an
ε-prediction cosine model needs) follows the user's terms, so thresholds stay last; a default the
user names again is replaced by the user's options.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from difflab.conditioning import Cond, cycle, parse_classes, sampling_cond
from difflab.conditioning_image import read_images


def request(
    denoiser,
    config: dict,
    n: int,
    *,
    guidance: Sequence[str | dict] = (),
    classes: Sequence[int] = (),
    prompts: Sequence[str] = (),
    images: Sequence[str] = (),
    device: str | torch.device = "cpu",
) -> tuple[Cond, object, dict]:
    """(cond for n samples, guidance chain for `generate`, what each sample asked for)."""
    from difflab.guidance import build_guidance, parse_guidance

    def parse(items):
        return [s for g in items for s in (parse_guidance(g) if isinstance(g, str) else [dict(g)])]

    specs = parse(guidance)
    named = {s["name"] for s in specs}
    specs += [
        s for s in parse(config.get("sample", {}).get("guidance", [])) if s["name"] not in named
    ]
    shape = tuple(config["model"]["shape"])
    pixels = read_images(list(images), shape, n) if images else None  # [n, C, h, w]
    cond, asked = sampling_cond(
        getattr(denoiser, "conditioner", None), n, classes=list(classes), prompts=list(prompts),
        guided_by=[s["name"] for s in specs], images=pixels, shape=shape,
    )  # fmt: skip
    if images:
        asked["images"] = cycle([str(p) for p in images], n)
    chain = build_guidance(specs, shape=shape, device=device, prompt=(list(prompts) or [None])[0])
    return cond, chain, asked | ({"guidance": specs} if specs else {})


def add_request_arguments(parser, *, what: str) -> None:
    """The --class/--prompt/--image/--guidance options of `difflab sample` and `difflab eval`."""
    parser.add_argument("--class", dest="classes", action="append", default=[], metavar="K",
                        help=f"class index of the {what} (repeat or comma list; cycled; "
                             "default: every class in turn)")  # fmt: skip
    parser.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                        help="text prompt for a text-conditional model or text guidance "
                             "(repeatable; cycled)")  # fmt: skip
    parser.add_argument("--image", action="append", default=[], metavar="FILE",
                        help="conditioning image for an image-conditional model, full size or "
                             "low resolution (repeatable; cycled)")  # fmt: skip
    parser.add_argument("--guidance", action="append", default=[], metavar="SPEC",
                        help="e.g. cfg:scale=3, classifier:ckpt=c.safetensors,scale=2, "
                             "style:ckpt=e.safetensors,ref=img.png,scale=5; join with '+' "
                             "(difflab list guidances)")  # fmt: skip


def request_from_args(denoiser, config: dict, n: int, args, device="cpu"):
    """`request` with the options `add_request_arguments` parsed into `args`."""
    return request(denoiser, config, n, guidance=args.guidance, classes=parse_classes(args.classes),
                   prompts=args.prompt, images=args.image, device=device)  # fmt: skip
