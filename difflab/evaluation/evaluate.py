"""Evaluation as the CLI calls it: reference statistics (.npz) and every metric on a set of images.

A reference file holds the dataset's feature mean and covariance (for FD), a subset of its
features (for KID and precision/recall) and the feature network's name and hash; evaluating
images against it with another feature network is an error.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.imageio import image_files, load_image
from difflab.core.sample_set import FIGURES, INCOMPLETE, SAMPLE_NAME
from difflab.data.datasets import DATASETS, Dataset, folder, load_dataset
from difflab.evaluation import metrics as M
from difflab.evaluation.features import FeatureNet, extract
from difflab.storage.checkpoint import atomic_write

METRICS = ("fd", "kid", "is", "pr", "acc")
REF_FORMAT = "difflab-ref-1"
_REF_ARRAYS = ("mu", "sigma", "features")
_REF_FIELDS = (
    "format",
    "n",
    "feature_net",
    "feature_hash",
    "feature_config",
    "fd_name",
    "dataset",
    "kind",
    "shape",
)


def images_from_folder(path: str | os.PathLike, *, channels: int = 3, size: int | None = None):
    """uint8 images [N, C, H, W] of an image folder (recursive), via the 'folder' dataset."""
    return folder(path=str(path), channels=channels, size=size).x


def sample_files(path: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """(sample images, skipped images) of a folder of samples.

    The samples are the numbered PNGs (NNNNNN.png) in `images/` that a sample set holds, else
    the numbered PNGs in the folder itself, else every image in the folder (recursive) except
    the figures difflab writes beside samples (grid.png, samples.png, loss.png, trajectory.png).
    """
    root = Path(path)
    if not root.is_dir():
        raise UsageError(f"sample folder {root} does not exist; check the path")
    if (root / INCOMPLETE).exists():
        raise UsageError(
            f"{root} is an interrupted sample set ({INCOMPLETE} is there); sample it again "
            "before evaluating it"
        )
    every = image_files(root)
    for where in (root / "images", root):
        numbered = [f for f in every if f.parent == where and SAMPLE_NAME.fullmatch(f.name)]
        if numbered:
            return numbered, [f for f in every if f not in set(numbered)]
    samples = [f for f in every if f.stem not in FIGURES]
    if not samples:
        raise UsageError(f"{root} holds no sample images; pass a folder of images")
    return samples, [f for f in every if f.stem in FIGURES]


def sample_images(
    path: str | os.PathLike, *, channels: int = 3, size: int | None = None
) -> tuple[Tensor, list[Path]]:
    """(uint8 images [N, C, H, W] of `sample_files(path)`, the skipped files)."""
    files, skipped = sample_files(path)
    images = [load_image(f, channels, size) for f in files]
    for f, im in zip(files, images):
        if im.shape != images[0].shape:
            raise UsageError(
                f"sample {f} is {im.shape[2]}×{im.shape[1]} but {files[0]} is "
                f"{images[0].shape[2]}×{images[0].shape[1]}; pass `size` to resize them"
            )
    return torch.stack(images), skipped


def _source(source: str | os.PathLike | dict[str, Any]) -> tuple[Dataset, str]:
    """(dataset, description): a dataset spec, or a path to an existing image folder."""
    if isinstance(source, (str, os.PathLike)) and not (
        isinstance(source, str) and source in DATASETS
    ):
        if not Path(source).is_dir():
            raise UsageError(
                f"{source} is neither an image folder nor a dataset; pass an existing folder "
                f"or one of: {', '.join(DATASETS.names())}"
            )
        return folder(path=str(source)), json.dumps({"name": "folder", "path": str(source)})
    return load_dataset(source), json.dumps(source)


def reference_stats(
    source: str | os.PathLike | dict[str, Any],
    feature_net: FeatureNet,
    n: int | None = None,
    *,
    batch_size: int = 64,
    seed: int = 0,
    max_features: int = 10000,
) -> dict[str, Any]:
    """Feature statistics of `n` items (all if None, else a seeded random subset) of a dataset."""
    data, description = _source(source)
    if n is not None:
        if not isinstance(n, int) or n < 2:
            raise UsageError(f"n={n!r} is invalid; pass an integer ≥ 2 (or omit it for all)")
        if n > len(data):
            raise UsageError(f"n={n} exceeds the {len(data)} items of {description}; lower n")
    x = data.x
    if n is not None and n < len(x):
        g = torch.Generator().manual_seed(seed)
        x = x[torch.randperm(len(x), generator=g)[:n].sort().values]
    feats = extract(feature_net, x, batch_size=batch_size)[0]  # [N, D]
    mu, sigma = M.feature_stats(feats, allow_singular=True)  # few items: KID only (evaluate)
    keep = feats
    if len(feats) > max_features:
        g = torch.Generator().manual_seed(seed + 1)
        keep = feats[torch.randperm(len(feats), generator=g)[:max_features].sort().values]
    return {
        "format": REF_FORMAT,
        "mu": mu,
        "sigma": sigma,
        "features": keep.numpy().astype(np.float32),
        "n": len(x),
        "feature_net": feature_net.name,
        "feature_hash": feature_net.hash,
        "feature_config": feature_net.description,
        "fd_name": feature_net.fd_name,
        "dataset": description,
        "kind": data.kind,
        "shape": list(data.shape),
    }


def save_ref(path: str | os.PathLike, ref: dict[str, Any]) -> None:
    """Atomically write reference statistics as a .npz (no pickled objects)."""
    missing = [k for k in _REF_ARRAYS + _REF_FIELDS if k not in ref]
    if missing:
        raise UsageError(f"reference lacks {missing}; build it with reference_stats")
    arrays = {k: np.asarray(ref[k]) for k in _REF_ARRAYS}
    arrays["meta"] = np.array(json.dumps({k: ref[k] for k in _REF_FIELDS}))

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(Path(path), write)


def load_ref(path: str | os.PathLike) -> dict[str, Any]:
    """Reference statistics written by `save_ref`; a UsageError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"reference file {path} does not exist; create it with reference_stats")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
        raise UsageError(
            f"{path} is not a difflab reference file; create one with reference_stats"
        ) from None
    if meta.get("format") != REF_FORMAT or any(k not in arrays for k in _REF_ARRAYS):
        raise UsageError(f"{path} is not a {REF_FORMAT} reference file; recreate it")
    return {**arrays, **meta}


