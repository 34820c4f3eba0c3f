"""Guidance: DenoiseFn wrappers chained from specs (CFG, classifier, semantic, thresholds)."""

from difflab.guidance import semantic  # noqa: F401  (registers content/structure/style/text)
from difflab.guidance.chain import GUIDANCES, build_guidance, parse_guidance

__all__ = ["GUIDANCES", "build_guidance", "parse_guidance"]
