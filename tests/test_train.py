"""Training: the swiss roll is learnt, checkpoints round-trip, resume is bit-exact."""

import json

import pytest
import torch

from difflab import train
from difflab.core.config import load_config
from difflab.core.errors import TrainingError, UsageError
from difflab.data.datasets import load_dataset
from difflab.evaluation.plots import read_log
from difflab.inference.generate import generate
from difflab.storage import checkpoint as ckpt
from difflab.storage.models import build_denoiser, load_denoiser

TINY_UNET = ("model.net={name='unet', model_channels=16, channel_mult=[1, 2], num_res_blocks=1,"
             " attention_resolutions=[4]}")  # fmt: skip


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, n_proj: int = 64) -> float:
    """Mean 1-D Wasserstein-1 distance over random projections of two equal-size 2-D clouds."""
    g = torch.Generator().manual_seed(0)
    dirs = torch.randn(2, n_proj, generator=g)
    dirs /= dirs.norm(dim=0)
    pa, pb = (a @ dirs).sort(0).values, (b @ dirs).sort(0).values
    return (pa - pb).abs().mean().item()


def _points(run, n=2000):
    denoiser, config, _ = load_denoiser(run)
    s = config["sample"]
    return torch.cat(list(generate(denoiser, (2,), n=n, batch_size=n, sampler=s["sampler"],
                                   steps=s["steps"], discretization=s["discretization"])))  # fmt: skip


def test_swiss_roll_is_learnt(tmp_path):
    cfg = load_config("swiss_roll", ["train.steps=300"])
    untrained = load_config("swiss_roll", ["train.steps=1", "train.lr=1e-9"])
    train(cfg, tmp_path / "trained")
    train(untrained, tmp_path / "untrained")
    data = load_dataset({"name": "swiss_roll", "n": 2000, "seed": 1}).x
    good = sliced_wasserstein(_points(tmp_path / "trained"), data)
    bad = sliced_wasserstein(_points(tmp_path / "untrained"), data)
    assert good < 0.12 and bad > 3 * good, (good, bad)


def _tiny_cfg(*extra):
    return load_config("digits", [TINY_UNET, "train.batch_size=8", "train.log_every=1",
                                  "train.steps=4", *extra])  # fmt: skip


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    path = train(_tiny_cfg("train.steps=2"), tmp_path / "run")
    a, config, info = load_denoiser(path)
    b = build_denoiser(config["model"])
    b.load_state_dict(ckpt.load_model_file(path)[0])
    x, sigma = torch.randn(3, 1, 8, 8), torch.tensor([0.1, 1.0, 10.0])
    torch.testing.assert_close(a(x, sigma), b.eval()(x, sigma), rtol=0, atol=0)
    assert info["step"] == 2 and config["model"]["shape"] == [1, 8, 8]
    assert (tmp_path / "run" / "config.toml").exists()
    records = [
        json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in records] == [1, 2] and all("images_per_s" in r for r in records)


def test_resume_is_bit_exact(tmp_path):
    straight = train(_tiny_cfg("train.steps=4"), tmp_path / "a")
    train(_tiny_cfg("train.steps=2"), tmp_path / "b")
    resumed = train(_tiny_cfg("train.steps=4"), tmp_path / "b", resume=True)
    for which in (ckpt.load_tensors, lambda p: ckpt.load_tensors(ckpt.state_path(p))):
        ta, tb = which(straight)[0], which(resumed)[0]
        assert ta.keys() == tb.keys()
        for k in ta:
            assert torch.equal(ta[k], tb[k]), k


def test_refuses_to_overwrite_and_checks_resume_config(tmp_path):
    train(_tiny_cfg("train.steps=1"), tmp_path / "run")
    with pytest.raises(UsageError, match="already holds files"):
        train(_tiny_cfg("train.steps=1"), tmp_path / "run")
    with pytest.raises(UsageError, match="model config differs"):
        train(_tiny_cfg("train.steps=2", "model.sigma_data=0.7"), tmp_path / "run", resume=True)


def test_accumulation_and_bf16_and_pruning(tmp_path):
    cfg = _tiny_cfg("train.steps=3", "train.accumulate=2", "train.bf16=true", "train.ckpt_every=1",
                    "train.keep=2")  # fmt: skip
    train(cfg, tmp_path / "run")
    names = [p.name for p in ckpt.list_checkpoints(tmp_path / "run")]
    assert names == ["step-0000002.safetensors", "step-0000003.safetensors"]


def test_non_finite_loss_stops_with_a_clear_error(tmp_path):
    with pytest.raises(TrainingError, match="non-finite"):
        train(_tiny_cfg("train.lr=1e30", "train.grad_clip=0", "train.steps=20"), tmp_path / "run")


def test_in_loop_fd_on_a_held_out_reference(tmp_path):
    from difflab.evaluation.evaluate import reference_stats, save_ref
    from difflab.evaluation.feature_training import train_feature_net
    from difflab.evaluation.features import load_feature_net

    feat = train_feature_net("digits", steps=10, batch_size=32, out_path=tmp_path / "f.safetensors")
    net = load_feature_net({"name": "domain", "path": str(feat)})
    save_ref(tmp_path / "ref.npz", reference_stats({"name": "digits", "split": "test"}, net))
    cfg = _tiny_cfg("train.steps=4", "train.eval_every=2", f"train.eval_ref='{tmp_path}/ref.npz'",
                    f"train.eval_features='{feat}'", "train.eval_n=150", "sample.steps=2")  # fmt: skip
    notes = []
    train(cfg, tmp_path / "run", callback=lambda r: notes.append(r.get("note")))
    evals = [r for r in read_log(tmp_path / "run" / "log.jsonl") if "eval_fd" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(r["eval_metric"] == "FD-digits" and r["eval_n"] == 150 and r["eval_fd"] > 0
               for r in evals)  # fmt: skip
    assert any(n and "FD-digits (n=150)" in n for n in notes)
    with pytest.raises(UsageError, match="needs train.eval_ref"):
        train(_tiny_cfg("train.eval_every=2"), tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_cosine_lr_decay_follows_warm_up_and_reaches_zero():
    """lr_k = min(1, (k+1)/W) during warm-up, then ½(1 + cos(π·(k−W)/(T−W))) (SGDR, Eq. 5)."""
    from difflab.training.engine import warmup

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched, lrs = warmup(opt, 10, 110, "cosine"), []
    for _ in range(111):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:10] == pytest.approx([(k + 1) / 10 for k in range(10)])
    assert (lrs[10], lrs[60], lrs[110]) == pytest.approx((1.0, 0.5, 0.0), abs=1e-12)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    constant = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    flat = warmup(constant, 0, 110, "none")
    constant.step()
    flat.step()
    assert constant.param_groups[0]["lr"] == 1.0
    with pytest.raises(UsageError, match="lr_decay must be one of none, cosine"):
        _tiny_cfg("train.lr_decay='linear'")