def _check_inputs(images: Tensor, ref: dict[str, Any], feature_net: FeatureNet) -> None:
    if ref["feature_hash"] != feature_net.hash:
        raise UsageError(
            f"reference statistics were computed with feature network {ref['feature_net']!r} "
            f"(hash {ref['feature_hash'][:12]}) but the given one is {feature_net.name!r} "
            f"(hash {feature_net.hash[:12]}); recompute the reference with this network"
        )
    if not isinstance(images, Tensor) or len(images) == 0:
        raise UsageError("no images to evaluate; pass a non-empty uint8 tensor [N, C, H, W]")
    shape = list(images.shape[1:])
    if shape != list(ref["shape"]):
        fix = "generate at the reference's size and channels"
        if shape[1:] == list(ref["shape"][1:]) and shape[0] in (1, 3):  # only the channels differ
            fix = (f"recompute the reference with {shape[0]} channel(s), e.g. from "
                   f"{{name = \"folder\", path = ..., channels = {shape[0]}}}")  # fmt: skip
        raise UsageError(
            f"images have shape {shape} per item but the reference {ref['dataset']} has "
            f"{list(ref['shape'])}; {fix}"
        )
    if ref["kind"] == "image" and images.dtype != torch.uint8:
        raise UsageError(
            f"images must be uint8 0..255, got {images.dtype}; convert with pixels_to_uint8"
        )


