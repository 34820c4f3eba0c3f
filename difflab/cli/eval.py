"""`difflab {train-features,ref-stats,eval}`: evaluation commands (thin calls into evaluate.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from difflab.cli.outputs import add_overwrite, check_output_file
from difflab.cli.request_args import (
    DISCRETIZATION_HELP,
    SAMPLER_HELP,
    add_request_arguments,
    spec_arg,
)
from difflab.core.config import parse_value
from difflab.core.errors import UsageError


def feature_spec(name: str | None, weights: str | None) -> dict:
    """--features raw | inception (with --weights) | a domain net .safetensors path."""
    if name is None or name in ("raw", "inception"):
        spec = {"name": name or "raw"}
        if weights:
            if spec["name"] != "inception":
                raise UsageError("--weights is for --features inception")
            spec["weights"] = weights
        return spec
    if Path(name).suffix == ".safetensors":
        return {"name": "domain", "path": name}
    raise UsageError(
        f"--features {name!r} is not raw, inception or a domain net file (.safetensors from "
        "`difflab train-features`)"
    )


def data_spec(text: str) -> dict | str:
    """A dataset name, an inline TOML table ("{name='digits', split='test'}") or a folder path."""
    if text.startswith("{"):
        return parse_value(text)
    from difflab.data.datasets import DATASETS

    if text not in DATASETS and Path(text).is_dir():  # an image folder (its own channels)
        return {"name": "folder", "path": text, "channels": folder_channels(Path(text))}
    return text


def folder_channels(path: Path) -> int:
    """1 when the folder's first image is grayscale (L, I;16, ...), else 3."""
    from PIL import Image

    from difflab.core.imageio import image_files

    files = image_files(path)
    if not files:
        return 3
    try:
        with Image.open(files[0]) as im:
            return 1 if im.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F") else 3
    except OSError:
        return 3  # the dataset reports the unreadable file


def cmd_train_features(args) -> int:
    from tqdm import tqdm

    from difflab.evaluation.feature_training import train_feature_net
    from difflab.evaluation.features import load_feature_net

    check_output_file(args.out, "--out", args.overwrite)
    bar = tqdm(total=args.steps, desc="train-features", disable=args.quiet, leave=False)
    try:
        path = train_feature_net(
            data_spec(args.data), steps=args.steps, batch_size=args.batch_size, seed=args.seed,
            out_path=args.out, objective=args.objective, callback=lambda r: bar.update(1),
        )  # fmt: skip
    finally:
        bar.close()
    net = load_feature_net({"name": "domain", "path": str(path)})
    info = net.info
    if "test_accuracy" in info:
        acc = info["test_accuracy"]
        how = f"supervised on {net.num_classes} classes, held-out accuracy {acc:.3f}"
    else:
        how = (f"self-supervised (SimCLR, no labels), held-out view-matching accuracy "
               f"{info['view_accuracy']:.3f}")  # fmt: skip
    print(f"feature net for {net.fd_name}: {path} ({how})")
    return 0


def cmd_ref_stats(args) -> int:
    from difflab.evaluation.evaluate import reference_stats, save_ref
    from difflab.evaluation.features import load_feature_net

    check_output_file(args.out, "--out", args.overwrite)
    net = load_feature_net(feature_spec(args.features, args.weights))
    ref = reference_stats(data_spec(args.data), net, args.n)
    save_ref(args.out, ref)
    print(f"{ref['fd_name']} reference of {ref['n']} items ({ref['dataset']}): {args.out}")
    return 0


def _sampled_images(path: Path, args, steps: int | None):
    """(uint8 images [n, C, H, W], origin dict, class labels [n] or None) from one checkpoint."""
    import torch

    from difflab.cli.request_args import request_options
    from difflab.inference.pipeline import load

    pipe = load(path, allow_pickle=args.allow_pickle)
    result = pipe.sample(
        args.n, seed=args.seed, batch_size=args.batch_size, sampler=args.sampler, steps=steps,
        discretization=args.discretization, **request_options(args),
    )  # fmt: skip
    s, asked = result.settings, result.asked
    origin = {"checkpoint": str(path), "step": pipe.info.get("step"), "sampler": s.sampler,
              "steps": s.steps, "discretization": s.discretization, "seed": s.seed,
              "guidance": asked.get("guidance", [])}  # fmt: skip
    labels = torch.tensor(asked["classes"]) if "classes" in asked else None
    return pipe.to_images(result.x), origin, labels


