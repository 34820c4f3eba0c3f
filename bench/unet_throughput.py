"""difflab ADM U-Net vs diffusers UNet2DModel on CPU: sampling and training throughput.

Both nets get the same architecture as far as diffusers allows: widths per level, res blocks per
level (+1 in the decoder), BigGAN-style residual up/down-sampling, scale-shift (AdaGN) embedding,
attention with the same head width at the same resolutions, and a res–attn–res middle block.
Parameter counts are printed and asserted equal within 5 %.

Timings are interleaved A/B/A/B within one process and reported as medians. A second table gives
the achieved GFLOP/s of each call (model FLOPs of convolutions, matmuls and attention counted once
with torch.utils.flop_counter; a training step counts forward + backward, not AdamW) as a
fraction of this machine's peak: a large torch.matmul in the same dtype on the same threads (MKL),
and a large 3×3 convolution (oneDNN), which on some CPUs (AMD) runs far above MKL's matmul.

    python bench/unet_throughput.py                      # presets "cifar" and "digits"
    python bench/unet_throughput.py --presets fashion16            # configs/fashion_mnist16.toml
    python bench/unet_throughput.py --resolution 64 --channels 3 --batch 8 --reps 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from torch.utils import flop_counter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too
from difflab.nets.base import NETS  # noqa: E402


@dataclass
class Config:
    name: str
    resolution: int
    channels: int
    batch: int
    model_channels: int
    channel_mult: tuple[int, ...]
    attention_resolutions: tuple[int, ...]
    head_channels: int
    num_res_blocks: int = 2
    norm_groups: int = 32  # diffusers' norm_num_groups (difflab picks its own, ≤ 32)


PRESETS = {
    "cifar": Config("cifar 32x32x3", 32, 3, 16, 64, (1, 2, 2), (16,), 32),
    "digits": Config("digits 8x8x1", 8, 1, 64, 32, (1, 2, 2), (4,), 32, norm_groups=16),
    # the net of configs/fashion_mnist16.toml (4 heads of 16 channels at 8×8), its batch size
    "fashion16": Config("fashion16 16x16x1", 16, 1, 128, 32, (1, 2, 2), (8,), 16, 1),
}


def _cpu_sdpa_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


# the CPU kernel of scaled_dot_product_attention, which flop_counter does not know by name
_CPU_SDPA = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flops,
}


def count_flops(step: Callable[[], None]) -> int:
    """Model FLOPs of one call (convolutions, matmuls, attention; not elementwise or AdamW)."""
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=_CPU_SDPA)
    with counter:
        step()
    return counter.get_total_flops()


def _gflops(fn: Callable[[], torch.Tensor], flops: float, reps: int = 7) -> float:
    """GFLOP/s of `fn` (doing `flops`), median of `reps` calls after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return flops / statistics.median(times) / 1e9


def machine_peak(dtype: torch.dtype) -> dict[str, float]:
    """This machine's measured peak, GFLOP/s: a 2048² torch.matmul (MKL) and, as a second
    reference, a large 3×3 convolution (oneDNN), both in `dtype` on the current threads."""
    n = 2048
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    x, w = torch.randn(64, 128, 16, 16, dtype=dtype), torch.randn(128, 128, 3, 3, dtype=dtype)
    conv_flops = 2 * 64 * 16 * 16 * 128 * 128 * 9
    return {
        "matmul": _gflops(lambda: torch.matmul(a, b), 2 * n**3),
        "conv": _gflops(lambda: F.conv2d(x, w, padding=1), conv_flops),
    }


def build_difflab(cfg: Config) -> torch.nn.Module:
    return NETS.build(
        {
            "name": "unet",
            "in_channels": cfg.channels,
            "out_channels": cfg.channels,
            "resolution": cfg.resolution,
            "model_channels": cfg.model_channels,
            "channel_mult": cfg.channel_mult,
            "num_res_blocks": cfg.num_res_blocks,
            "attention_resolutions": cfg.attention_resolutions,
            "head_channels": cfg.head_channels,
        }
    )


