"""Inference: seeded generation and requests (what to sample and how to guide it)."""
