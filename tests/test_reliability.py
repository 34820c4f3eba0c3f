"""Reliability: SIGKILL at random steps then resume gives the same weights; corrupt checkpoints
fall back; non-finite steps skip or stop; torchrun DDP (gloo) equals one process."""

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train import TINY_UNET

from difflab import train
from difflab.core.config import load_config
from difflab.evaluation.plots import read_log
from difflab.storage import checkpoint as ckpt

TINY = [TINY_UNET, "train.batch_size=8", "train.log_every=1", "train.ckpt_every=1", "train.keep=2",
        "train.warmup=3"]  # fmt: skip


def weights_hash(model_file: Path) -> str:
    """Hash of EMA weights plus raw weights and optimizer state of a checkpoint."""
    h = hashlib.sha256()
    for path in (model_file, ckpt.state_path(model_file)):
        tensors, _ = ckpt.load_tensors(path)
        for key in sorted(tensors):
            if not key.startswith("rng."):
                h.update(key.encode() + tensors[key].numpy().tobytes())
    return h.hexdigest()


def _cli_train(run: Path, steps: int, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "difflab", "train", "digits", "--out", str(run), "--quiet",
            *[a for s in [*TINY, f"train.steps={steps}"] for a in ("--set", s)], *extra]  # fmt: skip
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_and_resume(tmp_path: Path, kills: int, steps: int, seed: int) -> tuple[str, str, int]:
    straight = tmp_path / "straight"
    assert _cli_train(straight, steps).wait(timeout=300) == 0
    run, rng, survived = tmp_path / "killed", random.Random(seed), 0
    for k in range(kills):
        proc = _cli_train(run, steps, *(["--resume"] if k else []))
        target = rng.randint(1, steps - 1)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:  # kill once past the target step
            latest = ckpt.latest_checkpoint(run) if run.exists() else None
            if latest is not None and int(latest.stem.split("-")[1]) >= target:
                break
            time.sleep(0.02)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            survived += 1
    final = _cli_train(run, steps, "--resume")
    assert final.wait(timeout=300) == 0, final.stderr.read()
    return (
        weights_hash(ckpt.latest_checkpoint(straight)),
        weights_hash(ckpt.latest_checkpoint(run)),
        survived,
    )


def test_sigkill_at_random_steps_then_resume_matches_uninterrupted(tmp_path):
    a, b, survived = _kill_and_resume(tmp_path, kills=3, steps=12, seed=0)
    assert survived >= 1 and a == b


@pytest.mark.slow
def test_twenty_kills(tmp_path):
    a, b, survived = _kill_and_resume(tmp_path, kills=20, steps=40, seed=1)
    assert survived >= 15 and a == b


def test_corrupt_newest_checkpoint_falls_back_to_previous(tmp_path):
    cfg = load_config("digits", [*TINY, "train.steps=3"])
    train(cfg, tmp_path / "run")
    newest = ckpt.latest_checkpoint(tmp_path / "run")
    newest.write_bytes(newest.read_bytes()[:100])  # truncated by a crash mid-copy, say
    notes = []
    train(load_config("digits", [*TINY, "train.steps=4"]), tmp_path / "run", resume=True,
          callback=lambda r: notes.append(r.get("note")))  # fmt: skip
    text = " ".join(n for n in notes if n)
    assert "skipped step-0000003.safetensors" in text and "resumed from" in text
    assert "step-0000002" in text
    assert ckpt.latest_checkpoint(tmp_path / "run").name == "step-0000004.safetensors"


def test_best_checkpoint_is_kept(tmp_path):
    train(load_config("digits", [*TINY, "train.steps=3"]), tmp_path / "run")
    best = tmp_path / "run" / "checkpoints" / "best.safetensors"
    assert best.exists() and ckpt.load_model_file(best)[2]["step"] in (1, 2, 3)


def test_non_finite_steps_can_be_skipped(tmp_path):
    cfg = load_config("digits", [*TINY, "train.steps=3", "train.lr=1e30", "train.grad_clip=0",
                                 "train.on_nonfinite=\"skip\""])  # fmt: skip
    records = []
    train(cfg, tmp_path / "run", callback=records.append)
    assert any(r.get("skipped") for r in records)


def _torchrun(nproc: int, run: Path, *sets: str) -> subprocess.CompletedProcess:
    args = ["torchrun", "--standalone", f"--nproc_per_node={nproc}", "-m", "difflab", "train",
            "digits", "--out", str(run), "--quiet", *[a for s in sets for a in ("--set", s)]]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)


def test_ddp_two_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    common = [TINY_UNET, "train.log_every=1", "train.steps=4", "train.ckpt_every=2"]
    one = _torchrun(1, tmp_path / "one", *common, "train.batch_size=16")
    two = _torchrun(2, tmp_path / "two", *common, "train.batch_size=8")
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    loss = lambda run: [r["loss"] for r in read_log(run / "log.jsonl")]  # noqa: E731
    assert loss(tmp_path / "one") == pytest.approx(loss(tmp_path / "two"), rel=1e-5)
    wa, _ = ckpt.load_tensors(ckpt.latest_checkpoint(tmp_path / "one"))
    wb, _ = ckpt.load_tensors(ckpt.latest_checkpoint(tmp_path / "two"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)
    # resume under DDP: 2 more steps from the step-4 checkpoint
    more = _torchrun(2, tmp_path / "two", *common[:-2], "train.steps=6", "train.ckpt_every=2",
                     "train.batch_size=8")  # fmt: skip
    assert more.returncode != 0  # without --resume the run dir is refused
    args = ["torchrun", "--standalone", "--nproc_per_node=2", "-m", "difflab", "train", "digits",
            "--out", str(tmp_path / "two"), "--quiet", "--resume",
            *[a for s in [*common[:-2], "train.steps=6", "train.ckpt_every=2", "train.batch_size=8"]
              for a in ("--set", s)]]  # fmt: skip
    r = subprocess.run(args, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert ckpt.latest_checkpoint(tmp_path / "two").name == "step-0000006.safetensors"
