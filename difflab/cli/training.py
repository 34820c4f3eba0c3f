"""`difflab train` with a progress bar: shared by the train command and the demo."""

from __future__ import annotations

import sys
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


def train_config(source: str, overrides: list[str]):
    """The config `difflab train SOURCE` trains: a folder of images gets the folder recipe
    (training.recipe; its notes are printed), anything else is a config file or built-in name."""
    from difflab.core.config import load_config
    from difflab.training.recipe import folder_recipe

    if not Path(source).is_dir():
        return load_config(source, overrides)
    recipe = folder_recipe(source)
    for note in recipe.notes:
        print(f"recipe: {note}", file=sys.stderr)
    return load_config(recipe.config, overrides)


def progress_bar(total: int, desc: str, quiet: bool):
    return tqdm(total=total, desc=desc, disable=quiet, dynamic_ncols=True, leave=False)
