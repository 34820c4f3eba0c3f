"""How the Fréchet distance's small-sample bias shrinks with n, on real data only.

    python bench/fd_bias.py --features FEAT.safetensors [--data "{name='fashion_mnist', size=16, resize='bilinear'}"]
        [--ns 500,1000,2000,5000,10000] [--repeats 5] [--out bench-out/fd_bias]

The reference is the whole train split; the "samples" are random n-subsets of the test split
(drawn without replacement; n = all of it has one subset). Both come from the same distribution,
so the true FD is ~0 and what is measured is FD's bias at n plus the train/test gap. Following
Chong & Forsyth (2020, "Effectively unbiased FID") the bias is k/n; since the subsets come from a
finite pool of N test images, FD(n) is fit as FD_N + k·(1/n − 1/N) (finite-population correction)
and the population value is FD∞ = FD_N − k/N.
Writes table.json, table.md and fd_vs_n.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from difflab.core.config import parse_value
from difflab.data.datasets import load_dataset
from difflab.evaluation import metrics as M
from difflab.evaluation.features import extract, load_feature_net
from difflab.evaluation.plots import pyplot


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--features", required=True, help="domain feature net (train-features)")
    p.add_argument("--data", default="{name='fashion_mnist', size=16, resize='bilinear'}")
    p.add_argument("--ns", default="500,1000,2000,5000,10000")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="bench-out/fd_bias")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = parse_value(args.data)
    spec = spec if isinstance(spec, dict) else {"name": spec}
    net = load_feature_net({"name": "domain", "path": args.features})

    start = time.perf_counter()
    train = load_dataset({**spec, "split": "train"})
    test = load_dataset({**spec, "split": "test"})
    f_train = extract(net, train.x, batch_size=500)[0].numpy()  # [60000, D]
    f_test = extract(net, test.x, batch_size=500)[0].numpy()  # [10000, D]
    mu_r, sigma_r = M.feature_stats(f_train)
    rows = []
    for n in (int(v) for v in args.ns.split(",")):
        if n > len(f_test):
            raise SystemExit(f"n={n} exceeds the {len(f_test)} test images")
        reps = 1 if n == len(f_test) else args.repeats
        fds = []
        for r in range(reps):
            idx = np.random.default_rng(1000 * n + r).permutation(len(f_test))[:n]
            mu, sigma = M.feature_stats(f_test[idx])
            fds.append(M.frechet_distance(mu, sigma, mu_r, sigma_r))
        rows.append({"n": n, "repeats": reps, "fd_mean": float(np.mean(fds)),
                     "fd_std": float(np.std(fds, ddof=1)) if reps > 1 else 0.0, "fds": fds})  # fmt: skip

    # FD(n) = FD_N + k·(1/n − 1/N), least squares over every measurement; FD∞ = FD_N − k/N
    ns = np.concatenate([[r["n"]] * len(r["fds"]) for r in rows]).astype(float)
    fds = np.concatenate([r["fds"] for r in rows])
    pool = len(f_test)
    # weighted by 1/std at each n (small n is noisier); the single full-pool value gets the least std
    stds = {r["n"]: r["fd_std"] for r in rows}
    floor = min([v for v in stds.values() if v > 0] or [1.0])
    w = np.array([1 / max(stds[int(n)], floor) for n in ns])
    design = np.stack([np.ones_like(ns), 1 / ns - 1 / pool], 1)
    (fd_pool, k), *_ = np.linalg.lstsq(design * w[:, None], fds * w, rcond=None)
    fd_inf = fd_pool - k / pool

    def fit(n):
        return fd_pool + k * (1 / n - 1 / pool)

    result = {"metric": net.fd_name, "feature_hash": net.hash, "reference": "train split",
              "reference_n": len(f_train), "samples": "test split subsets", "rows": rows,
              "fit": {"fd_pool": float(fd_pool), "k": float(k), "fd_inf": float(fd_inf)},
              "seconds": time.perf_counter() - start}  # fmt: skip
    (out / "table.json").write_text(json.dumps(result, indent=1))
    lines = [
        f"| n | repeats | {net.fd_name} mean | std | fit FD_N + k(1/n − 1/N) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['n']} | {r['repeats']} | {r['fd_mean']:.4f} | {r['fd_std']:.4f} | "
                     f"{fit(r['n']):.4f} |")  # fmt: skip
    lines.append(f"\nk = {k:.1f} (bias k/n), FD_N = {fd_pool:.4f} at N = {pool}, "
                 f"population FD∞ = FD_N − k/N = {fd_inf:.4f}")  # fmt: skip
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar([r["n"] for r in rows], [r["fd_mean"] for r in rows],
                yerr=[r["fd_std"] for r in rows], marker="o", capsize=3, label="test subset vs train")  # fmt: skip
    grid = np.geomspace(ns.min(), ns.max(), 50)
    ax.plot(grid, fit(grid), "--", label=f"fit {fd_pool:.3f} + {k:.0f}(1/n − 1/{pool})")
    ax.set_xscale("log")
    ax.set_xlabel("n (samples)")
    ax.set_ylabel(net.fd_name)
    ax.set_title("FD bias vs sample count (real data)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "fd_vs_n.png", dpi=120)
    print(f"wrote {out / 'fd_vs_n.png'}")


if __name__ == "__main__":
    main()
