"""`difflab nll`: bits/dim of held-out data by the variational bound and the probability-flow ODE."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from difflab.cli.outputs import add_overwrite, check_output_file
from difflab.core.errors import UsageError

TERMS = {"vlb": ("prior", "kl", "decoder", "total"), "ode": ("prior", "delta", "total")}


def format_table(report: dict) -> str:
    """Rows `method term mean ±ci95 sd` in bits/dim, with n, then what each method assumed."""
    lines = [f"{'method':<6} {'term':<8} {'bits/dim':>10} {'±95% CI':>9} {'SD':>8}   "
             f"(n={report['n']})"]  # fmt: skip
    for method, terms in TERMS.items():
        for term in terms if method in report else ():
            s = report[method][term]
            lines.append(f"{method:<6} {term:<8} {s['mean']:>10.4f} {s['ci95']:>9.4f} "
                         f"{s['std']:>8.4f}")  # fmt: skip
    if "ode" in report:
        lines.append(f"ode    nfe      {report['ode']['nfe']['mean']:>10.1f}")
    return "\n".join(lines + [describe(m, report[m]["options"]) for m in TERMS if m in report])


def describe(method: str, options: dict) -> str:
    """One line saying how `method` was computed (clipping, trace estimator)."""
    if method == "vlb":
        clip = ("x̂0 clipped to [-1, 1] (improved-diffusion's default; --no-clip-denoised for the "
                "raw network)" if options["clip_denoised"] else "x̂0 not clipped (raw network)")
        return f"vlb: {options['steps']} steps, {clip}"
    if options["probe"] == "exact":
        return "ode: exact trace (one backward pass per dimension)"
    return f"ode: Hutchinson trace, {options['probes']} {options['probe']} probe(s) per image"


def cmd_nll(args) -> int:
    import torch
    from tqdm import tqdm

    from difflab.cli.eval import data_spec
    from difflab.data.datasets import load_dataset
    from difflab.evaluation.likelihood import bits_per_dim
    from difflab.storage.models import load_denoiser

    check_output_file(args.json, "--json", args.overwrite)
    denoiser, config, _ = load_denoiser(args.ckpt)
    dataset = load_dataset(data_spec(args.data))
    if dataset.kind != "image" or dataset.x.dtype != torch.uint8:
        raise UsageError(f"--data {args.data} is not 8-bit image data; bits/dim needs uint8 images")
    images = dataset.x[: args.n]
    bars: dict = {}

    def callback(info: dict) -> None:
        if args.quiet:
            return
        bar = bars.get(info["method"]) or bars.setdefault(
            info["method"], tqdm(total=info["total"], desc=info["method"], unit="pass")
        )
        bar.update(info["done"] - bar.n)

    try:
        report = bits_per_dim(
            denoiser, images, config["model"]["shape"], method=args.method,
            batch_size=args.batch_size, steps=args.steps, seed=args.seed,
            clip_denoised=args.clip_denoised, callback=callback,
            **({} if args.method == "vlb" else {
                "probes": args.probes, "rtol": args.rtol, "atol": args.atol,
                "max_steps": args.max_steps, **({"probe": args.probe} if args.probe else {})}),
        )  # fmt: skip
    finally:
        for bar in bars.values():
            bar.close()
    report |= {"checkpoint": str(args.ckpt), "data": args.data}
    print(format_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def add_commands(sub, common) -> None:
    """Register `difflab nll` on the CLI's subparsers."""
    p = sub.add_parser("nll", parents=[common], help="bits/dim by the VLB and/or the ODE")
    p.add_argument("ckpt", help="model .safetensors file or run directory")
    p.add_argument("--data", required=True,
                   help="dataset name or inline TOML, e.g. \"{name='fashion_mnist', split='test', "
                        "size=16, resize='bilinear'}\"")  # fmt: skip
    p.add_argument("--method", choices=["vlb", "ode", "both"], default="both")
    p.add_argument("-n", type=int, default=1000, help="number of images (the first n)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--steps", type=int, help="VLB over this many respaced steps (default: all T)")
    p.add_argument("--clip-denoised", action=argparse.BooleanOptionalAction, default=True,
                   help="VLB: clip x̂0 to [-1, 1], as improved-diffusion's image_nll.py does "
                        "(default); --no-clip-denoised bounds the raw network")  # fmt: skip
    p.add_argument("--probes", type=int, default=1, help="Hutchinson probes per image")
    p.add_argument("--probe", metavar="KIND",
                   help="ODE trace estimator: rademacher (default; lower variance), gaussian, or "
                        "exact (one backward pass per dimension; small images only)")
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--max-steps", type=int, default=2000, help="ODE solver step budget")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the VLB noise, probes, dequantisation"
    )
    p.add_argument("--json", help="write the full report here")
    add_overwrite(p, "--json file")
    p.set_defaults(func=cmd_nll)
