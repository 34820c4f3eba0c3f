"""Files: atomic safetensors checkpoints, checkpoint formats, model loading, noise-aware nets."""

from difflab.storage.diffusers import format as _diffusers  # noqa: F401  (registers "diffusers")
