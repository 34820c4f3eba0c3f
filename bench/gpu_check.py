"""The GPU path in one short run: difflab's U-Net vs diffusers' UNet2DModel on CUDA, bf16.

At equal parameters (±5 %, asserted; bench/unet_throughput.py builds both), in one process:
  1. sampling forward: images/s, eager and CUDA-graphed (torch.compile "reduce-overhead");
  2. `--steps` training steps of each net (bf16 autocast, TF32, SDPA attention, fused AdamW,
     torch.compile unless --no-compile), timed in interleaved chunks A/B/A/B: images/s (median
     chunk) and peak memory per image;
  3. difflab's own training loop (`difflab.train`, configs/fashion_mnist16.toml) for `--steps`
     steps on CUDA: its logged images/s.
Printed as ratios difflab / diffusers (target ≥ 1.3×). Without CUDA it says so and exits 0.

    python bench/gpu_check.py                          # presets fashion16 and cifar, 300 steps
    python bench/gpu_check.py --presets cifar --batch 256 --steps 200 --no-compile
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling bench scripts


def forward_fn(net, is_diffusers: bool):
    def forward(x, c_noise):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return net(x, c_noise, return_dict=False)[0] if is_diffusers else net(x, c_noise)

    return forward


def timed(fn, reps: int) -> float:
    """Median seconds of `fn()` over `reps` calls, CUDA-synchronised."""
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sampling(nets: dict, x, c_noise, reps: int) -> dict[str, dict[str, float]]:
    """Images/s of one inference forward per net: eager, and CUDA-graphed via torch.compile."""
    out = {}
    for name, net in nets.items():
        fwd = forward_fn(net.eval(), name == "diffusers")
        graphed = torch.compile(fwd, mode="reduce-overhead")
        rates = {}
        for mode, fn in (("eager", fwd), ("cuda graph", graphed)):
            with torch.inference_mode():
                for _ in range(3):  # warm-up (compiles and records the graph)
                    fn(x, c_noise)
                rates[mode] = len(x) / timed(lambda fn=fn: fn(x, c_noise), reps)
        out[name] = rates
    return out


def training(nets: dict, x, steps: int, compile_: bool) -> dict[str, dict[str, float]]:
    """Images/s (median of interleaved chunks) and peak MiB per image of each net's step."""
    runs = {}
    for name, net in nets.items():
        net.train()
        fwd = forward_fn(net, name == "diffusers")
        fwd = torch.compile(fwd) if compile_ else fwd
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)

        def step(fwd=fwd, opt=opt):
            c_noise = torch.rand(len(x), device=x.device) * 999
            noise = torch.randn_like(x)
            loss = F.mse_loss(fwd(x + noise, c_noise).float(), noise)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        for _ in range(3):
            step()
        runs[name] = {"step": step, "times": [], "peak": 0.0}
    chunks = 4
    for _ in range(chunks):  # A/B/A/B
        for run in runs.values():
            torch.cuda.reset_peak_memory_stats()
            run["times"].append(timed(run["step"], max(1, steps // chunks)))
            run["peak"] = max(run["peak"], torch.cuda.max_memory_allocated() / 2**20)
    return {k: {"img/s": len(x) / statistics.median(r["times"]), "MiB/img": r["peak"] / len(x)}
            for k, r in runs.items()}  # fmt: skip


def difflab_loop(steps: int) -> float:
    """Images/s that `difflab.train` logs for configs/fashion_mnist16.toml on CUDA."""
    from difflab import train
    from difflab.core.config import load_config

    records = []
    cfg = load_config("fashion_mnist16", [f"train.steps={steps}", "train.device='cuda'",
                                          "train.adamw='fused'", "train.ckpt_every=0",
                                          f"train.log_every={max(1, steps // 2)}"])  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        train(cfg, Path(d) / "run", callback=lambda r: records.append(r))
    return [r["images_per_s"] for r in records if "images_per_s" in r][-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="fashion16,cifar", help="of bench/unet_throughput.py")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=300, help="training steps per net")
    ap.add_argument("--reps", type=int, default=20, help="timed sampling forwards")
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing run. "
              "Run it on a machine with an NVIDIA GPU.")  # fmt: skip
        return
    from unet_throughput import PRESETS, build_difflab, build_diffusers, num_params  # diffusers

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, batch {args.batch}, "
          f"compile {args.compile}")  # fmt: skip
    for preset in args.presets.split(","):
        cfg = PRESETS[preset]
        torch.manual_seed(0)
        nets = {"difflab": build_difflab(cfg).cuda(), "diffusers": build_diffusers(cfg).cuda()}
        params = {k: num_params(v) for k, v in nets.items()}
        rel = params["difflab"] / params["diffusers"] - 1
        assert abs(rel) <= 0.05, f"parameter counts differ by {rel:+.1%}: {params}"
        shape = (args.batch, cfg.channels, cfg.resolution, cfg.resolution)
        x = torch.randn(shape, device="cuda").contiguous(memory_format=torch.channels_last)
        c_noise = torch.rand(args.batch, device="cuda") * 999
        print(f"\n## {cfg.name}: params difflab {params['difflab'] / 1e6:.3f}M, diffusers "
              f"{params['diffusers'] / 1e6:.3f}M ({rel:+.2%})")  # fmt: skip
        for mode, (a, b) in _pairs(sampling(nets, x, c_noise, args.reps)):
            print(f"sample {mode:<11} img/s difflab {a:>9.0f}  diffusers {b:>9.0f}  {a / b:.2f}x")
        train_rates = training(nets, x, args.steps, args.compile)
        a, b = train_rates["difflab"], train_rates["diffusers"]
        print(
            f"train ({args.steps} steps) img/s difflab {a['img/s']:>9.0f}  diffusers "
            f"{b['img/s']:>9.0f}  {a['img/s'] / b['img/s']:.2f}x  (target >= 1.3x)"
        )
        print(f"peak memory MiB/img difflab {a['MiB/img']:.2f}  diffusers {b['MiB/img']:.2f}  "
              f"{a['MiB/img'] / b['MiB/img']:.2f}x")  # fmt: skip
        del nets
        torch.cuda.empty_cache()
    print(
        f"\ndifflab train loop (fashion_mnist16, {args.steps} steps): "
        f"{difflab_loop(args.steps):.0f} img/s"
    )


def _pairs(rates: dict) -> list[tuple[str, tuple[float, float]]]:
    return [(m, (rates["difflab"][m], rates["diffusers"][m])) for m in rates["difflab"]]


if __name__ == "__main__":
    main()
