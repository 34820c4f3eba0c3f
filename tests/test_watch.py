"""Training you can watch (library side): the start record counts the data, every stop reason is
reported, grids and the loss plot land at the right steps, `seconds` runs on across resume, and
drawing grids leaves the trained weights bit-identical."""

import numpy as np
import pytest
import torch
from PIL import Image
from test_train import TINY_UNET, _tiny_cfg

from difflab import train
from difflab.cli.watch import stop_line, summary_lines
from difflab.core.config import load_config
from difflab.core.errors import TrainingError
from difflab.data.datasets import load_dataset
from difflab.evaluation.plots import read_log
from difflab.evaluation.progress import ProgressWriter, grid_layout
from difflab.storage import checkpoint as ckpt
from difflab.storage.models import build_denoiser
from difflab.training.loop import resolve_model


def _events(records, name):
    return [r for r in records if r.get("event") == name]


def _folder(root, sizes=(3, 2)):
    """Class subfolders a/, b/ of 6×6 RGB PNGs (3 and 2 images)."""
    rng = np.random.default_rng(0)
    for name, count in zip("ab", sizes):
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(
                root / name / f"{i}.png")  # fmt: skip
    return root


def test_start_record_counts_a_tiny_folder(tmp_path):
    data = _folder(tmp_path / "imgs")
    cfg = load_config("digits", [TINY_UNET, "train.steps=1", "train.batch_size=4",
                                 f"data.dataset={{name='folder', path='{data}', size=8}}",
                                 "train.grid_n=0"])  # fmt: skip
    records = []
    train(cfg, tmp_path / "run", callback=records.append)
    (start,) = _events(records, "start")
    d, m = start["data"], start["model"]
    assert (d["n"], d["shape"], d["channels"], d["classes"]) == (5, [3, 8, 8], 3, 2)
    assert d["class_names"] == ["a", "b"] and d["held_out"] == 0
    assert m["parameters"] == sum(p.numel() for p in build_denoiser(cfg.model).parameters())
    assert (m["parameterization"], m["schedule"], m["sigma_max"]) == ("edm", "edm", 80.0)
    assert (start["steps"], start["batch_size"], start["resumed_from"]) == (1, 4, None)
    assert start["run"] == str(tmp_path / "run") and start["dtype"] == "float32"
    lines = summary_lines(start)
    assert lines[0] == "data    folder: 5 images, 8×8, 3 channels, 2 classes (a, b)"
    assert "parameters; edm preconditioning, edm schedule" in lines[1]
    assert lines[3] == "budget  1 step of batch 4; a checkpoint at the end"


def _stop(records):
    (stop,) = _events(records, "stop")
    assert records[-1] is stop  # the last record of a run
    return stop, stop_line(stop)


def test_stop_reasons_steps_max_seconds_and_a_graceful_interrupt(tmp_path):
    records = []
    train(_tiny_cfg("train.steps=2", "train.grid_n=0"), tmp_path / "a", callback=records.append)
    stop, line = _stop(records)
    assert (stop["reason"], stop["step"], stop["saved"]) == ("steps", 2, True)
    assert line.startswith("stopped: train.steps = 2 reached") and "step-0000002" in line

    records = []
    cfg = _tiny_cfg("train.steps=50", "train.max_seconds=1e-6", "train.grid_n=0")
    path = train(cfg, tmp_path / "b", callback=records.append)
    stop, line = _stop(records)
    assert (stop["reason"], stop["step"], stop["saved"]) == ("max_seconds", 1, True)
    assert path.name == "step-0000001.safetensors"
    assert line.startswith("stopped: train.max_seconds = 1e-06 reached at step 1 of 50")

    records, asked = [], []
    stop_after_2 = lambda: asked.append(1) or len(asked) >= 2  # noqa: E731
    path = train(_tiny_cfg("train.steps=50", "train.grid_n=0"), tmp_path / "c",
                 callback=records.append, stop=stop_after_2)  # fmt: skip
    stop, line = _stop(records)
    assert (stop["reason"], stop["step"], stop["saved"]) == ("interrupted", 2, True)
    assert path.name == "step-0000002.safetensors" and path.exists()
    assert line.startswith("stopped: interrupted (Ctrl-C) at step 2 of 50") and "--resume" in line

    records = []  # resuming a finished run: no step, and it says so
    train(_tiny_cfg("train.steps=2", "train.grid_n=0"), tmp_path / "a", resume=True,
          callback=records.append)  # fmt: skip
    stop, line = _stop(records)
    assert (stop["reason"], stop["step"], stop["saved"]) == ("steps", 2, False)
    assert "already reached" in line


def test_stop_reasons_on_errors_name_the_last_checkpoint(tmp_path):
    records = []
    with pytest.raises(TrainingError, match="non-finite"):
        train(_tiny_cfg("train.lr=1e30", "train.grad_clip=0",
                        "train.steps=20", "train.grid_n=0"), tmp_path / "a",
              callback=records.append)  # fmt: skip
    stop, line = _stop(records)
    assert stop["reason"] == "nonfinite" and not stop["saved"] and stop["checkpoint"] is None
    assert line == (f"stopped: non-finite loss or gradient in step {stop['step'] + 1}; "
                    "no checkpoint was written")  # fmt: skip

    records = []

    def ctrl_c_at_step_3(record):
        records.append(record)
        if record.get("step") == 3 and "loss" in record:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_tiny_cfg("train.steps=9", "train.ckpt_every=2", "train.grid_n=0"), tmp_path / "b",
              callback=ctrl_c_at_step_3)  # fmt: skip
    stop, line = _stop(records)
    assert (stop["reason"], stop["step"], stop["saved"]) == ("interrupted", 3, False)
    assert line.endswith("step-0000002.safetensors") and "at step 3, not saved" in line


