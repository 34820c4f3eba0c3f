"""Files: atomic safetensors checkpoints, model loading, noise-aware nets."""
