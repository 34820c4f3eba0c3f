"""Datasets (registered by name), loaders and splits."""

from difflab.data import emoji as _emoji  # noqa: F401  (registers the "emoji" dataset)
from difflab.data.datasets import DATASETS, Dataset, load_dataset

__all__ = ["DATASETS", "Dataset", "load_dataset"]
