"""Conditioners: labels, prompts and images → the network's condition slots."""

from difflab.conditioning import embedding, image, labels, text  # noqa: F401  (register them)
from difflab.conditioning.base import (
    CONDITIONERS,
    Conditioner,
    ConditionRequest,
    build_conditioner,
    condition,
)

__all__ = ["CONDITIONERS", "ConditionRequest", "Conditioner", "build_conditioner", "condition"]
