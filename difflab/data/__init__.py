"""Datasets (registered by name), loaders and splits."""

from difflab.data import latents  # noqa: F401  (registers "latents": latent caches)
from difflab.data.datasets import DATASETS, Dataset, load_dataset

__all__ = ["DATASETS", "Dataset", "load_dataset"]
