"""Peak memory per image of a U-Net training step, with and without gradient checkpointing.

    python bench/memory.py [--resolution 32] [--batch 32] [--channels 64]

Each configuration runs in a fresh subprocess; on CPU the peak is the growth of the process's
max RSS over one training step, on CUDA torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys, torch
from difflab.nets.base import NETS
res, batch, ch, ckpt = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
dev = "cuda" if torch.cuda.is_available() else "cpu"
net = NETS.build({"name": "unet", "model_channels": ch, "channel_mult": [1, 2, 2],
                  "attention_resolutions": [res // 4], "checkpointing": ckpt},
                 in_channels=3, out_channels=3, resolution=res).to(dev)
x, c = torch.randn(batch, 3, res, res, device=dev), torch.rand(batch, device=dev)
net(x, c).square().mean().backward()  # warm-up allocations
net.zero_grad(set_to_none=True)
if dev == "cuda":
    torch.cuda.reset_peak_memory_stats()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
net(x, c).square().mean().backward()
peak = torch.cuda.max_memory_allocated() if dev == "cuda" else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024
print(json.dumps({"device": dev, "peak_bytes": peak}))
"""


def measure(res: int, batch: int, ch: int, checkpointing: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(res), str(batch), str(ch),
                          "1" if checkpointing else "0"], capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--channels", type=int, default=64)
    args = ap.parse_args()
    rows = {}
    for ckpt in (False, True):
        r = measure(args.resolution, args.batch, args.channels, ckpt)
        rows[ckpt] = r["peak_bytes"] / args.batch / 2**20
        print(f"checkpointing={ckpt!s:5}  device={r['device']}  peak {rows[ckpt]:.2f} MiB/image")
    print(f"ratio with/without checkpointing: {rows[True] / rows[False]:.2f}")


if __name__ == "__main__":
    main()
