"""Seeded held-out splits of a Dataset."""

from __future__ import annotations

import torch

from difflab.data.datasets import Dataset


def holdout_split(data: Dataset, test_fraction: float) -> tuple[Dataset, Dataset]:
    """Fixed (seed-0) random train/test split, independent of the training seed."""
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    n_test = max(1, int(len(data) * test_fraction))
    parts = [perm[n_test:].sort().values, perm[:n_test].sort().values]
    return tuple(Dataset(data.x[i], None if data.labels is None else data.labels[i],
                         data.class_names, data.kind, data.meta) for i in parts)  # fmt: skip
