"""Integrity of run dirs: payload checksums, non-finite weights, the run-dir lock (two processes),
stale .tmp files, disk full, the best-checkpoint tracker across resumes."""

import errno
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from test_reliability import TINY, _cli_train, weights_hash

from difflab import train
from difflab.cli.main import main
from difflab.core.config import load_config
from difflab.core.errors import UsageError
from difflab.storage import checkpoint as ckpt
from difflab.storage import lock
from difflab.storage.integrity import CorruptCheckpoint


def flip_payload_byte(path: Path, where: float = 0.5) -> None:
    """Flip one byte inside the tensor data (past the JSON header) of a safetensors file."""
    data = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    i = 8 + n + int((len(data) - 8 - n) * where)
    data[i] ^= 0x40
    path.write_bytes(bytes(data))


def test_checksum_catches_one_flipped_byte(tmp_path):
    f = tmp_path / "a.safetensors"
    ckpt.save_tensors(f, {"w": torch.arange(100.0), "b": torch.ones(3)}, {"kind": "x"})
    assert ckpt.load_tensors(f)[0]["w"][7] == 7
    flip_payload_byte(f)
    with pytest.raises(CorruptCheckpoint, match="corrupt.*checksum"):
        ckpt.load_tensors(f)


def test_checksum_covers_the_metadata(tmp_path):
    f = tmp_path / "a.safetensors"
    ckpt.save_tensors(f, {"w": torch.zeros(4)}, {"kind": "x", "lr": 0.001})
    data = f.read_bytes().replace(b"0.001", b"0.901")  # same length: header still parses
    f.write_bytes(data)
    with pytest.raises(CorruptCheckpoint, match="no longer match"):
        ckpt.load_tensors(f)


