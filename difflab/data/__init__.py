"""Datasets (registered by name), loaders and splits."""

from difflab.data.datasets import DATASETS, Dataset, load_dataset

__all__ = ["DATASETS", "Dataset", "load_dataset"]
