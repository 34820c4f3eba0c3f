"""Where a training step's time goes: torch.profiler over the real training engine's steps.

Builds the run exactly as `difflab train` does (config → dataset → denoiser → objective, AdamW,
warm-up, EMA → training.engine.Engine) and profiles a few `Engine.step` calls. Every profiled op's
self CPU time goes to one group: by the step region it runs in (data, grad clip, AdamW, EMA) or,
in the net's forward and backward, by its op name (convolution, attention, normalisation, ...).
Time outside any op (Python, dispatch) is its own row, so the shares add up to the step's time.

    python bench/profile_step.py                              # configs/fashion_mnist16.toml
    python bench/profile_step.py --set train.bf16=false --steps 5 --top 15
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function, schedule

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too
from difflab.core.config import load_config  # noqa: E402
from difflab.data.datasets import load_dataset  # noqa: E402
from difflab.data.loader import InfiniteLoader  # noqa: E402
from difflab.storage.codecs import build_codec  # noqa: E402
from difflab.storage.models import build_denoiser  # noqa: E402
from difflab.training import dist  # noqa: E402
from difflab.training.encoded import EncodedBatches  # noqa: E402
from difflab.training.loop import build_engine, resolve_model  # noqa: E402

REGIONS = {  # record_function names (ours and torch's) → group
    "data": "data (loader, codec)",
    "grad_clip": "optimizer (clip, AdamW, EMA)",
    "ema": "optimizer (clip, AdamW, EMA)",
    "Optimizer.step#AdamW.step": "optimizer (clip, AdamW, EMA)",
    "Optimizer.zero_grad#AdamW.zero_grad": "optimizer (clip, AdamW, EMA)",
}
OP_GROUPS = [  # (substrings of the aten op name, group), first match wins
    (("convolution", "conv2d", "mkldnn_conv"), "convolution"),
    (("scaled_dot_product", "softmax", "bmm", "baddbmm"), "attention (sdpa, softmax, bmm)"),
    (("aten::mm", "aten::addmm", "aten::linear", "aten::matmul"), "linear (mm, addmm)"),
    (("group_norm", "layer_norm", "batch_norm"), "normalisation"),
    (("copy_", "_to_copy", "aten::to", "clone", "contiguous", "cat", "stack"), "copies and casts"),
    (
        ("add", "mul", "sub", "div", "silu", "gelu", "sigmoid", "exp", "sqrt", "pow", "where",
         "neg", "lerp", "mse", "mean", "sum", "fill_", "zero_", "threshold", "tanh", "clamp",
         "cos", "sin", "log", "rsqrt", "reciprocal"),
        "elementwise and reductions",
    ),
]  # fmt: skip


def group(event) -> str:
    """The group of one profiler event: its enclosing step region, else its op name."""
    parent = event
    while parent is not None:
        if parent.name in REGIONS:
            return REGIONS[parent.name]
        parent = parent.cpu_parent
    name = event.name
    if name.startswith("ProfilerStep") or not name.startswith("aten::"):
        return "Python, autograd and dispatch overhead"
    for keys, label in OP_GROUPS:
        if any(k in name for k in keys):
            return label
    return "other ops (views, allocation, ...)"


class _Timed:
    """An iterator whose next() runs inside a profiler region named `name`."""

    def __init__(self, it, name: str):
        self.it, self.name = it, name

    def __iter__(self):
        return self

    def __next__(self):
        with record_function(self.name):
            return next(self.it)


def _in_region(fn, name: str):
    def wrapped(*args, **kwargs):
        with record_function(name):
            return fn(*args, **kwargs)

    return wrapped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="fashion_mnist16", help="built-in name or TOML file")
    ap.add_argument("--set", action="append", default=[], help="config override, key=value")
    ap.add_argument("--steps", type=int, default=5, help="timed and profiled steps")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--top", type=int, default=12, help="also list the N ops with most self time")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cfg = load_config(args.config, args.set)
    torch.manual_seed(cfg.train.seed)
    dataset = load_dataset(cfg.data.dataset)
    resolve_model(cfg, dataset)
    denoiser = build_denoiser(cfg.model).train()
    engine = build_engine(cfg, denoiser, dist.World())
    engine.ema.update = _in_region(engine.ema.update, "ema")
    clip = torch.nn.utils.clip_grad_norm_
    torch.nn.utils.clip_grad_norm_ = _in_region(clip, "grad_clip")  # as Engine.step calls it
    loader = InfiniteLoader(dataset, cfg.train.batch_size, seed=cfg.train.seed)
    batches = _Timed(EncodedBatches(loader, build_codec(cfg.model.codec)), "data")

    warm = 3  # unprofiled warm-up steps, then `steps` timed unprofiled, then `steps` profiled
    for step in range(warm):
        engine.step(step, batches)
    t0 = time.perf_counter()
    for step in range(warm, warm + args.steps):
        engine.step(step, batches)
    wall = (time.perf_counter() - t0) / args.steps
    sched = schedule(wait=0, warmup=1, active=args.steps, repeat=1)
    with profile(activities=[ProfilerActivity.CPU], schedule=sched, acc_events=True) as prof:
        for step in range(warm + args.steps, warm + 2 * args.steps + 1):
            engine.step(step, batches)
            prof.step()
    torch.nn.utils.clip_grad_norm_ = clip

    events = prof.events()
    shares: dict[str, float] = defaultdict(float)
    per_op: dict[str, float] = defaultdict(float)
    for e in events:
        shares[group(e)] += e.self_cpu_time_total
        if e.name.startswith("aten::"):
            per_op[e.name] += e.self_cpu_time_total
    total = sum(shares.values())
    n = cfg.train.batch_size
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; config {args.config} "
        f"{' '.join(args.set)}; batch {n}, bf16 {cfg.train.bf16}; {args.steps} profiled steps"
    )
    print(
        f"unprofiled {wall * 1e3:.1f} ms/step ({n / wall:.0f} img/s); "
        f"profiled {total / 1e3 / args.steps:.1f} ms/step\n"
    )
    print(f"{'group':<40}{'ms/step':>9}{'share':>8}")
    for label, us in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"{label:<40}{us / 1e3 / args.steps:>9.1f}{us / total:>8.1%}")
    print(f"\ntop {args.top} ops by self time:")
    for name, us in sorted(per_op.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {name:<50}{us / 1e3 / args.steps:>8.1f} ms/step{us / total:>7.1%}")


if __name__ == "__main__":
    main()
