"""Conditioners: labels, prompts and images → the network's condition slots."""

from difflab.conditioning import image  # noqa: F401  (registers the image conditioner)
from difflab.conditioning.base import CONDITIONERS, Conditioner, build_conditioner

__all__ = ["CONDITIONERS", "Conditioner", "build_conditioner"]
