"""The --class/--prompt/--image/--mask/--aug-level/--guidance options of `sample` and `eval`."""

from __future__ import annotations

from difflab.core.errors import UsageError


def parse_classes(items: list[str] | None) -> list[int]:
    """--class values (repeatable, or comma lists) → class indices; a non-integer is an error."""
    out = []
    for part in (p.strip() for item in items or [] for p in str(item).split(",")):
        try:
            out.append(int(part))
        except ValueError:
            raise UsageError(
                f"--class {part!r} is not a class index; pass integers, e.g. --class 3"
            ) from None
    return out


def add_request_arguments(parser, *, what: str) -> None:
    """The --class/--prompt/--image/--guidance options of `difflab sample` and `difflab eval`."""
    parser.add_argument("--class", dest="classes", action="append", default=[], metavar="K",
                        help=f"class index of the {what} (repeat or comma list; cycled; "
                             "default: every class in turn)")  # fmt: skip
    parser.add_argument("--prompt", action="append", default=[], metavar="TEXT",
                        help="text prompt for a text-conditional model or text guidance "
                             "(repeatable; cycled)")  # fmt: skip
    parser.add_argument("--negative-prompt", action="append", default=[], metavar="TEXT",
                        help="negative prompt: CFG's null condition for a text model "
                             "(repeatable; cycled)")  # fmt: skip
    parser.add_argument("--image", action="append", default=[], metavar="FILE",
                        help="conditioning image for an image-conditional model, full size or "
                             "low resolution (repeatable; cycled)")  # fmt: skip
    parser.add_argument("--allow-pickle", action="store_true",
                        help="read a diffusers folder's pickled .bin weights "
                             "(torch.load weights_only=True)")  # fmt: skip
    parser.add_argument("--mask", action="append", default=[], metavar="PNG",
                        help="inpainting mask for an inpainting model, white = keep, black = "
                             "generate (repeatable; cycled)")  # fmt: skip
    parser.add_argument("--aug-level", type=float, metavar="S",
                        help="noise-augmentation level of an SR model's low-res input "
                             "(default: the config's cond.aug_level)")  # fmt: skip
    parser.add_argument("--guidance", action="append", default=[], metavar="SPEC",
                        help="e.g. cfg:scale=3, classifier:ckpt=c.safetensors,scale=2, "
                             "style:ckpt=e.safetensors,ref=img.png,scale=5; join with '+' "
                             "(difflab list guidances)")  # fmt: skip


def request_options(args) -> dict:
    """The `Pipeline.sample` arguments that `add_request_arguments` parsed into `args`."""
    return {"classes": parse_classes(args.classes), "prompts": args.prompt,
            "negative_prompts": args.negative_prompt, "images": args.image, "masks": args.mask,
            "aug_level": args.aug_level,
            "guidance": args.guidance}  # fmt: skip


DISCRETIZATION_HELP = ("σ grid: a name (difflab list discretizations; the config's options are kept "
                       "when it names the same grid) or an inline table, e.g. "
                       "\"{name='karras', sigma_max=80}\"")


def spec_arg(text: str) -> str | dict:
    """A --discretization value: a name, or an inline TOML table as `--set` takes it."""
    from difflab.core.config import parse_value

    value = parse_value(text) if text.strip().startswith("{") else text
    if not isinstance(value, (str, dict)):
        raise UsageError(f"{text!r} is not a name or an inline table like {{name='karras'}}")
    return value
