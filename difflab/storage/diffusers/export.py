"""`export_diffusers`: the parts of a difflab model that map onto a diffusers pipeline folder.

The schedule and parameterization become `scheduler/scheduler_config.json` (DDPM-family schedules
with ε / v / x0 prediction). The network does not map: difflab's U-Net (nets/unet.py) has its own
block layout, conditioning slots and noise embedding, none of which UNet2DModel's config can
describe, so its weights have no diffusers key names; difflab's models have no AutoencoderKL codec.
"""

from __future__ import annotations

import json
from pathlib import Path

from difflab.storage.checkpoint import atomic_write
from difflab.storage.diffusers.scheduler import export_scheduler
from difflab.storage.formats import load_model

NOT_EXPORTED = (
    "unet: difflab's network layout has no diffusers model class (weights not exported)",
    "codec / conditioner: no AutoencoderKL or CLIP text encoder to export",
)


def export_diffusers(path: str | Path, out: str | Path) -> tuple[list[Path], list[str]]:
    """(files written under `out`, the parts not exported and why) for the model at `path`."""
    _, config, _ = load_model(path)
    scheduler = export_scheduler(config["model"], config.get("sample", {}))
    target = Path(out) / "scheduler" / "scheduler_config.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(scheduler, indent=2) + "\n"
    atomic_write(target, lambda tmp: Path(tmp).write_text(text))
    return [target], list(NOT_EXPORTED)
