"""`difflab list [WHAT]`: the registered components, with each sampler's and guidance term's
user options (name=default and a one-line meaning)."""

from __future__ import annotations

LISTS = ("samplers", "schedules", "params", "nets", "datasets", "discretizations", "densities",
         "conditioners", "guidances", "objectives", "codecs", "formats", "configs")  # fmt: skip


def registries() -> dict:
    """Each listed kind's registry (configs are listed from the built-in files)."""
    from difflab.codecs.base import CODECS
    from difflab.conditioning.base import CONDITIONERS
    from difflab.core.precond import PARAMETERIZATIONS
    from difflab.core.schedules import DISCRETIZATIONS, SCHEDULES
    from difflab.data.datasets import DATASETS
    from difflab.guidance.chain import GUIDANCES
    from difflab.nets.base import NETS
    from difflab.samplers.base import SAMPLERS
    from difflab.storage.formats import FORMATS
    from difflab.training.densities import SIGMA_DENSITIES
    from difflab.training.objectives import OBJECTIVES

    return {
        "samplers": SAMPLERS, "schedules": SCHEDULES, "params": PARAMETERIZATIONS, "nets": NETS,
        "datasets": DATASETS, "discretizations": DISCRETIZATIONS, "densities": SIGMA_DENSITIES,
        "conditioners": CONDITIONERS, "guidances": GUIDANCES, "objectives": OBJECTIVES,
        "codecs": CODECS, "formats": FORMATS,
    }  # fmt: skip


def options_of(kind: str, name: str) -> list[tuple[str, object, str]]:
    """(option, default, meaning) of a sampler's or guidance's user options; [] for other kinds."""
    if kind == "samplers":
        from difflab.samplers.options import describe_options

        return describe_options(name)
    if kind == "guidances":
        from difflab.guidance.chain import GUIDANCES

        meaning = GUIDANCES.meta(name).get("options", {})
        return [(k, v, meaning.get(k, "")) for k, v in GUIDANCES.options(name, skip=1).items()]
    return []


def option_line(option: str, default: object, meaning: str) -> str:
    """`      option=default   meaning`, the default as --set/--option would write it (TOML);
    `option=` when there is none (the option is required or optional without a default)."""
    import inspect

    if default is inspect.Parameter.empty or default is None:
        shown = ""
    elif isinstance(default, bool):
        shown = str(default).lower()
    elif isinstance(default, str):
        shown = f"'{default}'"
    else:
        shown = str(default)
    return f"      {f'{option}={shown}':<26} {meaning}".rstrip()


def entries(kind: str) -> list[str]:
    """The lines `difflab list KIND` prints under its heading."""
    from difflab.core.config import builtin_configs

    if kind == "configs":
        return [f"  {name}" for name in builtin_configs()]
    registry, lines = registries()[kind], []
    for name in registry.names():
        meta = {k: v for k, v in registry.meta(name).items() if k != "options"}
        lines.append(f"  {name:<18} {', '.join(f'{k}={v}' for k, v in meta.items())}".rstrip())
        lines.extend(option_line(*option) for option in options_of(kind, name))
    return lines


def cmd_list(args) -> int:
    for kind in [args.what] if args.what else list(LISTS):
        print(f"{kind}:")
        for line in entries(kind):
            print(line)
    return 0


def add_commands(sub, common) -> None:
    """Register `difflab list` on the CLI's subparsers."""
    ls = sub.add_parser("list", parents=[common],
                        help="list registered components (samplers and guidances with options)")
    ls.add_argument("what", nargs="?", choices=LISTS)
    ls.set_defaults(func=cmd_list)