def test_grids_and_loss_plot_at_the_right_steps(tmp_path):
    cfg = load_config("digits_class", [TINY_UNET, "train.batch_size=8", "train.log_every=1",
                                       "train.steps=5", "train.grid_every=2", "train.grid_n=20",
                                       "sample.steps=2"])  # fmt: skip
    records = []
    train(cfg, tmp_path / "run", callback=records.append)
    grids = sorted(p.name for p in (tmp_path / "run" / "progress").iterdir())
    assert grids == ["grid_00000002.png", "grid_00000004.png", "grid_00000005.png"]  # + the last
    assert [r["step"] for r in _events(records, "progress")] == [2, 4, 5]
    for name in grids:
        with Image.open(tmp_path / "run" / "progress" / name) as im:
            im.verify()
    with Image.open(tmp_path / "run" / "progress" / grids[-1]) as im:
        # 10 classes → 10 columns of 8×8 cells (+2 px padding), 2 rows, upscaled 4× to 32 px
        assert im.size == ((10 * 10 + 2) * 4, (2 * 10 + 2) * 4) and im.mode == "L"
    with Image.open(tmp_path / "run" / "loss.png") as im:
        im.verify()
    assert not list((tmp_path / "run").rglob(".*.tmp"))  # written atomically
    assert grid_layout(36, 10) == (list(range(10)), 40, 10)
    assert grid_layout(36, 0) == ([], 36, 6)
    assert grid_layout(16, 100)[1:] == (16, 16)

    train(_tiny_cfg("train.steps=2", "train.ckpt_every=1"), tmp_path / "at_ckpts")  # default
    grids = sorted(p.name for p in (tmp_path / "at_ckpts" / "progress").iterdir())
    assert grids == ["grid_00000001.png", "grid_00000002.png"]
    train(_tiny_cfg("train.steps=2", "train.grid_n=0"), tmp_path / "off")
    assert not (tmp_path / "off" / "progress").exists()
    assert not (tmp_path / "off" / "loss.png").exists()


def test_grids_leave_the_trained_weights_bit_identical(tmp_path):
    """Sampling for grids uses its own seeds and restores every RNG: same weights, same state."""
    on = train(_tiny_cfg("train.steps=4", "train.grid_every=1", "train.grid_n=4",
                         "sample.sampler={name='euler_ancestral'}", "sample.steps=3"),
               tmp_path / "on")  # fmt: skip
    off = train(_tiny_cfg("train.steps=4", "train.grid_n=0"), tmp_path / "off")
    assert len(list((tmp_path / "on" / "progress").iterdir())) == 4
    for which in (ckpt.load_tensors, lambda p: ckpt.load_tensors(ckpt.state_path(p))):
        ta, tb = which(on)[0], which(off)[0]
        assert ta.keys() == tb.keys()
        for k in ta:
            assert torch.equal(ta[k], tb[k]), k


def test_a_grid_restores_the_global_rng(tmp_path):
    """Even a denoiser that draws from torch's global RNG leaves it as it was."""
    cfg = _tiny_cfg()
    resolve_model(cfg, load_dataset(cfg.data.dataset))
    denoiser = build_denoiser(cfg.model).eval()
    forward = denoiser.forward
    denoiser.forward = lambda *a, **k: (torch.rand(1), forward(*a, **k))[1]
    state = torch.get_rng_state()
    files = ProgressWriter(tmp_path, cfg, 4)(1, denoiser, (1, 8, 8), "cpu")
    assert files == [tmp_path / "progress" / "grid_00000001.png"]  # no log yet: no loss plot
    assert torch.equal(torch.get_rng_state(), state)


def test_seconds_run_on_across_resume_and_max_seconds_counts_all_runs(tmp_path):
    cfg = lambda *s: _tiny_cfg("train.ckpt_every=3", "train.grid_n=0", *s)  # noqa: E731
    first = train(cfg("train.steps=3"), tmp_path / "run")
    before = [r["seconds"] for r in read_log(tmp_path / "run" / "log.jsonl")]
    saved = ckpt.read_metadata(ckpt.state_path(first))["seconds"]
    assert saved >= before[-1] > 0 and ckpt.load_model_file(first)[2]["seconds"] == saved
    records = []
    train(cfg("train.steps=6"), tmp_path / "run", resume=True, callback=records.append)
    seconds = [r["seconds"] for r in read_log(tmp_path / "run" / "log.jsonl")]
    assert seconds[:3] == before and len(seconds) == 6
    assert all(a <= b for a, b in zip(seconds, seconds[1:])) and seconds[3] >= saved
    (start,) = _events(records, "start")
    assert (start["resumed_step"], start["resumed_seconds"]) == (3, saved)
    # train.max_seconds is training time over all runs: a budget already spent does no step
    spent = ckpt.read_metadata(ckpt.state_path(ckpt.latest_checkpoint(tmp_path / "run")))
    records = []
    path = train(cfg("train.steps=9", f"train.max_seconds={spent['seconds']}"), tmp_path / "run",
                 resume=True, callback=records.append)  # fmt: skip
    stop, line = _stop(records)
    assert (stop["reason"], stop["step"], stop["saved"]) == ("max_seconds", 6, False)
    assert path.name == "step-0000006.safetensors" and "before this run's first step" in line
    assert read_log(tmp_path / "run" / "log.jsonl")[-1]["step"] == 6
