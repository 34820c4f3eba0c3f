"""Kill-and-resume check: a tiny digits run interrupted by random events resumes to the weights of an
uninterrupted run (sha256 of EMA + raw weights + optimizer state).

    python bench/kill_resume.py [--rounds 24] [--steps 300] [--seed 0] [--out bench-out/kill_resume]

Events, drawn at random once the run has passed a random step: SIGKILL, SIGTERM, SIGINT; SIGKILL
then flipped bytes in the newest model file or resume state, or NaN weights in the newest model
file (the next resume must skip it with a line, by checksum / finiteness); a second `train` into
the running dir (must exit 2 naming the first pid); a full disk (ENOSPC from the writer: exit 1,
one line naming the intact checkpoint). Prints the counts and whether the final weights match.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from test_integrity import flip_payload_byte  # noqa: E402
from test_reliability import TINY, weights_hash  # noqa: E402

from difflab.storage import checkpoint as ckpt  # noqa: E402

EVENTS = ("sigkill", "sigterm", "sigint", "flip-model", "flip-state", "nan-model", "concurrent",
          "disk-full")  # fmt: skip
DISK_FULL = """
import errno, os, sys
from difflab.cli.main import main
from difflab.storage import checkpoint as ckpt
real, n = ckpt.atomic_write, [0]
def full(path, write):
    n[0] += "checkpoints" in str(path)
    if n[0] > 4:  # two checkpoints (state, model), then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(path, write)
ckpt.atomic_write = full
sys.exit(main(sys.argv[1:]))
"""


def train_args(run: Path, steps: int, resume: bool) -> list[str]:
    sets = [a for s in [*TINY, f"train.steps={steps}"] for a in ("--set", s)]
    return ["train", "digits", "--out", str(run), "--quiet", *sets, *(["--resume"] * resume)]


def start(run: Path, steps: int, resume: bool, code: str | None = None) -> subprocess.Popen:
    head = [sys.executable, "-c", code] if code else [sys.executable, "-m", "difflab"]
    return subprocess.Popen(head + train_args(run, steps, resume), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def newest_step(run: Path) -> int:
    latest = ckpt.latest_checkpoint(run) if run.exists() else None
    return int(latest.stem.split("-")[1]) if latest else 0


def wait_past(proc: subprocess.Popen, run: Path, target: int) -> None:
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and newest_step(run) < target:
        time.sleep(0.02)


def damage(run: Path, event: str) -> None:
    newest = ckpt.latest_checkpoint(run)
    if event == "flip-model":
        flip_payload_byte(newest)
    elif event == "flip-state":
        flip_payload_byte(ckpt.state_path(newest), 0.3)
    else:
        try:
            state, config, info = ckpt.load_model_file(newest)
        except ValueError:  # damaged by an earlier round already
            return
        next(iter(state.values())).view(-1)[0] = float("nan")
        ckpt.save_model(newest, state, config, info)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=24)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench-out/kill_resume")
    args = p.parse_args()
    out, rng, t0 = Path(args.out), random.Random(args.seed), time.time()
    out.mkdir(parents=True, exist_ok=True)
    for sub in ("straight", "killed"):
        subprocess.run(["rm", "-rf", str(out / sub)], check=True)
    straight = start(out / "straight", args.steps, False)
    assert straight.wait() == 0, straight.stderr.read()
    run = out / "killed"
    counts = {e: 0 for e in EVENTS}
    ok = {"fallback": 0, "refused": 0, "disk_full_line": 0, "bad": []}
    pending_fallback = False
    for k in range(args.rounds):
        event = EVENTS[k % len(EVENTS)] if k < len(EVENTS) else rng.choice(EVENTS)
        resume = run.exists()
        if event == "disk-full":
            proc = start(run, args.steps, resume, DISK_FULL)
            err = proc.communicate()[1]
            lines = [ln for ln in err.strip().splitlines() if ln.startswith("difflab: error")]
            if pending_fallback and "skipped" in err:
                ok["fallback"] += 1
            pending_fallback = False
            if proc.returncode == 0:  # the run finished before its third checkpoint
                continue
            if proc.returncode == 1 and len(lines) == 1 and "is intact" in lines[0]:
                ok["disk_full_line"] += 1
            else:
                ok["bad"].append((event, proc.returncode, err[-300:]))
            counts[event] += 1
            continue
        proc = start(run, args.steps, resume)
        wait_past(proc, run, min(newest_step(run) + rng.randint(1, 4), args.steps - 1))
        if proc.poll() is not None:  # finished before the event: start over next round
            err = proc.stderr.read()
            if pending_fallback and "skipped" in err:
                ok["fallback"] += 1
            pending_fallback = False
            continue
        if event == "concurrent":
            second = start(run, args.steps, True)
            err = second.communicate()[1].strip().splitlines()
            if second.returncode == 2 and len(err) == 1 and f"process {proc.pid}" in err[0]:
                ok["refused"] += 1
            else:
                ok["bad"].append((event, second.returncode, err))
        sig = {"sigterm": signal.SIGTERM, "sigint": signal.SIGINT}.get(event, signal.SIGKILL)
        os.kill(proc.pid, sig)
        err = proc.communicate()[1]
        if pending_fallback and "skipped" in err:
            ok["fallback"] += 1
        pending_fallback = False
        if event in ("flip-model", "flip-state", "nan-model") and newest_step(run):
            damage(run, event)
            pending_fallback = True
        counts[event] += 1
    final = start(run, args.steps, run.exists())
    err = final.communicate()[1]
    assert final.returncode == 0, err
    if pending_fallback and "skipped" in err:
        ok["fallback"] += 1
    same = weights_hash(ckpt.latest_checkpoint(out / "straight")) == weights_hash(
        ckpt.latest_checkpoint(run)
    )
    damaged = sum(counts[e] for e in ("flip-model", "flip-state", "nan-model"))
    report = {"events": counts, "damaged": damaged, "fallbacks": ok["fallback"],
              "concurrent_refused": ok["refused"], "disk_full_one_line": ok["disk_full_line"],
              "unexpected": ok["bad"], "identical_final_weights": same,
              "seconds": round(time.time() - t0, 1)}  # fmt: skip
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
