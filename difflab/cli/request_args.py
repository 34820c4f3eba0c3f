"""The --class/--prompt/--image/--mask/--aug-level/--guidance options of `sample` and `eval`,
and the --sampler/--option/--discretization options: a name or an inline TOML table as `--set`
takes it ("{name='karras', sigma_max=80}"), KEY=VALUE items with TOML values."""

from __future__ import annotations

import math

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
    add_guidance_argument(parser, GUIDANCE_HELP)


GUIDANCE_HELP = ("e.g. cfg:scale=3, classifier:ckpt=c.safetensors,scale=2, "
                 "style:ckpt=e.safetensors,ref=img.png,scale=5; join with '+'; or an inline "
                 "table \"{name='cfg', scale=3}\" (difflab list guidances shows each term's options)")


def add_guidance_argument(parser, help: str) -> None:
    """--guidance SPEC (repeatable): NAME:KEY=VALUE,... joined by '+', or an inline table."""
    parser.add_argument("--guidance", action="append", default=[], metavar="SPEC", type=spec_arg,
                        help=help)  # fmt: skip


SAMPLER_HELP = ("sampler: a name (difflab list samplers; the config's options are kept when it "
                "names the config's sampler) or an inline table, e.g. \"{name='heun', s_churn=10}\"")


def add_sampler_arguments(parser) -> None:
    """--sampler NAME|TABLE and --option KEY=VALUE (repeatable): the sampler and its options."""
    parser.add_argument("--sampler", type=spec_arg, help=SAMPLER_HELP)
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="sampler option with a TOML value, e.g. --option s_churn=10 (difflab "
                             "list samplers shows each sampler's options; the sigma grid's, e.g. "
                             "sigma_max, go in --discretization)")  # fmt: skip


def sampler_choice(args) -> str | dict | None:
    """--sampler with --eta (where the command has it) and each --option on top; None keeps the
    config's sampler, options without a name update the config's sampler's options."""
    options = key_values(args.option, "--option")
    if getattr(args, "eta", None) is not None:
        options["eta"] = args.eta
    if not options:
        return args.sampler
    spec = {"name": args.sampler} if isinstance(args.sampler, str) else dict(args.sampler or {})
    return spec | options


def key_values(items: list[str], flag: str) -> dict:
    """KEY=VALUE items → {key: value}, each value parsed as `--set` parses it (TOML, else text)."""
    from difflab.core.config import parse_value

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"{flag} {item!r} is not KEY=VALUE; write e.g. {flag} s_churn=10")
        out[key.strip()] = parse_value(value.strip())
        if isinstance(out[key.strip()], float) and not math.isfinite(out[key.strip()]):
            raise UsageError(f"{flag} {item}: {key.strip()} must be a finite number")
    return out


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
    """A --discretization/--sampler/--guidance value: a name (or a NAME:K=V guidance spec) as it
    is, or an inline TOML table as `--set` takes it."""
    from difflab.core.config import parse_value

    table = text.strip().startswith("{")
    value = parse_value(text) if table else text
    if not isinstance(value, dict if table else (str, dict)):
        raise UsageError(f"{text!r} is not a name or an inline table like {{name='karras'}}")
    return value