def test_files_without_checksum_still_load(tmp_path):
    f = tmp_path / "old.safetensors"
    save_file({"w": torch.ones(2)}, str(f), metadata={"format": ckpt.FORMAT,
                                                      "difflab": json.dumps({"kind": "x"})})  # fmt: skip
    tensors, meta = ckpt.load_tensors(f)
    assert meta == {"kind": "x"} and tensors["w"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_refused(tmp_path, bad):
    f = tmp_path / "nan.safetensors"
    w = torch.zeros(5)
    w[3] = bad
    ckpt.save_tensors(f, {"net.w": w}, {"kind": "x"})
    with pytest.raises(CorruptCheckpoint, match="non-finite weights.*'net.w'"):
        ckpt.load_tensors(f)


def test_checksum_of_bf16_and_empty_tensors_round_trips(tmp_path):
    f = tmp_path / "a.safetensors"
    ckpt.save_tensors(f, {"h": torch.ones(3, dtype=torch.bfloat16), "e": torch.zeros(0),
                          "i": torch.tensor(3), "b": torch.tensor([True])}, {"kind": "x"})  # fmt: skip
    assert set(ckpt.load_tensors(f)[0]) == {"h", "e", "i", "b"}


@pytest.mark.parametrize("text", ['"just a string"', "[1, 2]", '{"kind": 5}', "{not json"])
def test_malformed_difflab_metadata_is_one_usage_error(tmp_path, text):
    f = tmp_path / "m.safetensors"
    save_file({"w": torch.ones(2)}, str(f), metadata={"format": ckpt.FORMAT, "difflab": text})
    with pytest.raises(UsageError, match="corrupt difflab metadata"):
        ckpt.load_tensors(f)


def _run(tmp_path, steps, name="run", **kw):
    notes = []
    train(load_config("digits", [*TINY, f"train.steps={steps}"]), tmp_path / name,
          callback=lambda r: notes.append(r.get("note")), **kw)  # fmt: skip
    return " | ".join(n for n in notes if n)


@pytest.mark.parametrize("damage", ["flip model", "flip state", "nan model"])
def test_resume_falls_back_past_a_damaged_checkpoint_to_the_same_weights(tmp_path, damage):
    _run(tmp_path, 4, "straight")
    _run(tmp_path, 3)
    newest = ckpt.latest_checkpoint(tmp_path / "run")
    if damage == "flip model":
        flip_payload_byte(newest)
    elif damage == "flip state":
        flip_payload_byte(ckpt.state_path(newest), 0.3)
    else:
        state, config, info = ckpt.load_model_file(newest)
        next(iter(state.values())).view(-1)[0] = float("nan")
        ckpt.save_model(newest, state, config, info)  # a valid checksum of NaN weights
    notes = _run(tmp_path, 4, resume=True)
    assert "skipped step-0000003.safetensors" in notes, notes
    assert ("non-finite" if damage == "nan model" else "corrupt") in notes
    assert "learning rate" not in notes and "resumed from" in notes and "step 2" in notes
    a = weights_hash(ckpt.latest_checkpoint(tmp_path / "straight"))
    assert a == weights_hash(ckpt.latest_checkpoint(tmp_path / "run"))


def test_sample_refuses_a_corrupt_model_in_one_line(tmp_path, capsys):
    _run(tmp_path, 1)
    flip_payload_byte(ckpt.latest_checkpoint(tmp_path / "run"))
    code = main(["sample", str(tmp_path / "run"), "--out", str(tmp_path / "s"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "corrupt" in err[0], err
    assert not (tmp_path / "s").exists()


def test_lock_in_process_names_the_holder_and_is_released(tmp_path):
    run = tmp_path / "run"
    with lock.run_lock(run) as path:
        assert path.read_text().strip() == str(os.getpid())
        assert lock.lock_holder(run) == os.getpid()
        with pytest.raises(lock.RunLocked, match=f"in use by process {os.getpid()}"):
            with lock.run_lock(run):
                pass
    assert lock.lock_holder(run) is None and not run.exists()  # created, unused: removed again


def _wait_for(cond, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline and not cond():
        time.sleep(0.05)
    return cond()


def test_a_second_train_into_a_running_run_dir_exits_2_naming_the_pid(tmp_path):
    run = tmp_path / "run"
    first = _cli_train(run, 100000)
    try:
        assert _wait_for(lambda: ckpt.latest_checkpoint(run) is not None if run.exists()
                         else False), first.stderr  # fmt: skip
        for extra in ([], ["--resume"]):
            second = _cli_train(run, 5, *extra)
            assert second.wait(timeout=300) == 2
            err = second.stderr.read().strip().splitlines()
            assert len(err) == 1 and f"in use by process {first.pid}" in err[0], err
        kept = {p.name for p in (run / "checkpoints").iterdir()}
        assert first.poll() is None and kept  # the first run goes on, untouched
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (run / ".lock").exists()  # stale after the crash ...
    resumed = _cli_train(run, int(ckpt.latest_checkpoint(run).stem.split("-")[1]) + 1, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()  # ... and taken over
    assert not (run / ".lock").exists()


def test_stale_tmp_files_and_orphan_states_are_removed_at_start(tmp_path):
    _run(tmp_path, 2)
    cdir = ckpt.checkpoint_dir(tmp_path / "run")
    junk = [cdir / ".step-0000003.safetensors.x1y2.tmp", tmp_path / "run" / ".log.jsonl.ab.tmp",
            cdir / "step-0000009.state.safetensors"]  # fmt: skip
    for j in junk:
        j.write_bytes(b"half")
    notes = _run(tmp_path, 3, resume=True)
    assert "removed 3 half-written" in notes and not any(j.exists() for j in junk)


def test_disk_full_is_one_line_and_the_last_checkpoint_is_intact(tmp_path, monkeypatch, capsys):
    real, calls = ckpt.atomic_write, []

    def full_after_first_checkpoint(path, write):
        calls.append(path)
        if len(calls) > 3 and "checkpoints" in str(path):  # step 1: state, model, best
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, write)

    monkeypatch.setattr(ckpt, "atomic_write", full_after_first_checkpoint)
    argv = ["train", "digits", "--out", str(tmp_path / "run"), "--quiet"]
    code = main(argv + [a for s in [*TINY, "train.steps=3"] for a in ("--set", s)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert "No space left on device" in err[0] and "step-0000001.safetensors is intact" in err[0]
    assert "--resume" in err[0]
    monkeypatch.setattr(ckpt, "atomic_write", real)
    assert [p.name for p in ckpt.checkpoint_dir(tmp_path / "run").glob("step-*")] == [
        "step-0000001.safetensors", "step-0000001.state.safetensors"] or sorted(
        p.name for p in ckpt.checkpoint_dir(tmp_path / "run").glob("step-*")) == [
        "step-0000001.safetensors", "step-0000001.state.safetensors"]  # fmt: skip
    assert "resumed from" in _run(tmp_path, 3, resume=True)


def test_best_tracker_survives_a_resume(tmp_path):
    _run(tmp_path, 3)
    best = ckpt.checkpoint_dir(tmp_path / "run") / "best.safetensors"
    state, config, info = ckpt.load_model_file(best)
    ckpt.save_model(best, state, config, {**info, "loss": -1.0})  # better than any real loss
    _run(tmp_path, 6, resume=True)
    assert ckpt.load_model_file(best)[2]["loss"] == -1.0  # not replaced by step 4's loss


def test_best_from_a_discarded_future_is_replaced(tmp_path):
    _run(tmp_path, 3)
    best = ckpt.checkpoint_dir(tmp_path / "run") / "best.safetensors"
    state, config, info = ckpt.load_model_file(best)
    ckpt.save_model(best, state, config, {**info, "step": 99, "loss": -1.0})
    _run(tmp_path, 4, resume=True)
    assert ckpt.load_model_file(best)[2]["step"] == 4


BOOM = """
import runpy, sys
class Boom:
    def find_spec(self, name, path=None, target=None):
        if name == "difflab.cli.edit":
            raise KeyboardInterrupt
sys.meta_path.insert(0, Boom())
sys.argv = ["difflab", "train", "digits", "--out", sys.argv[1], "--quiet"]
runpy.run_module("difflab", run_name="__main__")
"""


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    boom = subprocess.run([sys.executable, "-c", BOOM, str(tmp_path / "r")], capture_output=True,
                          text=True, timeout=120)  # Ctrl-C while the CLI's modules import
    assert boom.returncode == 130 and boom.stderr.strip().splitlines() == ["difflab: interrupted"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "difflab", "train", "digits", "--out", str(tmp_path / "r"),
         "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(1.0)  # loading torch / the dataset
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1].strip().splitlines()
    # 130, or death by SIGINT when the interrupt lands in the interpreter's own shutdown (seen
    # under heavy load): either way the user sees one line, never a traceback
    assert proc.returncode in (130, -signal.SIGINT) and err == ["difflab: interrupted"], err
    assert not (tmp_path / "r").exists()  # the lock's dir, created for nothing, is gone