def build_diffusers(cfg: Config) -> torch.nn.Module:
    levels = len(cfg.channel_mult)
    attn = [cfg.resolution // 2**i in cfg.attention_resolutions for i in range(levels)]
    down = tuple("AttnDownBlock2D" if a else "ResnetDownsampleBlock2D" for a in attn)
    up = tuple("AttnUpBlock2D" if a else "ResnetUpsampleBlock2D" for a in reversed(attn))
    return UNet2DModel(
        sample_size=cfg.resolution,
        in_channels=cfg.channels,
        out_channels=cfg.channels,
        block_out_channels=tuple(cfg.model_channels * m for m in cfg.channel_mult),
        layers_per_block=cfg.num_res_blocks,
        down_block_types=down,
        up_block_types=up,
        attention_head_dim=cfg.head_channels,
        norm_num_groups=cfg.norm_groups,
        resnet_time_scale_shift="scale_shift",
        downsample_type="resnet",
        upsample_type="resnet",
    )


def num_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def make_step(
    net: torch.nn.Module, x: torch.Tensor, c_noise: torch.Tensor, train: bool, bf16: bool
) -> Callable[[], None]:
    """One sampling forward (inference mode) or one training step (forward, backward, AdamW)."""
    is_diffusers = isinstance(net, UNet2DModel)

    def forward() -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            if is_diffusers:
                return net(x, c_noise, return_dict=False)[0]
            return net(x, c_noise)

    if not train:
        net.eval()

        def step() -> None:
            with torch.inference_mode():
                forward()

        return step

    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    target = torch.randn_like(x)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(forward().float(), target)
        loss.backward()
        opt.step()

    return step


def interleaved(steps: list[Callable[[], None]], reps: int, warmup: int) -> list[float]:
    """Median seconds per call of each step, timed A/B/A/B... after `warmup` calls of each."""
    for _ in range(warmup):
        for step in steps:
            step()
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(reps):
        for i, step in enumerate(steps):
            t0 = time.perf_counter()
            step()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def run(cfg: Config, reps: int, warmup: int, diffusers_cl: bool, peak: dict[str, dict]) -> None:
    torch.manual_seed(0)
    nets = {"difflab": build_difflab(cfg), "diffusers": build_diffusers(cfg)}
    if diffusers_cl:  # diffusers with channels-last weights and input, for reference
        nets["diffusers-CL"] = build_diffusers(cfg).to(memory_format=torch.channels_last)
    params = {k: num_params(v) for k, v in nets.items()}
    rel = params["difflab"] / params["diffusers"] - 1
    assert abs(rel) <= 0.05, f"parameter counts differ by {rel:+.1%}: {params}"
    x = torch.randn(cfg.batch, cfg.channels, cfg.resolution, cfg.resolution)
    inputs = {k: x.contiguous(memory_format=torch.channels_last) if "CL" in k else x for k in nets}
    c_noise = torch.rand(cfg.batch) * 999
    print(
        f"\n## {cfg.name}, batch {cfg.batch}: params difflab {params['difflab'] / 1e6:.3f}M, "
        f"diffusers {params['diffusers'] / 1e6:.3f}M ({rel:+.2%})"
    )
    others = list(nets)[1:]
    header = f"{'mode':<13}" + "".join(f"{k + ' img/s':>20}" for k in nets)
    print(header + "".join(f"{'difflab/' + k:>22}" for k in others))
    achieved = []  # (mode, net, GFLOP per call, seconds per call)
    for train in (False, True):
        for bf16 in (False, True):
            mode = f"{'train' if train else 'sample'} {'bf16' if bf16 else 'fp32'}"
            steps = [make_step(net, inputs[k], c_noise, train, bf16) for k, net in nets.items()]
            times = interleaved(steps, reps, warmup)
            rates = [cfg.batch / t for t in times]
            row = f"{mode:<13}" + "".join(f"{r:>20.1f}" for r in rates)
            print(row + "".join(f"{rates[0] / r:>21.2f}x" for r in rates[1:]), flush=True)
            flops = [count_flops(step) for step in steps]
            achieved += [(mode, k, f / 1e9, t) for k, f, t in zip(nets, flops, times)]
    print(
        f"\n{'mode':<13}{'net':<14}{'GFLOP/call':>11}{'GFLOP/s':>10}{'of matmul':>11}{'of conv':>9}"
    )
    for mode, k, gflop, t in achieved:
        ref = peak[mode.split()[1]]
        of_mm, of_conv = gflop / t / ref["matmul"], gflop / t / ref["conv"]
        print(f"{mode:<13}{k:<14}{gflop:>11.3f}{gflop / t:>10.1f}{of_mm:>11.1%}{of_conv:>9.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--presets", default="cifar,digits", help="comma list of " + ",".join(PRESETS)
    )
    parser.add_argument(
        "--resolution", type=int, help="custom config: image size (replaces presets)"
    )
    parser.add_argument("--channels", type=int, default=3, help="custom config: image channels")
    parser.add_argument("--batch", type=int, help="batch size (overrides the presets' batch)")
    parser.add_argument("--model-channels", type=int, default=64, help="custom config: base width")
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions per net and mode")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per net and mode")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument(
        "--diffusers-channels-last",
        action="store_true",
        help="also time diffusers with channels-last weights and input",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.resolution:
        res = args.resolution
        mult = (1, 2, 2) if res <= 32 else (1, 2, 2, 2)
        level_res = [res // 2**i for i in range(len(mult))]
        attn = (16,) if 16 in level_res else (level_res[1],)
        name = f"custom {res}x{res}x{args.channels}"
        batch = args.batch or 16
        configs = [Config(name, res, args.channels, batch, args.model_channels, mult, attn, 32)]
    else:
        configs = [PRESETS[name] for name in args.presets.split(",")]
        if args.batch:
            configs = [Config(**{**vars(c), "batch": args.batch}) for c in configs]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"median of {args.reps} interleaved reps"
    )
    peak = {"fp32": machine_peak(torch.float32), "bf16": machine_peak(torch.bfloat16)}
    for name, ref in peak.items():
        print(
            f"peak {name}: torch.matmul 2048x2048 {ref['matmul']:.1f} GFLOP/s, "
            f"conv2d 3x3 128->128 on 64x16x16 {ref['conv']:.1f} GFLOP/s"
        )
    for cfg in configs:
        run(cfg, args.reps, args.warmup, args.diffusers_channels_last, peak)


if __name__ == "__main__":
    main()
