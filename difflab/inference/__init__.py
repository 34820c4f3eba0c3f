"""Inference: the Pipeline, seeded generation and requests (what to sample, how to guide it)."""
