"""What made an image: the settings every PNG difflab writes carries, and sampling them again.

A PNG's settings (core.pngmeta) name the checkpoint (path and sha256), the resolved sampler,
steps, σ grid and guidance chain, the run's seed and the sample's index, and the inputs that
reproduce it: `pipe.sample(n, seed=seed + index, **inputs, ...)` (sample i depends on seed + i
only), so one image of a batch is re-made alone, bit for bit.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from difflab.core.errors import UsageError
from difflab.storage import checkpoint as ckpt

FIELDS = ("classes", "prompts", "images", "negative_prompts")  # the request inputs
_SHA: dict[tuple, str] = {}  # (path, size, mtime) → sha256


def model_file(path: str | Path) -> Path:
    """The file (or folder, for folder formats) that `load(path)` reads: a run dir's newest one."""
    path = Path(path).resolve()
    if path.is_dir() and ckpt.checkpoint_dir(path).is_dir():
        return ckpt.resolve_model_path(path)
    return path


def checkpoint_sha256(path: str | Path) -> str:
    """sha256 of a model file (a folder: of its files' relative names and bytes, sorted); cached
    per (path, size, mtime)."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    key = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if key not in _SHA:
        h = hashlib.sha256()
        for p in files:
            if path.is_dir():
                h.update(str(p.relative_to(path)).encode() + b"\0")
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        _SHA[key] = h.hexdigest()
    return _SHA[key]


def run_settings(source: str | Path, pipe, asked: dict, settings,
                 edit: dict | None = None) -> dict:  # fmt: skip
    """The settings shared by every image one `Pipeline.sample`/`stream` call drew from `source`
    (`asked`, `settings`: what that call returned alongside the samples)."""
    s, path = settings, model_file(source)
    meta = {"checkpoint": str(path), "sha256": checkpoint_sha256(path),
            "step": pipe.info.get("step"), "sampler": s.sampler, "steps": s.steps,
            "discretization": s.discretization, "guidance": asked.get("guidance", []),
            "seed": s.seed}  # fmt: skip
    return meta | ({"edit": edit} if edit else {})


def _inputs(asked: dict, given: dict, i: int | None) -> dict:
    """The request inputs that re-make sample i (None: all samples, as the user gave them)."""
    fields = [f for f in FIELDS if given.get(f)] or [f for f in ("classes",) if f in asked]
    if i is None:
        return {f: list(given[f]) for f in fields if given.get(f)}
    return {f: [asked[f][i]] for f in fields}


def image_settings(base: dict, asked: dict, n: int, given: dict) -> list[dict]:
    """Per-image settings of n samples: `base` (run_settings) + index, n = 1 and the inputs of
    that sample (`given`: the classes/prompts/images the caller passed to `sample`)."""
    asked = {k: v for k, v in asked.items() if k != "guidance"}
    return [base | {"index": i, "n": 1, "inputs": _inputs(asked, given, i),
                    "asked": {k: v[i] for k, v in asked.items()}}
            for i in range(n)]  # fmt: skip


def grid_settings(base: dict, asked: dict, n: int, given: dict) -> dict:
    """The settings of a grid of all n samples: index 0, n, and the caller's inputs."""
    return base | {"index": 0, "n": n, "inputs": _inputs(asked, given, None)}


def sample_arguments(meta: dict, source: str | Path | None = None,
                     init_given: bool = False) -> tuple[Path, dict]:  # fmt: skip
    """(model to load, `Pipeline.sample` keyword arguments) that re-make the image of `meta`;
    `source` (optional) must be the same checkpoint (its sha256 is compared). An edit's settings
    need its init image as well (`init_given`; see `remake.remake`)."""
    edit = meta.get("edit")
    if edit and not init_given:
        made = (f" of an init image {edit['init_shape']} with sha256 {edit['init_sha256'][:12]}…"
                if "init_sha256" in edit else " of an input image")  # fmt: skip
        raise UsageError(
            f"the image was made by an edit ({edit.get('kind')}){made} that the PNG does not "
            "carry, so the settings alone cannot re-make it; pass that image as `images` (the "
            "web UI saves it as inputs/init.png beside the result)"
        )
    missing = [k for k in ("checkpoint", "sha256", "sampler", "steps", "seed") if k not in meta]
    if missing:
        raise UsageError(f"the PNG settings lack {', '.join(missing)}; re-sample the image")
    path = model_file(source if source is not None else meta["checkpoint"])
    if not path.exists():
        raise UsageError(
            f"the checkpoint {path} that made the image is gone; pass the model file or run dir "
            f"with sha256 {meta['sha256'][:12]}…"
        )
    if checkpoint_sha256(path) != meta["sha256"]:
        raise UsageError(
            f"{path} is not the checkpoint that made the image (sha256 "
            f"{checkpoint_sha256(path)[:12]}… ≠ {meta['sha256'][:12]}…); pass that checkpoint"
        )
    kwargs = dict(n=int(meta.get("n", 1)), seed=int(meta["seed"]) + int(meta.get("index", 0)),
                  sampler=meta["sampler"], steps=int(meta["steps"]),
                  discretization=meta.get("discretization"), guidance=meta.get("guidance", []),
                  **meta.get("inputs", {}))  # fmt: skip
    return path, kwargs
