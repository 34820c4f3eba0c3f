"""Two training set-ups of one config, timed step by step in turn (A/B/A/B): median ms/step, the
optimizer part (AdamW and EMA updates) on its own, and the ratio A/B — paired, so a CPU that
other jobs load slows both alike.

    python bench/step_ab.py --a "train.adamw='loop'" --b "train.adamw='foreach'"
    python bench/step_ab.py --b "train.adamw='fused'" --steps 20 --threads 1
    python bench/step_ab.py --compile-b            # torch.compile of B's U-Net (compile time too)
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too
from difflab.core.config import load_config  # noqa: E402
from difflab.data.datasets import load_dataset  # noqa: E402
from difflab.data.loader import InfiniteLoader  # noqa: E402
from difflab.storage.codecs import build_codec  # noqa: E402
from difflab.storage.models import build_denoiser  # noqa: E402
from difflab.training import dist  # noqa: E402
from difflab.training.encoded import EncodedBatches  # noqa: E402
from difflab.training.loop import build_engine, resolve_model  # noqa: E402


class Setup:
    """One engine of `config` with `sets`; step() returns (step seconds, optimizer seconds)."""

    def __init__(self, config: str, sets: list[str], compile_net: bool):
        cfg = load_config(config, sets)
        torch.manual_seed(cfg.train.seed)
        dataset = load_dataset(cfg.data.dataset)
        resolve_model(cfg, dataset)
        denoiser = build_denoiser(cfg.model).train()
        if compile_net:
            denoiser.net.forward = torch.compile(denoiser.net.forward)
        self.engine = build_engine(cfg, denoiser, dist.World())
        loader = InfiniteLoader(dataset, cfg.train.batch_size, seed=cfg.train.seed)
        self.batches = EncodedBatches(loader, build_codec(cfg.model.codec))
        self.k, self.opt_s = 0, 0.0
        for obj, name in ((self.engine.opt, "step"), (self.engine.ema, "update")):
            setattr(obj, name, self._timed(getattr(obj, name)))

    def _timed(self, fn):
        def wrapped(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            self.opt_s += time.perf_counter() - t0
            return out

        return wrapped

    def step(self) -> tuple[float, float]:
        self.opt_s = 0.0
        t0 = time.perf_counter()
        self.engine.step(self.k, self.batches)
        self.k += 1
        return time.perf_counter() - t0, self.opt_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="fashion_mnist16")
    ap.add_argument("--a", action="append", default=[], help="config override of A, key=value")
    ap.add_argument("--b", action="append", default=[], help="config override of B, key=value")
    ap.add_argument("--compile-b", action="store_true", help="torch.compile B's network")
    ap.add_argument("--steps", type=int, default=10, help="timed steps of each")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()`"))
    a = Setup(args.config, args.a, False)
    b = Setup(args.config, args.b, args.compile_b)
    t0 = time.perf_counter()
    first_b = b.step()[0]  # with --compile-b: compiles
    compile_s = time.perf_counter() - t0
    for _ in range(args.warmup):
        a.step(), b.step()
    times: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
    for _ in range(args.steps):
        times["A"].append(a.step())
        times["B"].append(b.step())
    med = {k: [statistics.median(t[i] for t in v) for i in (0, 1)] for k, v in times.items()}
    print(
        f"torch {torch.__version__}, {args.threads} thread(s); {args.config}; "
        f"{args.steps} paired steps; A: {' '.join(args.a) or 'config'}; "
        f"B: {' '.join(args.b) or 'config'}{' + torch.compile' if args.compile_b else ''}"
    )
    print(f"{'':<4}{'ms/step':>10}{'optimizer ms':>14}")
    for k, (step, opt) in med.items():
        print(f"{k:<4}{step * 1e3:>10.1f}{opt * 1e3:>14.1f}")
    print(f"A/B step {med['A'][0] / med['B'][0]:.3f}x, optimizer {med['A'][1] / med['B'][1]:.3f}x")
    if args.compile_b:
        saved = med["A"][0] - med["B"][0]
        pays = f"pays back after {first_b / saved:.0f} steps" if saved > 0 else "never pays back"
        print(f"B's first step (compile) {compile_s:.1f} s; {pays}")


if __name__ == "__main__":
    main()
