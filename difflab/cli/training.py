"""`difflab train` with a progress bar: shared by the train command and the demo."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from difflab.cli.watch import Watcher


def run_training(cfg, out: Path, resume: bool, quiet: bool) -> Path:
    """Train, watched (cli.watch): a start-up summary, a progress bar in the unit that ends the
    run (steps or train.max_seconds), a line per checkpoint and grid, and why training stopped;
    a first Ctrl-C stops after the current step with a checkpoint."""
    from difflab.evaluation.in_loop import train

    watcher = Watcher(quiet)
    try:
        return train(cfg, out, resume=resume, callback=watcher, stop=watcher.stop)
    finally:
        watcher.close()


def progress_bar(total: int, desc: str, quiet: bool):
    return tqdm(total=total, desc=desc, disable=quiet, dynamic_ncols=True, leave=False)
