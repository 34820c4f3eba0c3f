"""Datasets (registered by name), loaders and splits."""

from difflab.data import emoji, latents  # noqa: F401  (register "emoji" and "latents")
from difflab.data.datasets import DATASETS, Dataset, load_dataset

__all__ = ["DATASETS", "Dataset", "load_dataset"]
