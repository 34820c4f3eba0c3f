"""Time to quality: difflab's default recipe vs a diffusers-style DDPM loop at equal wall clock.

Both trainers (bench/ttq_arms.py) train a U-Net of the same parameter count (±5 %, asserted) on
the same data for the same training wall-clock budgets; at each budget the EMA weights are kept,
and after training each snapshot gives `--n` images with its best 20-NFE sampler (each arm's
candidates are in bench/ttq_arms.py, ranked by FD on `--probe-n` images of another seed). FD is
measured with difflab's domain feature net (trained and cached on first use, like `difflab
train-features`) against held-out data. Printed: difflab FD / diffusers FD per budget (target ≤ 0.8).

Modes (each arm runs in its own process; only training time counts against a budget):
  concurrent (default) — both arms at once, 1 thread each, released together: identical
                         conditions on a CPU that other jobs load too;
  sequential           — difflab, then diffusers, each with --threads.

    python bench/time_to_quality.py --dataset fashion16 --budgets 2,5,10 --n 2000
    python bench/time_to_quality.py --dataset emoji32 --budgets 2,5,10 --n 2000 --mode sequential
    python bench/time_to_quality.py --budgets 1 --n 500 --feature-steps 300      # smoke scale
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench scripts
from ttq_arms import ARMS, PRESETS  # noqa: E402

from difflab.core.imageio import save_grid  # noqa: E402
from difflab.evaluation.evaluate import evaluate, load_ref, reference_stats, save_ref  # noqa: E402
from difflab.evaluation.feature_training import train_feature_net  # noqa: E402
from difflab.evaluation.features import load_feature_net  # noqa: E402


def prepare_metric(dataset: str, cache: Path, feature_steps: int) -> tuple[Path, Path]:
    """The domain feature net and its reference statistics of `dataset`, trained/computed once."""
    preset = PRESETS[dataset]
    feats = cache / f"features-{dataset}-{feature_steps}.safetensors"
    ref = cache / f"ref-{dataset}-{feature_steps}.npz"
    cache.mkdir(parents=True, exist_ok=True)
    if not feats.exists():
        t0 = time.perf_counter()
        train_feature_net(preset.features, steps=feature_steps, out_path=feats)
        print(f"trained the feature net ({feature_steps} steps) in "
              f"{time.perf_counter() - t0:.0f} s: {feats}", flush=True)  # fmt: skip
    if not ref.exists():
        net = load_feature_net({"name": "domain", "path": str(feats)})
        save_ref(ref, reference_stats(preset.reference, net))
    return feats, ref


def worker(args) -> None:
    """One arm: train for the budgets (snapshots of the EMA at each), then sample and score."""
    torch.set_num_threads(args.threads)
    budgets = sorted(60.0 * b for b in args.budget_list)
    lr = args.diffusers_lr if args.worker == "diffusers" else None
    arm = ARMS[args.worker](PRESETS[args.dataset], budgets[-1], lr)
    out = Path(args.out)
    if args.sync:  # concurrent mode: say ready, start when the driver says go
        (out / f"{arm.name}.ready").touch()
        while not (out / "go").exists():
            time.sleep(0.05)
    snaps, trained, k = [], 0.0, 0
    while len(snaps) < len(budgets):
        t0 = time.perf_counter()
        arm.step(k, trained)
        trained += time.perf_counter() - t0
        k += 1
        if trained >= budgets[len(snaps)]:
            snaps.append((budgets[len(snaps)], k, trained, arm.snapshot()))
    ref = load_ref(args.ref_path)
    net = load_feature_net({"name": "domain", "path": args.features_path})
    rows = []
    for budget, steps, seconds, state in snaps:
        t0 = time.perf_counter()
        probe = {name: evaluate(arm.sample(state, args.probe_n, args.sample_batch, name, seed=1),
                                ref, net, ("fd",))["fd"] for name in arm.samplers}  # fmt: skip
        if None in probe.values():  # evaluate gives no FD below fd_min_n images
            sys.exit(f"--probe-n {args.probe_n} is too few images for an FD with these features; "
                     "raise it (500 is the default)")  # fmt: skip
        best = min(probe, key=probe.get)
        images = arm.sample(state, args.n, args.sample_batch, best)  # [n, C, H, W] uint8
        fd = evaluate(images, ref, net, ("fd",))["fd"]
        rows.append({"budget_min": budget / 60, "steps": steps, "train_s": seconds,
                     "img_per_s": steps * arm.batch_size / seconds, "fd": fd, "sampler": best,
                     "probe_fd": probe, "sample_s": time.perf_counter() - t0})  # fmt: skip
        save_grid(images[:64].numpy(), out / f"{arm.name}-{budget / 60:g}min.png")
    result = {"arm": arm.name, "params": arm.params, "batch": arm.batch_size, "bf16": arm.bf16,
              "lr": getattr(arm, "lr", None),
              "threads": args.threads, "rows": rows}  # fmt: skip
    (out / f"{arm.name}.json").write_text(json.dumps(result, indent=1))


def launch(args, arm: str, threads: int, out: Path, feats: Path, ref: Path, sync: bool):
    cmd = [sys.executable, __file__, "--worker", arm, "--dataset", args.dataset,
           "--budgets", args.budgets, "--n", str(args.n), "--threads", str(threads),
           "--out", str(out), "--features-path", str(feats), "--ref-path", str(ref),
           "--sample-batch", str(args.sample_batch), "--probe-n", str(args.probe_n)]  # fmt: skip
    cmd += ["--diffusers-lr", str(args.diffusers_lr)] if args.diffusers_lr else []
    cmd += ["--sync"] if sync else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return subprocess.Popen(cmd, env=env)


def drive(args) -> None:
    out = Path(args.out) / args.dataset / args.mode
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.ready"):
        stale.unlink()
    (out / "go").unlink(missing_ok=True)
    feats, ref = prepare_metric(args.dataset, Path(args.out) / "cache", args.feature_steps)
    t0 = time.perf_counter()
    if args.mode == "concurrent":
        procs = [launch(args, arm, 1, out, feats, ref, sync=True) for arm in ARMS]
        while not all((out / f"{arm}.ready").exists() for arm in ARMS):
            if any(p.poll() not in (None, 0) for p in procs):
                sys.exit("a worker failed during set-up")
            time.sleep(0.05)
        (out / "go").touch()
        codes = [p.wait() for p in procs]
    else:
        codes = [launch(args, arm, args.threads, out, feats, ref, sync=False).wait()
                 for arm in ARMS]  # fmt: skip
    if any(codes):
        sys.exit(f"worker exit codes {codes}")
    report(args, out, time.perf_counter() - t0)


def report(args, out: Path, wall: float) -> None:
    a, b = (json.loads((out / f"{arm}.json").read_text()) for arm in ARMS)
    rel = a["params"] / b["params"] - 1
    print(f"\n## time to quality, {args.dataset}, mode {args.mode} ({a['threads']} thread(s) "
          f"each), n = {args.n}, wall {wall / 60:.1f} min")  # fmt: skip
    print(f"params difflab {a['params'] / 1e6:.3f}M, diffusers {b['params'] / 1e6:.3f}M "
          f"({rel:+.2%}); batch {a['batch']}, bf16 {a['bf16']}; diffusers peak lr "
          f"{b.get('lr', 1e-4):g}")  # fmt: skip
    assert abs(rel) <= 0.05, f"parameter counts differ by {rel:+.1%}"
    print(f"{'budget':>7}{'steps A':>9}{'steps B':>9}{'img/s A':>9}{'img/s B':>9}"
          f"{'FD difflab':>12}{'FD diffusers':>14}{'ratio':>8}  target ≤ 0.8")  # fmt: skip
    for ra, rb in zip(a["rows"], b["rows"], strict=True):
        ratio = ra["fd"] / rb["fd"]
        print(f"{ra['budget_min']:>6g}m{ra['steps']:>9}{rb['steps']:>9}{ra['img_per_s']:>9.0f}"
              f"{rb['img_per_s']:>9.0f}{ra['fd']:>12.3f}{rb['fd']:>14.3f}{ratio:>8.2f}  "
              f"{'met' if ratio <= 0.8 else 'NOT met'}")  # fmt: skip
    print(f"(A = difflab, B = diffusers; sample grids in {out})")
    print(f"\neach arm's 20-NFE samplers, FD on {args.probe_n} probe images (seed 1); the best one "
          f"gave the n = {args.n} FD above:")  # fmt: skip
    for r in (a, b):
        for row in r["rows"]:
            fds = ", ".join(f"{k} {v:.3f}" for k, v in row["probe_fd"].items())
            print(f"  {r['arm']:>9} {row['budget_min']:g}m: {fds} → {row['sampler']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion16", choices=sorted(PRESETS))
    ap.add_argument("--budgets", default="2,5,10", help="training minutes, comma list")
    ap.add_argument("--n", type=int, default=2000, help="generated images per FD")
    ap.add_argument("--mode", default="concurrent", choices=("concurrent", "sequential"))
    ap.add_argument("--threads", type=int, default=2, help="threads per arm (sequential mode)")
    ap.add_argument("--feature-steps", type=int, default=2000, help="feature-net training steps")
    ap.add_argument("--sample-batch", type=int, default=500)
    ap.add_argument("--diffusers-lr", type=float,
                    help="peak learning rate of the diffusers loop (default: the script's 1e-4)")  # fmt: skip
    ap.add_argument("--probe-n", type=int, default=500,
                    help="images per sampler when each arm picks its best 20-NFE sampler")  # fmt: skip
    ap.add_argument("--out", default="bench-out/ttq")
    ap.add_argument("--worker", choices=sorted(ARMS), help=argparse.SUPPRESS)
    ap.add_argument("--sync", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--features-path", help=argparse.SUPPRESS)
    ap.add_argument("--ref-path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.budget_list = [float(b) for b in args.budgets.split(",")]
    worker(args) if args.worker else drive(args)


if __name__ == "__main__":
    main()