def kid_name(fd_name: str) -> str:
    """'KID' beside 'FID', 'KID-<dataset>' beside 'FD-<dataset>'."""
    return "KID" if fd_name == "FID" else "KID-" + fd_name.removeprefix("FD-")


def small_n_note(report: dict[str, Any], n: int, min_n: int, kid: bool) -> str:
    """Why the Fréchet distance of `report` is not to be trusted at n items per set."""
    fd = report["fd_name"]
    cure = (f"compare {report['kid_name']} (unbiased at any n, Bińkowski et al. 2018) within its "
            "standard error kid_se" if kid else "add `kid` to `metrics` (unbiased at any n)")  # fmt: skip
    return (f"n = {n} < {min_n}: {fd} is biased upward at this n and its noise can hide real "
            f"differences; {cure}, or evaluate ≥ {min_n} samples against ≥ {min_n} reference "
            "items")  # fmt: skip


def evaluate(
    images: Tensor,
    ref: dict[str, Any],
    feature_net: FeatureNet,
    metrics: tuple[str, ...] | list[str] = ("fd", "kid", "is", "pr"),
    *,
    labels: Tensor | None = None,
    batch_size: int = 64,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    is_splits: int = 10,
    pr_k: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Every requested metric of images [N, C, H, W] against a reference, with n and the net.

    When min(n, n_ref) < `fd_min_n(feature dim)` the report's `note` says FD is not meaningful,
    KID (with its jackknife standard error `kid_se`) comes before FD, and FD is marked
    `fd_small_n` (None when n ≤ the feature dim: a singular covariance).
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise UsageError(f"unknown metric(s) {unknown}; choose from: {', '.join(METRICS)}")
    if "acc" in metrics and labels is None:
        raise UsageError("metric 'acc' needs the class labels the images were generated with")
    _check_inputs(images, ref, feature_net)
    with_probs = "is" in metrics or "acc" in metrics
    feats, probs = extract(feature_net, images, batch_size=batch_size, with_probs=with_probs)
    n_small, min_n = min(len(images), int(ref["n"])), M.fd_min_n(feats.shape[1])
    small = n_small < min_n and "fd" in metrics
    out: dict[str, Any] = {
        "n": len(images),
        "n_ref": int(ref["n"]),
        "feature_net": feature_net.name,
        "feature_hash": feature_net.hash,
        "fd_name": feature_net.fd_name,
        "kid_name": kid_name(feature_net.fd_name),
        "reference": ref["dataset"],
    }
    kid_part: dict[str, Any] = {}
    if "kid" in metrics:
        kid_part["kid_mean"], kid_part["kid_std"] = M.kid(
            feats, ref["features"], subsets=kid_subsets, subset_size=kid_subset_size, seed=seed
        )
        kid_part["kid_se"] = M.kid_jackknife(feats, ref["features"], seed=seed)[1]
    fd_part: dict[str, Any] = {}
    if "fd" in metrics:  # None for n ≤ the feature dim: a singular covariance
        fd_part["fd"] = None
        if n_small > feats.shape[1]:
            mu, sigma = M.feature_stats(feats)
            fd_part["fd"] = M.frechet_distance(mu, sigma, ref["mu"], ref["sigma"])
    if small:  # the note, KID first, then FD marked
        out["note"] = small_n_note(out, n_small, min_n, kid="kid" in metrics)
        out.update(kid_part, **fd_part, fd_small_n=True)
    else:
        out.update(fd_part, **kid_part)
    if "is" in metrics:
        out["is_mean"], out["is_std"] = M.inception_score(probs, splits=is_splits)
    if "pr" in metrics:
        out["precision"], out["recall"] = M.precision_recall(
            torch.from_numpy(ref["features"]), feats, k=pr_k
        )
    if "acc" in metrics:
        out["accuracy"] = M.classifier_accuracy(probs, labels)
    return out
