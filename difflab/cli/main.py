"""`difflab {demo,train,sample,list}`: thin commands over the library; the CLI owns progress bars."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from difflab.cli.autoencoder import add_commands as add_autoencoder_commands
from difflab.cli.cascade import sample_cascade
from difflab.cli.clip import add_commands as add_clip_commands
from difflab.cli.distill import add_commands as add_distill_commands
from difflab.cli.edit import add_commands as add_edit_commands
from difflab.cli.encode import add_commands as add_encode_commands
from difflab.cli.errors import cli_message
from difflab.cli.eval import add_commands as add_eval_commands
from difflab.cli.export import add_commands as add_export_commands
from difflab.cli.from_png import remake_edit
from difflab.cli.listing import add_commands as add_list_commands
from difflab.cli.nll import add_commands as add_nll_commands
from difflab.cli.noise_aware import add_commands as add_aux_commands
from difflab.cli.outputs import add_overwrite
from difflab.cli.prior import add_commands as add_prior_commands
from difflab.cli.prior import add_prior_arguments, sample_unclip
from difflab.cli.request_args import (
    DISCRETIZATION_HELP,
    add_request_arguments,
    add_sampler_arguments,
    sampler_choice,
    spec_arg,
)
from difflab.cli.serve import add_commands as add_serve_commands
from difflab.cli.training import progress_bar, run_training, train_config
from difflab.core.config import to_toml
from difflab.core.errors import UsageError


def cmd_train(args) -> int:
    from difflab.data.datasets import load_dataset
    from difflab.storage.models import build_denoiser
    from difflab.training.loop import resolve_model, saved_config

    cfg = train_config(args.config, args.set)
    if args.dry_run:
        resolve_model(cfg, load_dataset(cfg.data.dataset))
        params = sum(p.numel() for p in build_denoiser(cfg.model).parameters())
        print(to_toml(saved_config(cfg)))
        print(f"# parameters: {params:,}")
        return 0
    path = run_training(cfg, Path(args.out), args.resume, args.quiet)
    print(f"checkpoint: {path}")
    return 0


def cmd_sample(args) -> int:
    from difflab.cli.outputs import SampleDir, check_sample_dir
    from difflab.cli.request_args import request_options
    from difflab.inference import provenance
    from difflab.inference.pipeline import load

    out = Path(args.out)
    if args.ckpt is not None and args.ckpt.endswith(".toml"):  # a cascade of stage checkpoints
        return sample_cascade(args, out)
    if args.prior:  # unCLIP: text → prior → this decoder
        return sample_unclip(args)
    check_sample_dir(out, args.overwrite)  # before loading or sampling anything
    if args.from_png:
        ckpt, chosen, given, meta = _from_png(args)
        if meta.get("edit"):  # an edit: re-made from its init image (--image)
            return remake_edit(args, ckpt, chosen, given, meta, out)
    else:
        if args.ckpt is None:
            raise UsageError("give the model (a .safetensors file or run dir), or --from-png IMG")
        ckpt, given, meta = args.ckpt, request_options(args), None
        chosen = _sample_choices(args)
    pipe = load(ckpt, allow_pickle=args.allow_pickle)
    settings = pipe.settings(**{k: v for k, v in chosen.items() if k in SETTINGS})
    n_batches = -(-chosen["n"] // settings.batch_size)
    bar = progress_bar(n_batches * settings.steps, "sample", args.quiet)
    start = time.perf_counter()
    batches, asked, settings = pipe.stream(**chosen, **given,
                                           callback=lambda info: bar.update(1))  # fmt: skip
    batches = iter(batches)
    first = next(batches)  # the first batch checks every option before the folder is touched
    # the settings and what each sample asked for (the samples themselves are streamed)
    base, n = provenance.run_settings(ckpt, pipe, asked, settings), chosen["n"]
    metas = provenance.image_settings(base, asked, n, given)
    grid_meta, start_index = provenance.grid_settings(base, asked, n, given), 0
    if meta is not None:  # --from-png: the same settings, so the same bytes
        if meta["n"] == 1:
            metas, start_index = [meta], meta["index"]
        else:
            grid_meta = meta
    target = SampleDir(out, start_index)
    for x in _chain(first, batches):
        if pipe.is_image:
            target.add_images(pipe.to_images(x).numpy(), metas[target.count - start_index :])
        else:
            target.add_points(pipe.to_images(x).numpy())
    bar.close()
    seconds = time.perf_counter() - start
    if asked:  # what each sample was conditioned on, in sample order
        (out / "labels.json").write_text(json.dumps(asked, indent=1) + "\n")
    written = target.finish(grid_meta) + (f", {out / 'labels.json'}" if asked else "")
    name = settings.sampler["name"]
    print(f"{chosen['n']} samples ({name}, {settings.steps} steps) in {seconds:.1f}s: {written}")
    return 0


SETTINGS = ("sampler", "steps", "discretization", "guidance", "batch_size", "seed")


def _sample_choices(args) -> dict:
    """The `Pipeline.sample` settings the sample flags chose (None: the config's default)."""
    return dict(n=args.n, sampler=sampler_choice(args), steps=args.steps,
                discretization=args.discretization, batch_size=args.batch_size, seed=args.seed)


def _from_png(args) -> tuple[str, dict, dict, dict]:
    """(checkpoint, settings, inputs, the PNG's settings) that re-make the image --from-png names."""
    from difflab.core.pngmeta import read_png_meta
    from difflab.inference.provenance import FIELDS, sample_arguments

    meta = read_png_meta(args.from_png)
    path, kwargs = sample_arguments(meta, args.ckpt, init_given=bool(args.image))
    given = {f: kwargs.pop(f) for f in FIELDS if f in kwargs}
    return str(path), kwargs | {"batch_size": args.batch_size}, given, meta


def _chain(first, rest):
    yield first
    yield from rest


def cmd_demo(args) -> int:
    from difflab.cli.demo import run_demo

    run_demo(Path(args.out), seconds=args.seconds, quiet=args.quiet)
    return 0


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `difflab: error: ... (see difflab CMD --help)`, exit 2."""

    def error(self, message: str):
        self.exit(2, f"difflab: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    p = Parser(prog="difflab", description="Diffusion models: train, sample, eval.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser(
        "demo", parents=[common], help="train a small model on digits and write sample/loss PNGs"
    )
    d.add_argument("--out", default="demo-out", help="output directory (default: demo-out)")
    d.add_argument("--seconds", type=float, default=160.0, help="training time budget")
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", parents=[common],
                       help="train a model on a folder of images, or from a TOML config")  # fmt: skip
    t.add_argument("config", help="a folder of images (a recipe sized to them), or a TOML/JSON "
                                  "config file or built-in name (difflab list configs)")  # fmt: skip
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.steps=100")  # fmt: skip
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    t.add_argument("--dry-run", action="store_true", help="print resolved config and #params")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", parents=[common], help="draw samples from a checkpoint")
    s.add_argument("ckpt", nargs="?",
                   help="model .safetensors file, run directory (newest checkpoint) or "
                        "cascade .toml (base → SR stages)")  # fmt: skip
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("-n", type=int, default=64, help="number of samples")
    s.add_argument("--seed", type=int, default=0, help="sample i uses seed + i")
    add_sampler_arguments(s)
    s.add_argument("--steps", type=int, help="number of sampling steps")
    s.add_argument("--discretization", type=spec_arg, help=DISCRETIZATION_HELP)
    s.add_argument("--eta", type=float, help="noise level for ddim / ancestral samplers")
    s.add_argument("--batch-size", type=int, default=64)
    add_overwrite(s, "sample set in --out")
    add_request_arguments(s, what="samples")
    s.add_argument("--from-png", metavar="IMG",
                   help="re-make a PNG difflab wrote, from the settings it carries (the model "
                        "argument may be left out; other sampling flags are ignored)")
    s.add_argument("--prior", metavar="PRIOR",
                   help="unCLIP: sample image embeddings for --prompt with this prior (a "
                        "train-prior run), then decode them with the model")  # fmt: skip
    add_prior_arguments(s)
    s.set_defaults(func=cmd_sample)

    add_eval_commands(sub, common)
    add_nll_commands(sub, common)
    add_aux_commands(sub, common)
    add_clip_commands(sub, common)
    add_autoencoder_commands(sub, common)
    add_edit_commands(sub, common)
    add_export_commands(sub, common)
    add_serve_commands(sub, common)
    add_distill_commands(sub, common)
    add_encode_commands(sub, common)
    add_prior_commands(sub, common)

    add_list_commands(sub, common)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, or a one-line usage error (Parser.error)
        return exit_.code if isinstance(exit_.code, int) else 2
    except KeyboardInterrupt:
        print("difflab: interrupted", file=sys.stderr)
        return 130
    with _Interrupts() as interrupts:
        return _dispatch(args, interrupts)


def _dispatch(args, interrupts) -> int:
    """Run the command; errors → one line and an exit status."""
    from difflab.core.errors import TrainingError

    try:
        for name in ("n", "batch_size", "steps"):
            value = getattr(args, name, None)
            if isinstance(value, int) and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        for name, value in vars(args).items():  # --eta inf, --lr nan: refused before any work
            if isinstance(value, float) and not math.isfinite(value):
                raise UsageError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
        return args.func(args)
    except (UsageError, TrainingError) as err:
        if args.debug:
            raise
        print(f"difflab: error: {cli_message(str(err))}", file=sys.stderr)
        return 2 if isinstance(err, UsageError) else 1
    except KeyboardInterrupt:
        print("difflab: interrupted", file=sys.stderr)
        return 130
    except Exception:  # Ctrl-C inside an import can resurface as another error
        if args.debug or not interrupts.seen:
            raise
        print("difflab: interrupted", file=sys.stderr)
        return 130


class _Interrupts:
    """SIGINT → KeyboardInterrupt, remembered: a Ctrl-C swallowed inside a library's import can
    resurface as another error (e.g. a RecursionError from a half-imported numpy)."""

    def __init__(self):
        self.seen = False

    def __call__(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt

    def __enter__(self):
        import signal
        import threading

        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self)
        return self

    def __exit__(self, *exc):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


if __name__ == "__main__":
    sys.exit(main())
