"""`difflab train` with a progress bar: shared by the train command and the demo."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm import tqdm


def run_training(cfg, out: Path, resume: bool, quiet: bool, budget: float | None = None) -> Path:
    """Train with a progress bar; notes (resume, skipped steps) are printed above it. With a time
    `budget` (seconds) the bar counts elapsed time against it and shows the steps as a postfix."""
    from difflab.evaluation.in_loop import train

    steps, start = cfg.train.steps, time.perf_counter()
    if budget is None:
        bar = progress_bar(steps, "train", quiet)
    else:
        bar = tqdm(total=budget, desc="train", disable=quiet, dynamic_ncols=True, leave=False,
                   bar_format="{desc}: {n:.0f}s of {total:.0f}s budget |{bar}|{postfix}")  # fmt: skip

    def on_step(record):
        if "note" in record:
            tqdm.write(record["note"], file=sys.stderr)
            return
        if budget is None:
            bar.n = record["step"]
            bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
        else:
            bar.n = min(time.perf_counter() - start, budget)
            bar.set_postfix_str(f"step {record['step']}/{steps}, loss {record['loss']:.4f}",
                                refresh=False)  # fmt: skip
        bar.update(0)

    try:
        return train(cfg, out, resume=resume, callback=on_step)
    finally:
        bar.close()


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
