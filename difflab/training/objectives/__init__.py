"""Training objectives, one per file, registered in OBJECTIVES (train.loss names one)."""

from difflab.training.objectives import (  # noqa: F401  (register the objectives)
    autoencoder,
    classification,
    consistency,
    contrastive,
    denoising,
    hybrid,
    prior,
    progressive,
    simclr,
)
from difflab.training.objectives.base import OBJECTIVES, Batch, Objective, build_objective

__all__ = ["OBJECTIVES", "Batch", "Objective", "build_objective"]
