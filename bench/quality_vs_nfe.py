"""Sample quality vs network evaluations (NFE) for every sampler, on one trained model.

    python bench/quality_vs_nfe.py --run RUN --features FEAT.safetensors --ref REF.npz
        [--nfe 5,10,20,50,100] [--n 500] [--out bench-out/nfe]

RUN is a run dir or checkpoint (e.g. from `difflab demo` or `difflab train fashion_mnist`); FEAT a
domain feature net (`difflab train-features`) and REF its reference statistics of held-out data
(`difflab ref-stats`). For each sampler the step count is chosen so that the measured NFE is close
to each target; the reference is 1000-step DDPM ancestral sampling. Writes table.json, table.md
and fd_vs_nfe.png.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from pathlib import Path

from difflab.evaluation.evaluate import evaluate, load_ref
from difflab.evaluation.features import load_feature_net
from difflab.evaluation.plots import pyplot
from difflab.inference.pipeline import load
from difflab.samplers.base import SAMPLERS

UNIFORM = {"ddpm", "ddim", "plms", "ipndm"}  # timestep-respacing samplers on discrete schedules


GRID: dict | None = None  # --discretization: one σ grid for every sampler


def grid_for(pipe, name: str) -> str | dict:
    if GRID is not None:
        return GRID
    return "uniform" if name in UNIFORM and pipe.denoiser.schedule.discrete else "karras"


@contextmanager
def counted(pipe):
    """Count network evaluations (calls of F_θ) in calls[0] while the block runs."""
    calls = [0]

    def count(*_):
        calls[0] += 1

    hook = pipe.denoiser.net.register_forward_pre_hook(count)
    try:
        yield calls
    finally:
        hook.remove()


def run_once(pipe, name, steps, n, ref, net, guidance):
    """(FD, measured NFE, seconds per image) for one sampler at one step count."""
    with counted(pipe) as calls:
        start = time.perf_counter()
        images = pipe(n, seed=0, batch_size=n, sampler=name, steps=steps,
                      discretization=grid_for(pipe, name), guidance=guidance)  # fmt: skip
        seconds = (time.perf_counter() - start) / n
    return evaluate(images, ref, net, ("fd",))["fd"], calls[0], seconds


def steps_for(pipe, name, nfe, guidance) -> int:
    """Steps whose NFE is closest to `nfe`, from a short trial run's evaluations per step."""
    with counted(pipe) as calls:
        pipe.sample(1, sampler=name, steps=10, discretization=grid_for(pipe, name),
                    guidance=guidance)  # fmt: skip
    return max(1, round(nfe * 10 / calls[0]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--features", required=True)
    ap.add_argument("--ref", required=True)
    ap.add_argument("--nfe", default="5,10,20,50,100")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument(
        "--samplers", default=",".join(n for n in SAMPLERS.names() if n != "ode_adaptive")
    )
    ap.add_argument("--out", default="bench-out/nfe")
    ap.add_argument("--discretization", type=json.loads,
                    help='one σ grid for all samplers, e.g. \'{"name": "uniform", "spacing": '
                         '"trailing"}\' (default: uniform for DDPM-family samplers on discrete '
                         "schedules, karras otherwise)")  # fmt: skip
    ap.add_argument(
        "--reference-fd",
        type=float,
        help="reuse the 1000-step DDPM FD of an earlier run with the same settings",
    )
    ap.add_argument("--guidance", action="append", default=[],
                    help="guidance spec, e.g. static_threshold (clip x̂0 for ε-models)")  # fmt: skip
    args = ap.parse_args()
    global GRID
    GRID = args.discretization
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = load(args.run)  # the config's default guidance (x̂0 clipping) follows --guidance
    ref, net = load_ref(args.ref), load_feature_net({"name": "domain", "path": args.features})
    guidance = args.guidance
    rows = []
    if args.reference_fd is None:
        base_fd, base_nfe, base_s = run_once(pipe, "ddpm", 1000, args.n, ref, net, guidance)
    else:  # deterministic seeds: the same --n/--ref/--guidance give the same reference FD
        base_fd, base_nfe, base_s = args.reference_fd, 1000, float("nan")
    rows.append({"sampler": "ddpm", "target": 1000, "steps": 1000, "nfe": base_nfe, "fd": base_fd,
                 "s_per_image": base_s})  # fmt: skip
    print(f"reference ddpm 1000 steps: FD {base_fd:.3f}", flush=True)
    for name in args.samplers.split(","):
        for target in map(int, args.nfe.split(",")):
            try:
                steps = steps_for(pipe, name, target, guidance)
                fd, nfe, s = run_once(pipe, name, steps, args.n, ref, net, guidance)
            except Exception as err:  # noqa: BLE001  (a sampler may reject tiny step counts)
                print(f"{name} @ {target}: {err}")
                continue
            rows.append({"sampler": name, "target": target, "steps": steps, "nfe": nfe, "fd": fd,
                         "s_per_image": s})  # fmt: skip
            print(f"{name:>20} steps {steps:4d} NFE {nfe:5d}  FD {fd:8.3f}", flush=True)
    (out / "table.json").write_text(json.dumps(rows, indent=1))
    lines = [
        "| sampler | target NFE | steps | NFE | FD | FD / FD(ddpm 1000) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['sampler']} | {r['target']} | {r['steps']} | {r['nfe']} | {r['fd']:.3f} | "
              f"{r['fd'] / base_fd:.2f} |" for r in rows]  # fmt: skip
    (out / "table.md").write_text("\n".join(lines) + "\n")
    best10 = min((r for r in rows if r["target"] == 10), key=lambda r: r["fd"], default=None)
    if best10:
        print(f"best at 10 NFE: {best10['sampler']} FD {best10['fd']:.3f} = "
              f"{best10['fd'] / base_fd:.2f} x ddpm-1000 (target <= 1.1)")  # fmt: skip
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for i, name in enumerate(dict.fromkeys(r["sampler"] for r in rows[1:])):
        pts = sorted((r["nfe"], r["fd"]) for r in rows[1:] if r["sampler"] == name)
        style = ["-", "--", ":"][i // 10 % 3]  # 10 colours per line style
        ax.plot(*zip(*pts, strict=True), marker="o", ms=3, lw=1, ls=style, label=name)
    ax.axhline(base_fd, color="k", ls="--", lw=1, label="ddpm, 1000 steps")
    ax.set(xscale="log", yscale="log", xlabel="network evaluations", ylabel=ref["fd_name"])
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "fd_vs_nfe.png")
    print(f"wrote {out}/table.json, table.md, fd_vs_nfe.png")


if __name__ == "__main__":
    main()
