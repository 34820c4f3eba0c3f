"""DDP on CPU: torchrun with 2 processes (1 thread each) vs 1 process (2 threads), same global batch.

    python bench/ddp_throughput.py [--steps 60] [--global-batch 128] [--reps 2]

Prints the median images/s of each (after the first log interval) and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path


def run(nproc: int, threads: int, steps: int, global_batch: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        sets = [f"train.steps={steps}", f"train.batch_size={global_batch // nproc}",
                "train.log_every=10", "train.ckpt_every=0"]  # fmt: skip
        cmd = ["torchrun", "--standalone", f"--nproc_per_node={nproc}", "-m", "difflab", "train",
               "digits", "--out", f"{tmp}/run", "--quiet", *[a for s in sets for a in ("--set", s)]]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run(cmd, check=True, env=env, capture_output=True)
        lines = Path(f"{tmp}/run/log.jsonl").read_text().splitlines()
        return statistics.median(json.loads(line)["images_per_s"] for line in lines[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--global-batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    one, two = [], []
    for _ in range(args.reps):  # A/B/A/B
        one.append(run(1, 2, args.steps, args.global_batch))
        two.append(run(2, 1, args.steps, args.global_batch))
    a, b = statistics.median(one), statistics.median(two)
    print(f"1 process x 2 threads : {a:8.1f} images/s  (runs: {[round(v) for v in one]})")
    print(f"2 processes x 1 thread: {b:8.1f} images/s  (runs: {[round(v) for v in two]})")
    print(f"ratio 2-proc / 1-proc : {b / a:.2f}")


if __name__ == "__main__":
    main()
