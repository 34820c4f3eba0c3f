"""Training you can watch (CLI side): `difflab train` prints the start-up summary, a line per
checkpoint and grid and a last line saying why it stopped; a first Ctrl-C stops after the step
with a checkpoint that --resume continues."""

import signal
import subprocess
import sys

from test_train import TINY_UNET
from test_watch import _folder

from difflab.evaluation.plots import read_log
from difflab.storage import checkpoint as ckpt

SETS = [TINY_UNET, "train.batch_size=4", "train.log_every=1", "sample.steps=2", "train.grid_n=4"]


def _args(data, run, *sets):
    args = [sys.executable, "-m", "difflab", "train", "digits", "--out", str(run)]
    for s in [*SETS, f"data.dataset={{name='folder', path='{data}', size=8}}", *sets]:
        args += ["--set", s]
    return args


def _err_lines(stderr: str) -> list[str]:
    """stderr's printed lines without the progress bar's redraws."""
    return [part for line in stderr.splitlines() for part in line.split("\r")
            if part.strip() and not part.startswith("train:")]  # fmt: skip


def test_train_prints_summary_checkpoints_grids_and_why_it_stopped(tmp_path):
    data, run = _folder(tmp_path / "imgs"), tmp_path / "run"
    r = subprocess.run(_args(data, run, "train.steps=4", "train.ckpt_every=2"),
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = _err_lines(r.stderr)
    assert lines[0] == "data    folder: 5 images, 8×8, 3 channels, 2 classes (a, b)", lines
    assert [line.split()[0] for line in lines[:5]] == ["data", "model", "device", "budget", "run"]
    assert lines[3].startswith("budget  4 steps of batch 4; a checkpoint every 2 steps")
    assert lines[4] == f"run     {run}"
    for step in (2, 4):
        path = run / "checkpoints" / f"step-{step:07d}.safetensors"
        assert any(line.startswith(f"step {step}: checkpoint {path} (loss ") for line in lines)
        grid = run / "progress" / f"grid_{step:08d}.png"
        assert f"step {step}: wrote {grid}, {run / 'loss.png'}" in lines
    assert lines[-1].startswith("stopped: train.steps = 4 reached"), lines
    assert r.stdout.strip() == f"checkpoint: {run / 'checkpoints' / 'step-0000004.safetensors'}"


def test_first_ctrl_c_stops_after_the_step_with_a_checkpoint(tmp_path):
    data, run = _folder(tmp_path / "imgs"), tmp_path / "run"
    proc = subprocess.Popen(_args(data, run, "train.steps=100000", "train.grid_n=0"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    for line in proc.stderr:  # the summary ends with the run line; training starts after it
        if line.startswith("run "):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    lines = _err_lines(err)
    assert proc.returncode == 0, err
    assert lines[0].startswith("Ctrl-C: stopping after this step with a checkpoint"), lines
    assert lines[-1].startswith("stopped: interrupted (Ctrl-C) at step "), lines
    step = int(lines[-1].split("at step ")[1].split()[0].replace(",", ""))
    path = ckpt.model_path(run, step)
    assert out.strip() == f"checkpoint: {path}" and path.exists() and "--resume" in lines[-1]
    more = subprocess.run([*_args(data, run, f"train.steps={step + 1}"), "--resume", "--quiet"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert more.returncode == 0, more.stderr
    assert [r["step"] for r in read_log(run / "log.jsonl")] == list(range(1, step + 2))
