"""Datasets (registered by name), loaders and splits."""

from difflab.data import embeddings, emoji, latents  # noqa: F401  (register the file datasets)
from difflab.data.datasets import DATASETS, Dataset, load_dataset

__all__ = ["DATASETS", "Dataset", "load_dataset"]