def parse_steps(text: str) -> list[int]:
    """'5,10,20' → [5, 10, 20]; each must be an integer >= 1."""
    try:
        steps = [int(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(
            f"--steps {text!r} is not an integer or a comma list like 5,10,20"
        ) from None
    if min(steps) < 1:
        raise UsageError(f"--steps must be >= 1, got {text}")
    return steps


def summary(report: dict) -> str:
    """One line for a person: KID ± its standard error first when FD is marked small-n."""
    parts = []
    if "kid_mean" in report:
        parts.append(f"{report['kid_name']} = {report['kid_mean']:.4g} ± {report['kid_se']:.2g}")
    if "fd" in report:
        if report["fd"] is None:
            parts.append(f"{report['fd_name']} = n/a (fewer items than feature dimensions)")
        else:
            mark = " (biased at this n; not comparable across n)" if report.get("fd_small_n") else ""
            parts.append(f"{report['fd_name']} = {report['fd']:.4g}{mark}")
    return f"n = {report['n']} vs {report['n_ref']} reference: " + "; ".join(parts)


def cmd_eval(args) -> int:
    from difflab.cli.errors import cli_message
    from difflab.evaluation.evaluate import evaluate, load_ref, sample_images
    from difflab.evaluation.features import load_feature_net
    from difflab.storage import checkpoint as ckpt

    check_output_file(args.out, "--out", args.overwrite)
    check_output_file(args.plot, "--plot", args.overwrite)
    ref = load_ref(args.ref)
    if args.features is None and ref["feature_net"] != "raw":
        raise UsageError(
            f"{args.ref} was made with the {ref['feature_net']} feature net; pass the same one "
            "with --features (and --weights for inception)"
        )
    net = load_feature_net(feature_spec(args.features, args.weights))
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    source = Path(args.source)
    steps_list = parse_steps(args.steps) if args.steps else [None]
    if source.is_dir() and not (source / "checkpoints").is_dir():
        channels, size = ref["shape"][0], ref["shape"][-1]
        images, skipped = sample_images(source, channels=channels, size=size)
        images = images[: args.n]
        report = {**evaluate(images, ref, net, metrics), "folder": str(source)}
        reports = [{**report, "skipped": [str(p.relative_to(source)) for p in skipped]}]
    else:
        paths = ckpt.list_checkpoints(source) if args.all_checkpoints else [source]
        if not paths:
            raise UsageError(f"{source} holds no checkpoints; --all-checkpoints needs a run dir")
        reports = []
        for path in paths:
            for steps in steps_list:
                images, origin, labels = _sampled_images(path, args, steps)
                report = evaluate(images, ref, net, metrics, labels=labels)
                reports.append({**report, **origin})
    for r in reports:
        if "note" in r:
            r["note"] = cli_message(r["note"])
    text = json.dumps(reports[0] if len(reports) == 1 else reports, indent=1, default=str)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    if not args.quiet:
        notes = dict.fromkeys(r["note"] for r in reports if "note" in r)
        for line in [*map(summary, reports), *(f"note: {n}" for n in notes)]:
            print(line, file=sys.stderr)
    if args.plot:
        plot_reports(reports, Path(args.plot), ref["fd_name"], by_step=args.all_checkpoints)
    return 0


def plot_reports(reports: list[dict], out: Path, fd_name: str, by_step: bool) -> None:
    """FD vs training step (one line per step count) or FD vs sampling steps, as a PNG."""
    from difflab.evaluation.plots import pyplot

    if "fd" not in reports[0]:
        raise UsageError("--plot draws the Fréchet distance; include fd in --metrics")
    if any(r["fd"] is None for r in reports):
        raise UsageError("--plot needs an FD for every point; evaluate more samples than the "
                         "feature dimension (-n)")  # fmt: skip
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    key, group = ("step", "steps") if by_step else ("steps", "checkpoint")
    for value in dict.fromkeys(r.get(group) for r in reports):
        pts = sorted((r[key], r["fd"]) for r in reports if r.get(group) == value)
        ax.plot(*zip(*pts, strict=True), marker="o", label=f"{group} {value}")
    ax.set(xlabel="training step" if by_step else "sampling steps", ylabel=fd_name,
           yscale="log", title=f"{fd_name}, n = {reports[0]['n']}")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    print(f"plot: {out}")


def add_commands(sub, common) -> None:
    """Register the evaluation subcommands on the CLI's subparsers."""
    t = sub.add_parser("train-features", parents=[common],
                       help="train a domain feature net (for FD-/KID-<dataset>) on an image folder "
                            "or dataset, with labels (class subfolders) or without")  # fmt: skip
    t.add_argument("data", help="image folder (class subfolders optional), dataset name or "
                                "inline TOML table")  # fmt: skip
    t.add_argument("--objective", choices=("auto", "classification", "simclr"), default="auto",
                   help="auto: classification with ≥ 2 class subfolders / labels, else "
                        "self-supervised SimCLR")  # fmt: skip
    t.add_argument("--out", required=True, help="output .safetensors file")
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--seed", type=int, default=0)
    add_overwrite(t)
    t.set_defaults(func=cmd_train_features)

    r = sub.add_parser("ref-stats", parents=[common], help="feature statistics of real data")
    r.add_argument("data", help="dataset name, inline TOML table or image folder")
    r.add_argument("--out", required=True, help="output .npz file")
    r.add_argument("--features", help="raw | inception | domain net .safetensors")
    r.add_argument("--weights", help="Inception weights file (pt_inception-2015-12-05-*.pth)")
    r.add_argument("-n", type=int, help="number of items (default: all)")
    add_overwrite(r)
    r.set_defaults(func=cmd_ref_stats)

    e = sub.add_parser("eval", parents=[common], help="FD / KID / IS / precision-recall")
    e.add_argument("source", help="checkpoint, run dir, or a folder of images (of a sample "
                                  "set: only its numbered images/NNNNNN.png)")  # fmt: skip
    e.add_argument("--ref", required=True, help="reference .npz from `difflab ref-stats`")
    e.add_argument("--features", help="the feature net the reference was made with")
    e.add_argument("--weights", help="Inception weights file")
    e.add_argument("-n", type=int, default=1000, help="number of samples")
    e.add_argument("--metrics", default="fd,kid,pr", help="comma list of fd,kid,is,pr,acc")
    e.add_argument("--sampler", type=spec_arg, help=SAMPLER_HELP)
    e.add_argument("--steps", help="sampling steps; a comma list (5,10,20) evaluates each")
    e.add_argument("--discretization", type=spec_arg, help=DISCRETIZATION_HELP)
    add_request_arguments(e, what="evaluated samples")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--batch-size", type=int, default=250)
    e.add_argument("--out", help="also write the JSON report here")
    e.add_argument("--all-checkpoints", action="store_true",
                   help="evaluate every checkpoint of the run dir (FD vs training step)")  # fmt: skip
    e.add_argument("--plot", help="write a PNG of FD vs training step or vs sampling steps")
    add_overwrite(e, "--out / --plot file")
    e.set_defaults(func=cmd_eval)
