"""`difflab train` with a progress bar: shared by the train command and the demo."""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm


def run_training(cfg, out: Path, resume: bool, quiet: bool) -> Path:
    """Train with a progress bar; notes (resume, skipped steps) are printed above it."""
    from difflab.evaluation.in_loop import train

    bar = progress_bar(cfg.train.steps, "train", quiet)

    def on_step(record):
        if "note" in record:
            tqdm.write(record["note"], file=sys.stderr)
            return
        bar.n = record["step"]
        bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
        bar.update(0)

    try:
        path = train(cfg, out, resume=resume, callback=on_step)
    finally:
        bar.close()
    return path


def progress_bar(total: int, desc: str, quiet: bool):
    return tqdm(total=total, desc=desc, disable=quiet, dynamic_ncols=True, leave=False)
