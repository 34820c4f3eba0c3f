"""The names in a sample set folder (`difflab sample --out DIR`), shared by its writer and readers:
images/NNNNNN.png, figures beside them, and a marker while it is being written."""

from __future__ import annotations

import re

SAMPLE_NAME = re.compile(r"\d+\.png")  # one sample: core.imageio.save_images writes {i:06d}.png
INCOMPLETE = "INCOMPLETE"  # present until every sample is written
FIGURES = ("grid", "samples", "loss", "trajectory")  # stems of the figures written beside samples
