"""A default recipe for a folder of the user's own images, sized to the data.

`folder_recipe(path)` looks at the images (count, size, gray or colour, class subfolders) and
returns a config table plus notes that say what was chosen and why (library code never prints;
the CLI prints the notes). The recipe is the one the digits demo uses well:

- EDM preconditioning and schedule (Karras et al. 2022, Table 1): D = c_skip·x + c_out·F with
  σ_data measured from the data, so the network's output is never amplified by σ (unlike
  ε-prediction, where an error δ in ε̂ is an error σ·δ in x̂0 at high σ);
- the log-normal σ density of training (Karras et al. 2022, Eq. 7 / Table 1), widened to
  P_std = 1.6 for short CPU budgets: with EDM's 1.2 only 3 % of training sees σ > 5, and after
  10 minutes D(x; σ) at σ ≥ 20 was biased by +0.2–0.4 in every channel on a folder of photo
  crops, which set each sample's brightness wrongly (sample mean +0.4 vs data −0.17); with 1.6
  (8 % above σ = 5) the sample mean and std matched the data's (bench/own_folders.py);
- a U-Net whose levels halve the image down to about 4×4, with attention at the levels of
  8×8 and below; a size the net cannot halve that often is resized to the nearest one it can;
- class subfolders → a class-conditional model with 10 % condition dropout for CFG;
- Heun's 2nd-order sampler with churn on the Karras σ grid from the schedule's σ_max (EDM
  Alg. 2): the churn re-noises the state, which corrects the errors of a briefly trained net.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from difflab.core.errors import UsageError
from difflab.core.imageio import uint8_to_pixels
from difflab.data.datasets import folder_images

P_STD = 1.6  # the log-normal σ density's spread (see the module docstring)
MIN_RESOLUTION = 4  # the U-Net halves the image down to about this size
MAX_LEVELS = 4  # resolution levels of the U-Net (channel_mult entries)
ATTENTION_MAX = 8  # self-attention at levels of this size and below
P_UNCOND = 0.1  # condition dropout for classifier-free guidance (Ho & Salimans 2022)


@dataclass
class Recipe:
    """A config table (`core.config` sections) and the notes that explain its choices."""

    config: dict
    notes: list[str] = field(default_factory=list)


def net_levels(size: int) -> int:
    """Resolution levels that halve `size` down to about MIN_RESOLUTION (at least 2)."""
    return max(2, min(MAX_LEVELS, int(math.log2(max(size, 1) / MIN_RESOLUTION)) + 1))


def net_size(size: int) -> tuple[int, int]:
    """(accepted size, levels): the nearest multiple of 2^(levels−1) to `size` (ties go down)."""
    levels = net_levels(size)
    factor = 2 ** (levels - 1)
    fitted = max(factor, factor * round(size / factor - 1e-9))
    return fitted, levels


def unet_spec(size: int) -> dict:
    """ADM U-Net sized to a `size`×`size` image (which `net_size` accepts)."""
    fitted, levels = net_size(size)
    if fitted != size:
        raise UsageError(f"size {size} is not accepted by the U-Net; use net_size(size)[0]")
    level_res = [size // 2**i for i in range(levels)]
    attention = [r for r in level_res[1:] if r <= ATTENTION_MAX] or [level_res[-1]]
    return {
        "name": "unet",
        "model_channels": 32 if size <= 32 else 64,
        "channel_mult": [1, 2] + [2] * (levels - 2),
        "num_res_blocks": 1 if size <= 32 else 2,
        "attention_resolutions": attention,
        "num_heads": 4,
        "dropout": 0.1,  # a few hundred images: regularise (EDM uses 0.13 on CIFAR-10)
    }


def scan_folder(path: str | Path) -> dict:
    """Facts about an image folder: files, sizes, channels and class subfolders."""
    from PIL import Image

    root, files = folder_images(path)
    sizes, colour = [], False
    for f in files:
        try:
            with Image.open(f) as im:
                sizes.append(im.size)
                colour = colour or _is_colour(im)
        except (OSError, SyntaxError, ValueError) as e:
            raise UsageError(f"cannot read image {f} ({e}); remove or replace the file") from None
    top = {f.relative_to(root).parts[0] for f in files if len(f.relative_to(root).parts) > 1}
    return {
        "files": files,
        "sizes": sizes,  # (W, H) per file
        "channels": 3 if colour else 1,
        "classes": sorted(top) if len(top) >= 2 else [],
    }


def _is_colour(im) -> bool:
    """True unless the image is gray: a gray mode, or RGB with R = G = B everywhere."""
    if im.mode in ("1", "L", "LA", "I", "I;16", "F"):
        return False
    rgb = np.asarray(im.convert("RGB"), dtype=np.int16)  # [H, W, 3]
    return bool((rgb[..., 0] != rgb[..., 1]).any() or (rgb[..., 1] != rgb[..., 2]).any())


def folder_recipe(path: str | Path) -> Recipe:
    """The default config for training on the image folder at `path` (see the module doc)."""
    from difflab.data.datasets import load_dataset

    facts = scan_folder(path)
    files, sizes, channels, classes = (facts[k] for k in ("files", "sizes", "channels", "classes"))
    native = min(min(w, h) for w, h in sizes)
    size, levels = net_size(native)
    same = len(set(sizes)) == 1 and sizes[0][0] == sizes[0][1]
    kind = "colour" if channels == 3 else "grayscale"
    found = f"{len(files)} {kind} images"
    found += f", {sizes[0][0]}×{sizes[0][1]}" if len(set(sizes)) == 1 else ", sizes vary"
    found += f", {len(classes)} classes (subfolders)" if classes else ", no class subfolders"
    notes = [f"found {found} in {path}"]
    if not (same and size == native):
        why = f"the U-Net's {levels} levels need a multiple of {2 ** (levels - 1)}"
        how = "shorter side resized to" if not same else "resized to"
        notes.append(
            f"images {how} {size}×{size} (centre-cropped to a square)"
            + (f": {why}" if size != native else "")
        )
    dataset = {"name": "folder", "path": str(Path(path).resolve()), "channels": channels,
               "size": size}  # fmt: skip
    x = uint8_to_pixels(load_dataset(dataset).x)  # [N, C, H, W] in [-1, 1]
    sigma_data = round(float(x.std()), 3)
    notes.append(
        f"EDM preconditioning, σ_data = {sigma_data} (the std of the images in [-1, 1]); "
        f"sampler heun with churn on the Karras σ grid from σ_max = 80"
    )
    net = unet_spec(size)
    notes.append(
        f"U-Net levels {[size // 2**i for i in range(levels)]}, attention at "
        f"{net['attention_resolutions']}"
    )
    if classes:
        notes.append(f"class-conditional on {len(classes)} classes, {P_UNCOND:.0%} dropped for CFG")
    config = {
        "data": {"dataset": dataset, "hflip": False},
        "model": {
            "net": net,
            "schedule": {"name": "edm"},
            "parameterization": "edm",
            "sigma_data": sigma_data,
            "cond": {"name": "class", "p_uncond": P_UNCOND} if classes else {},
        },
        "train": {
            "steps": 20000,
            "max_seconds": 600.0,  # whichever comes first: 10 minutes on a CPU
            "batch_size": min(64, len(files)),
            "lr": 2e-3 if size <= 16 else 1e-3,
            "warmup": 100,
            "ema_decay": 0.995,  # a short run: average the last ~200 steps
            "sigma_density": {"name": "lognormal", "p_mean": -0.6, "p_std": P_STD},
            "log_every": 25,
            "ckpt_every": 500,
        },
        "sample": {
            "sampler": {"name": "heun", "s_churn": 40.0},
            "steps": 32,
            "discretization": {"name": "karras"},
            "guidance": [],
        },
    }
    return Recipe(config, notes)
