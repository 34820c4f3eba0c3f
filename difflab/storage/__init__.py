"""Files: atomic safetensors checkpoints, checkpoint formats, model loading, noise-aware nets."""
