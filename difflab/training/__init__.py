"""Training: the one loop and its step engine, objectives, σ densities, EMA, resume state, DDP."""

from difflab.training import importance  # noqa: F401  (registers the "importance" density)
