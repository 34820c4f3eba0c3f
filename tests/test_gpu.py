"""The CUDA path (marked `gpu`: deselected by default, skipped without a device), and the GPU
bench's clear exit on a machine without one."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from difflab import train
from difflab.core.config import load_config
from difflab.nets.base import NETS

ROOT = Path(__file__).resolve().parents[1]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
TINY = {"name": "unet", "in_channels": 1, "out_channels": 1, "resolution": 16,
        "model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
        "attention_resolutions": [8], "num_heads": 2}  # fmt: skip


@pytest.mark.gpu
@needs_cuda
def test_unet_on_cuda_matches_cpu():
    torch.manual_seed(0)
    net = NETS.build(TINY).eval()
    x, c_noise = torch.randn(4, 1, 16, 16), torch.rand(4) * 999
    with torch.no_grad():
        want = net(x, c_noise)
        got = net.cuda()(x.cuda(), c_noise.cuda()).cpu()
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)  # TF32 may be on


@pytest.mark.gpu
@needs_cuda
def test_bf16_training_on_cuda_gives_finite_losses(tmp_path):
    records = []
    cfg = load_config("fashion_mnist16", ["train.steps=5", "train.device='cuda'",
                                          "train.adamw='fused'", "train.log_every=1"])  # fmt: skip
    train(cfg, tmp_path / "run", callback=lambda r: records.append(r) if "loss" in r else None)
    losses = torch.tensor([r["loss"] for r in records])
    assert len(losses) == 5 and torch.isfinite(losses).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a device")
def test_gpu_bench_says_there_is_no_device_and_exits_cleanly():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py")],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "no CUDA device" in out.stdout
