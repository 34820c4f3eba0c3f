"""Guidance: DenoiseFn wrappers chained from specs (CFG, classifier, semantic, thresholds)."""

from difflab.guidance import noise_aware, semantic  # noqa: F401  (register their terms)
from difflab.guidance.chain import GUIDANCES, build_guidance, parse_guidance

__all__ = ["GUIDANCES", "build_guidance", "parse_guidance"]
