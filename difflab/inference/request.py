"""What to sample: each sample's condition and the guidance chain, from a user's request.

One function shared by `difflab sample`, `difflab eval`, the in-loop FD and the benches, so each
samples the same way: the config's default guidance (`sample.guidance`, e.g. the x̂0 clipping an
ε-prediction cosine model needs) follows the user's terms, so thresholds stay last; a default the
user names again is replaced by the user's options.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from difflab.codecs.base import Codec
from difflab.conditioning.base import cycle, sampling_cond
from difflab.conditioning.image import as_batch, read_images
from difflab.conditioning.masks import read_masks
from difflab.core.types import Cond
from difflab.storage.codecs import build_codec


def request(
    denoiser,
    config: dict,
    n: int,
    *,
    guidance: Sequence[str | dict] = (),
    classes: Sequence[int] = (),
    prompts: Sequence[str] = (),
    images: Sequence[str] | Tensor = (),
    device: str | torch.device = "cpu",
    codec: Codec | None = None,
    negative_prompts: Sequence[str] = (),
    masks: Sequence[str] | Tensor = (),
    aug_level: float | None = None,
    aug_noise: bool = True,
    seed: int = 0,
    embeddings: Tensor | None = None,
) -> tuple[Cond, object, dict]:
    """(cond for n samples, guidance chain for `generate`, what each sample asked for).

    Conditioning images (files, or a tensor of uint8 images / pixels in [-1, 1]) are read as
    pixels of the model's image shape and encoded by the codec (default: the config's); the
    conditioner and the guidance terms see model space. `masks` (files: white = known, or a
    tensor in {0, 1}), `aug_level`, `aug_noise` and `seed` go to the image conditioner;
    `embeddings` [k, D] to an unCLIP decoder's embedding conditioner.
    """
    from difflab.guidance.chain import build_guidance, parse_guidance

    def parse(items):
        return [s for g in items for s in (parse_guidance(g) if isinstance(g, str) else [dict(g)])]

    specs = parse(guidance)
    named = {s["name"] for s in specs}
    specs += [
        s for s in parse(config.get("sample", {}).get("guidance", [])) if s["name"] not in named
    ]
    codec = codec or build_codec(config["model"].get("codec"))
    shape = codec.latent_shape(config["model"]["shape"])  # the net's shape
    x_images = x_masks = None
    files = not isinstance(images, Tensor)
    if not files or images:
        pixels = (read_images(list(images), tuple(config["model"]["shape"]), n) if files
                  else as_batch(images, n, "images"))  # [n, C, h, w]  # fmt: skip
        x_images = codec.encode(pixels.to(device))  # [n, *latent]
    if isinstance(masks, Tensor) or masks:
        x_masks = (as_batch(masks, n, "masks") if isinstance(masks, Tensor)
                   else read_masks(list(masks), n)).to(device)  # [n, 1, H, W]  # fmt: skip
    cond, asked = sampling_cond(
        getattr(denoiser, "conditioner", None), n, classes=list(classes), prompts=list(prompts),
        guided_by=[s["name"] for s in specs], images=x_images, shape=shape, masks=x_masks,
        aug_level=aug_level, aug_noise=aug_noise, seed=seed,
        negative_prompts=list(negative_prompts),
        embeddings=None if embeddings is None else embeddings.to(device),
    )  # fmt: skip
    if files and images:
        asked["images"] = cycle([str(p) for p in images], n)
    if not isinstance(masks, Tensor) and masks:
        asked["masks"] = cycle([str(p) for p in masks], n)
    if prompts:  # sample i is guided toward prompts[i mod len]: its index rides along in cond
        cond["prompt_index"] = torch.tensor(cycle(range(len(prompts)), n))  # [n]
    chain = build_guidance(specs, shape=shape, device=device, prompts=list(prompts), codec=codec)
    return cond, chain, asked | ({"guidance": specs} if specs else {})


