"""`difflab export RUN --format diffusers --out DIR`: a model's schedule as a diffusers folder."""

from __future__ import annotations

FORMATS = ("diffusers",)


def cmd_export(args) -> int:
    from difflab.storage.diffusers.export import export_diffusers

    written, skipped = export_diffusers(args.ckpt, args.out)
    for path in written:
        print(f"wrote {path}")
    for line in skipped:
        print(f"not exported: {line}")
    return 0


def add_commands(sub, common) -> None:
    """Register `difflab export` on the CLI's subparsers."""
    e = sub.add_parser("export", parents=[common],
                       help="write a model's schedule as a diffusers scheduler config")  # fmt: skip
    e.add_argument("ckpt", help="checkpoint or run dir")
    e.add_argument("--format", choices=FORMATS, default="diffusers")
    e.add_argument("--out", required=True, help="output folder (scheduler/ is written in it)")
    e.set_defaults(func=cmd_export)
