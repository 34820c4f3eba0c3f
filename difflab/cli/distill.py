"""`difflab distill TEACHER --method progressive|cd|ct --out DIR`: a few-step student, with a
progress bar per run (one per progressive round)."""

from __future__ import annotations

import sys
from pathlib import Path


def cmd_distill(args) -> int:
    from tqdm import tqdm

    from difflab.cli.training import progress_bar
    from difflab.training.distill import distill

    bar = None

    def on_step(record):
        nonlocal bar
        if "note" in record:
            tqdm.write(record["note"], file=sys.stderr)
            if record["note"].startswith("round") and bar is not None:
                bar.close()
                bar = None
            return
        if "event" in record:  # start, checkpoint, progress, stop (cli.watch prints them)
            return
        if bar is None:
            bar = progress_bar(steps_of(args), "distill", args.quiet)
        bar.n = record["step"]
        bar.set_postfix(loss=f"{record['loss']:.4g}", refresh=False)
        bar.update(0)

    try:
        path = distill(args.teacher, Path(args.out), args.method, rounds=args.rounds,
                       steps=args.steps, init=not args.no_init, overrides=args.set,
                       resume=args.resume, callback=on_step)  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    print(f"student: {path}")
    return 0


def steps_of(args) -> int:
    """The training steps of each run (train.steps after --set, else the teacher's)."""
    from difflab.training.distill import student_config

    if not hasattr(args, "_train_steps"):
        cfg = student_config(args.teacher, args.method, steps=args.steps, overrides=args.set)
        args._train_steps = cfg.train.steps
    return args._train_steps


def add_commands(sub, common) -> None:
    """Register `difflab distill` on the CLI's subparsers."""
    d = sub.add_parser("distill", parents=[common],
                       help="few-step student of a model: progressive, cd or ct")  # fmt: skip
    d.add_argument("teacher", help="teacher model checkpoint or run directory")
    d.add_argument("--method", required=True, choices=("progressive", "cd", "ct"),
                   help="progressive distillation, consistency distillation or consistency "
                        "training (initialised from the teacher unless --no-init)")  # fmt: skip
    d.add_argument("--out", required=True, help="run directory (progressive: out/round-K)")
    d.add_argument("--rounds", type=int, default=1,
                   help="progressive: rounds, each halving the steps")  # fmt: skip
    d.add_argument("--steps", type=int,
                   help="progressive: teacher steps of round 1 (default: its config's); "
                        "cd/ct: the student's default sampling steps (default 1)")  # fmt: skip
    d.add_argument(
        "--no-init",
        action="store_true",
        help="start the student from scratch instead of the teacher's weights",
    )
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override the student's config, e.g. --set train.steps=500")  # fmt: skip
    d.add_argument("--resume", action="store_true", help="continue (finished rounds are kept)")
    d.set_defaults(func=cmd_distill)
