"""Files: atomic safetensors checkpoints, checkpoint formats, model loading, noise-aware nets."""

from difflab.storage import clip as _clip  # noqa: F401  (registers the "clip" image embedder)
from difflab.storage.diffusers import format as _diffusers  # noqa: F401  (registers "diffusers")
