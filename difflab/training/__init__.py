"""Training: the loop, losses and σ densities, EMA, resume state, DDP, noise-aware nets."""

from difflab.training import importance  # noqa: F401  (registers the "importance" density)
