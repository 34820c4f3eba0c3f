"""Few-step generation on one teacher: FD at 1, 2, 4, 8 steps for progressive distillation,
consistency distillation and consistency training (ECT-initialised), beside the teacher's FD at
10 and 20 steps, with each method's training wall-clock.

    python bench/few_step.py --out bench-out/few_step [--teacher RUN] [--teacher-train 2000]
        [--student-train 1000] [--n 500] [--set KEY=VALUE ...]

Without --teacher, trains one: the fashion_mnist16 U-Net with EDM preconditioning (progressive
distillation needs an x0-stable parameterization, and ECT starts a consistency model from it).
FD is in raw pixel features against held-out Fashion-MNIST 16×16 (the test split). Progressive
distillation halves 16 teacher steps in 4 rounds of --student-train/4 steps each; CD and CT train
--student-train steps. Writes table.json, table.md and the 1- and 2-step grids.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from difflab import train
from difflab.core.config import load_config
from difflab.core.imageio import save_grid
from difflab.evaluation.evaluate import evaluate, reference_stats
from difflab.evaluation.features import load_feature_net
from difflab.inference.pipeline import load
from difflab.training.distill import distill

DATA = {"name": "fashion_mnist", "split": "test", "size": 16, "resize": "bilinear"}
TEACHER = ["model.schedule={name='edm'}", "model.parameterization='edm'",
           "train.sigma_density={name='lognormal'}", "sample.sampler={name='heun'}",
           "sample.discretization={name='karras'}", "sample.guidance=[]"]  # fmt: skip
STEPS = (1, 2, 4, 8)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench-out/few_step")
    ap.add_argument("--teacher", help="an existing teacher run dir or checkpoint")
    ap.add_argument("--teacher-train", type=int, default=2000, help="teacher training steps")
    ap.add_argument("--student-train", type=int, default=1000, help="student training steps")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument(
        "--n", type=int, default=500, help="samples per FD (> 256, the raw feature dim)"
    )
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="teacher config override, e.g. a smaller model.net")  # fmt: skip
    args = ap.parse_args()
    out = Path(args.out)
    common = [f"train.batch_size={args.batch_size}", "train.log_every=50", "train.ckpt_every=0"]
    seconds = {}
    teacher = args.teacher
    if teacher is None:
        cfg = load_config("fashion_mnist16", [*TEACHER, *common,
                                              f"train.steps={args.teacher_train}", *args.set])  # fmt: skip
        teacher, seconds["teacher"] = timed(lambda: train(cfg, out / "teacher"))
    student = [*common, "train.warmup=0", "train.lr=2e-4", "train.ema_decay=0.99"]
    rounds = len(STEPS)
    per_round = max(1, args.student_train // rounds)
    _, seconds["progressive"] = timed(lambda: distill(
        teacher, out / "progressive", "progressive", rounds=rounds, steps=2 * STEPS[-1],
        overrides=[*student, f"train.steps={per_round}"]))  # fmt: skip
    for method in ("cd", "ct"):
        _, seconds[method] = timed(lambda m=method: distill(
            teacher, out / m, m, overrides=[*student, f"train.steps={args.student_train}"]))  # fmt: skip

    net = load_feature_net("raw")
    ref = reference_stats(DATA, net, n=2000)
    rows = []

    def fd(pipe, steps, name):
        images = pipe(args.n, seed=0, steps=steps, batch_size=250)
        if steps <= 2:
            save_grid(images[:64].numpy(), out / f"grid_{name}_{steps}.png")
        return evaluate(images, ref, net, ("fd",))["fd"]

    t = load(teacher)
    for steps in (10, 20):
        rows.append({"method": "teacher", "steps": steps, "nfe": 2 * steps - 1,
                     "fd": fd(t, steps, "teacher"), "train_s": seconds.get("teacher")})  # fmt: skip
    for k, steps in enumerate(reversed(STEPS)):  # round 1 → 8 steps ... round 4 → 1 step
        pipe = load(out / "progressive" / f"round-{k + 1}")
        rows.append({"method": "progressive", "steps": steps, "nfe": steps,
                     "fd": fd(pipe, steps, "progressive"),
                     "train_s": seconds["progressive"] * (k + 1) / rounds})  # fmt: skip
    for method in ("cd", "ct"):
        pipe = load(out / method)
        for steps in STEPS:
            rows.append({"method": method, "steps": steps, "nfe": steps,
                         "fd": fd(pipe, steps, method), "train_s": seconds[method]})  # fmt: skip
    best = min(r["fd"] for r in rows if r["method"] == "teacher")
    lines = ["| method | steps | NFE | FD (raw) | FD / teacher best | train s |", "|" + "---|" * 6]
    for r in rows:
        r["ratio"] = r["fd"] / best
        train_s = "" if r["train_s"] is None else f"{r['train_s']:.0f}"
        lines.append(f"| {r['method']} | {r['steps']} | {r['nfe']} | {r['fd']:.4g} | "
                     f"{r['ratio']:.2f} | {train_s} |")  # fmt: skip
    (out / "table.json").write_text(json.dumps({"rows": rows, "args": vars(args)}, indent=1))
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
