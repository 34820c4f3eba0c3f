"""Output paths of the CLI: checked before any work, never overwritten without --overwrite, and a
sample folder that streams images to disk in batches, marked INCOMPLETE until it is done."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from difflab.core.errors import UsageError
from difflab.core.sample_set import INCOMPLETE

GRID_MAX = 256  # tiles in grid.png; every sample is still written to images/
SAMPLE_FILES = ("grid.png", "labels.json", "samples.csv", "samples.png", INCOMPLETE)


def add_overwrite(parser, what: str = "--out") -> None:
    parser.add_argument("--overwrite", action="store_true", help=f"replace an existing {what}")


def _writable_folder(folder: Path, flag: str, path: Path) -> None:
    """The nearest existing one of `folder` and its parents must be a writable folder."""
    found = next((p for p in [folder, *folder.parents] if p.exists()), Path("."))
    if not found.is_dir() or not os.access(found, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: {found} is not a writable folder; pick another path")


def check_output_file(path: str | None, flag: str, overwrite: bool = False) -> None:
    """A file the command will write: not a folder, in a writable place, not there yet unless
    `overwrite` (checked before the command computes anything)."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a file path")
    if path.exists() and not overwrite:
        raise UsageError(f"{flag} {path} exists; pass --overwrite to replace it or pick a new path")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{flag} {path} is read-only; pick another path")
    _writable_folder(path.parent, flag, path)


def check_sample_dir(out: Path, overwrite: bool) -> None:
    """--out of `sample`: a new or empty folder, or (with --overwrite) an old sample set."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a directory for the samples")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(
            f"--out {out} already holds files; pass --overwrite to replace the sample set there "
            "or pick a new folder"
        )
    _writable_folder(out, "--out", out)


class SampleDir:
    """Writes a sample set into `out` batch by batch: INCOMPLETE first, removed by `finish`."""

    def __init__(self, out: Path, first_index: int = 0):
        self.out, self.count, self.grid, self.points = Path(out), 0, [], []
        self.first_index = first_index  # the file number of the first sample (--from-png)
        self.out.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.out / "images", ignore_errors=True)  # an old set (--overwrite)
        for name in SAMPLE_FILES:
            (self.out / name).unlink(missing_ok=True)
        (self.out / INCOMPLETE).write_text(
            "this sample set was interrupted; rerun `difflab sample` with --overwrite\n"
        )

    def add_images(self, images, meta: list[dict] | None = None) -> None:
        """uint8 images [b, C, H, W] → images/NNNNNN.png with their settings `meta` (one per
        image, or more: the rest are the next batches'); the first GRID_MAX kept for the grid."""
        from difflab.core.imageio import save_images

        meta = None if meta is None else meta[: len(images)]
        save_images(images, self.out / "images", self.first_index + self.count, meta)
        self.count += len(images)
        room = GRID_MAX - sum(map(len, self.grid))
        if room > 0:
            self.grid.append(images[:room])

    def add_points(self, points) -> None:
        self.points.append(points)
        self.count += len(points)

    def finish(self, grid_meta: dict | None = None) -> str:
        """Write the grid (with its settings `grid_meta`) or the point plot and CSV, remove
        INCOMPLETE; what was written."""
        import numpy as np

        from difflab.core.imageio import save_grid
        from difflab.evaluation.plots import plot_points

        if self.points:
            points = np.concatenate(self.points)
            np.savetxt(self.out / "samples.csv", points, delimiter=",", fmt="%.6f")
            plot_points(points, self.out / "samples.png")
            written = f"{self.out / 'samples.png'} and {self.out / 'samples.csv'}"
        else:
            save_grid(np.concatenate(self.grid), self.out / "grid.png", meta=grid_meta)
            first = f"first {GRID_MAX} of " if self.count > GRID_MAX else ""
            written = (f"{self.out / 'grid.png'} ({first}{self.count}) and {self.count} PNGs in "
                       f"{self.out / 'images'}")  # fmt: skip
        (self.out / INCOMPLETE).unlink()
        return written
