"""Few-step generation on one teacher: FD at 1, 2, 4, 8 steps for progressive distillation,
consistency distillation and consistency training (ECT-initialised), beside the teacher's FD at
10, 20 (and more) steps, with each method's training wall-clock.

    python bench/few_step.py --out bench-out/few_step [--teacher RUN] [--teacher-train 2000]
        [--student-train 1000] [--n 1000] [--features FEAT.safetensors --ref REF.npz]
        [--methods progressive,cd,ct] [--stage all|train|eval] [--cd-solver heun] [--set K=V ...]

Without --teacher, trains one: the fashion_mnist16 U-Net with EDM preconditioning (progressive
distillation needs an x0-stable parameterization, and ECT starts a consistency model from it).
FD is in the features of a domain net (`difflab train-features`) against its reference statistics
of held-out Fashion-MNIST 16×16 (`difflab ref-stats` of the test split); without --features it
falls back to raw pixels (weak: --n must then exceed 256). Progressive distillation halves 16
teacher steps in 4 rounds of --student-train/4 steps each; CD and CT train --student-train steps.
`--stage train` trains only (e.g. one process per method, in parallel) and records each method's
seconds in OUT/METHOD/seconds.json; `--stage eval` reuses finished runs. Writes table.json,
table.md and the 1- and 2-step grids.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from difflab import train
from difflab.core.config import load_config
from difflab.core.imageio import save_grid
from difflab.evaluation.evaluate import evaluate, load_ref, reference_stats
from difflab.evaluation.features import load_feature_net
from difflab.inference.pipeline import load
from difflab.storage.checkpoint import resolve_model_path
from difflab.training.distill import distill

DATA = {"name": "fashion_mnist", "split": "test", "size": 16, "resize": "bilinear"}
TEACHER = ["model.schedule={name='edm'}", "model.parameterization='edm'",
           "train.sigma_density={name='lognormal'}", "sample.sampler={name='heun'}",
           "sample.discretization={name='karras'}", "sample.guidance=[]"]  # fmt: skip
STEPS = (1, 2, 4, 8)
METHODS = ("progressive", "cd", "ct")


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench-out/few_step")
    ap.add_argument("--teacher", help="an existing teacher run dir or checkpoint")
    ap.add_argument("--teacher-seconds", type=float, help="--teacher's training wall-clock")
    ap.add_argument("--teacher-train", type=int, default=2000, help="teacher training steps")
    ap.add_argument("--teacher-steps", default="10,20,40", help="teacher sampling steps to score")
    ap.add_argument("--student-train", type=int, default=1000, help="student training steps")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--n", type=int, default=1000, help="samples per FD (> the feature dim)")
    ap.add_argument("--features", help="domain feature net .safetensors (default: raw pixels)")
    ap.add_argument("--ref", help="its reference .npz of held-out data (with --features)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--stage", choices=("all", "train", "eval"), default="all")
    ap.add_argument("--cd-solver", default="heun", help="CD teacher step: euler|heun|dpm_solver")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="teacher config override, e.g. a smaller model.net")  # fmt: skip
    args = ap.parse_args()
    if (args.features is None) != (args.ref is None):
        ap.error("--features and --ref go together (the reference of that feature net)")
    return args


def train_students(args, teacher: Path | str, out: Path, methods: list[str]) -> None:
    """Train each method's student(s) (finished runs are kept) and record their seconds."""
    common = [f"train.batch_size={args.batch_size}", "train.log_every=50", "train.ckpt_every=0"]
    student = [*common, "train.warmup=0", "train.lr=2e-4", "train.ema_decay=0.99"]
    rounds = len(STEPS)
    per_round = max(1, args.student_train // rounds)
    for method in methods:
        if (out / method / "seconds.json").exists():
            continue
        if method == "progressive":
            run = lambda: distill(teacher, out / method, method, rounds=rounds, resume=True,  # noqa: E731
                                  steps=2 * STEPS[-1],
                                  overrides=[*student, f"train.steps={per_round}"])  # fmt: skip
        else:
            extra = [f"train.loss.solver='{args.cd_solver}'"] if method == "cd" else []
            run = lambda m=method, e=extra: distill(  # noqa: E731
                teacher, out / m, m, overrides=[*student, *e, f"train.steps={args.student_train}"]
            )
        _, seconds = timed(run)
        (out / method / "seconds.json").write_text(json.dumps({"seconds": seconds}))
        print(f"{method}: trained in {seconds:.0f} s", flush=True)


def feature_setup(args):
    """(feature net, reference stats, FD column name): the domain net, else raw pixels."""
    if args.features:
        return load_feature_net({"name": "domain", "path": args.features}), load_ref(args.ref), \
            "FD (domain)"  # fmt: skip
    net = load_feature_net("raw")
    return net, reference_stats(DATA, net, n=2000), "FD (raw)"


def score(args, teacher, out: Path, methods: list[str], seconds: dict) -> tuple[list[dict], str]:
    """The table's rows (FD of the teacher and of every student) and the FD column's name. FDs
    are cached in OUT/fd_cache.json per (model file, its mtime, steps, n, features): seeds are
    fixed, so a rerun (e.g. after another method finished) only scores what is new."""
    net, ref, column = feature_setup(args)
    cache_file = out / "fd_cache.json"
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}

    def fd(run, steps, name):
        path = resolve_model_path(Path(run)).resolve()
        key = f"{path}|{path.stat().st_mtime_ns}|{steps}|{args.n}|{args.features}"
        if key not in cache:
            images = load(path)(args.n, seed=0, steps=steps, batch_size=250)
            if steps <= 2:
                save_grid(images[:64].numpy(), out / f"grid_{name}_{steps}.png")
            cache[key] = evaluate(images, ref, net, ("fd",))["fd"]
            cache_file.write_text(json.dumps(cache, indent=1))
        print(f"{name} {steps} steps: FD {cache[key]:.4g}", flush=True)
        return cache[key]

    rows = [{"method": "teacher", "steps": steps, "nfe": 2 * steps - 1,
             "fd": fd(teacher, steps, "teacher"), "train_s": seconds.get("teacher")}
            for steps in map(int, args.teacher_steps.split(","))]  # fmt: skip
    for method in filter(None, methods):  # --methods "" scores the teacher only
        total = json.loads((out / method / "seconds.json").read_text())["seconds"]
        if method == "progressive":
            for k, steps in enumerate(reversed(STEPS)):  # round 1 → 8 steps ... round 4 → 1 step
                rows.append({"method": method, "steps": steps, "nfe": steps,
                             "fd": fd(out / method / f"round-{k + 1}", steps, method),
                             "train_s": total * (k + 1) / len(STEPS)})  # fmt: skip
            continue
        for steps in STEPS:
            rows.append({"method": method, "steps": steps, "nfe": steps,
                         "fd": fd(out / method, steps, method), "train_s": total})  # fmt: skip
    return rows, column


def main() -> None:
    args = parse()
    out = Path(args.out)
    methods = args.methods.split(",")
    seconds = {} if args.teacher_seconds is None else {"teacher": args.teacher_seconds}
    teacher = args.teacher
    if teacher is None:
        common = [f"train.batch_size={args.batch_size}", "train.log_every=50", "train.ckpt_every=0"]
        cfg = load_config("fashion_mnist16", [*TEACHER, *common,
                                              f"train.steps={args.teacher_train}", *args.set])  # fmt: skip
        teacher, seconds["teacher"] = timed(lambda: train(cfg, out / "teacher"))
    if args.stage != "eval":
        train_students(args, teacher, out, methods)
    if args.stage == "train":
        return
    rows, column = score(args, teacher, out, methods, seconds)
    best = min(r["fd"] for r in rows if r["method"] == "teacher")
    lines = [f"| method | steps | NFE | {column} | FD / teacher best | train s |", "|" + "---|" * 6]
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
