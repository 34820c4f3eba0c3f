"""Training objectives, one per file, registered in OBJECTIVES (train.loss names one)."""

from difflab.training.objectives import classification, contrastive, denoising, hybrid  # noqa: F401
from difflab.training.objectives.base import OBJECTIVES, Batch, Objective, build_objective

__all__ = ["OBJECTIVES", "Batch", "Objective", "build_objective"]
