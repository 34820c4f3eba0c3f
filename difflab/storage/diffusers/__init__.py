"""diffusers model and pipeline folders as a checkpoint format (format: detect / read /
translate; scheduler: scheduler config ↔ schedule, parameterization, sampling defaults)."""
