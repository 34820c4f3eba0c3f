"""train.adamw: the foreach and fused AdamW kernels against PyTorch's per-parameter loop."""

import pytest
import torch

from difflab import train
from difflab.core.config import load_config
from difflab.core.errors import UsageError
from difflab.storage import checkpoint as ckpt
from difflab.training.engine import adamw
from difflab.training.objectives.base import OptimizerState

TINY_UNET = ("model.net={name='unet', model_channels=16, channel_mult=[1, 2], num_res_blocks=1,"
             " attention_resolutions=[4]}")  # fmt: skip


def _weights(tmp_path, impl: str) -> dict[str, torch.Tensor]:
    cfg = load_config("digits", [TINY_UNET, "train.batch_size=8", "train.steps=5",
                                 "train.weight_decay=0.01", f"train.adamw='{impl}'"])  # fmt: skip
    path = train(cfg, tmp_path / impl)
    return ckpt.load_tensors(ckpt.state_path(path))[0]  # weights, EMA and AdamW moments


def test_foreach_is_bit_identical_and_fused_within_1e6_of_the_loop(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loop, foreach, fused = (_weights(tmp_path, k) for k in ("loop", "foreach", "fused"))
    finally:
        torch.set_num_threads(threads)
    assert loop.keys() == foreach.keys() == fused.keys()
    for k in loop:
        assert torch.equal(loop[k], foreach[k]), k
        torch.testing.assert_close(fused[k], loop[k], rtol=1e-6, atol=1e-6, msg=k)
    assert any(not torch.equal(loop[k], fused[k]) for k in loop)  # fused really ran


@pytest.mark.parametrize(("saved", "current"), [("loop", "fused"), ("fused", "foreach")])
def test_resumed_optimizer_keeps_its_own_kernels(saved, current):
    params = [torch.nn.Parameter(torch.randn(4, 3))]
    a = adamw(params, saved, lr=1e-3)
    params[0].grad = torch.randn(4, 3)
    a.step()
    b = adamw(params, current, lr=1e-3)
    OptimizerState(b).load_state_dict(OptimizerState(a).state_dict())
    group = b.param_groups[0]
    assert bool(group["fused"]) == (current == "fused")
    assert bool(group["foreach"]) == (current == "foreach")
    torch.testing.assert_close(b.state[params[0]]["exp_avg"], a.state[params[0]]["exp_avg"])


def test_unknown_kernel_is_refused():
    with pytest.raises(UsageError, match="adamw must be one of foreach, fused, loop"):
        load_config("digits", ["train.adamw='apex'"])
    with pytest.raises(UsageError, match="`impl` must be"):
        adamw([torch.nn.Parameter(torch.ones(1))], "apex")
