"""Edits in a PNG's settings, and making them again from the init image.

An edit (SDEdit, RePaint inpainting, or images given to an image-conditional model such as a
trained inpainting or SR model) depends on an init image the PNG does not carry. Its settings
record that image's sha256 and shape (uint8 [C, H, W] as the edit saw it), the inpainting mask
(1 = keep, bit-packed, base64) and the edit's options, so `remake` re-makes the image bit for bit
from the same init image and checks that it is the same.
"""

from __future__ import annotations

import base64
import hashlib

import numpy as np
import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.imageio import uint8_to_pixels
from difflab.inference.edit import repaint_run, sdedit_run
from difflab.inference.edit_base import prepare
from difflab.inference.pipeline import Pipeline

KINDS = ("sdedit", "inpaint", "condition")  # SDEdit, RePaint, images to a conditional model
SAMPLE_OPTIONS = ("seed", "sampler", "steps", "discretization", "guidance", "classes", "prompts",
                  "negative_prompts")  # fmt: skip


def pixels_sha256(image: Tensor) -> str:
    """sha256 of a uint8 image [C, H, W] (its shape and bytes)."""
    arr = np.ascontiguousarray(image.numpy() if isinstance(image, Tensor) else image, np.uint8)
    return hashlib.sha256(str(list(arr.shape)).encode() + arr.tobytes()).hexdigest()


def pack_mask(keep: Tensor) -> str:
    """A 0/1 mask [H, W] (1 = keep) as base64 of its packed bits."""
    return base64.b64encode(np.packbits(keep.numpy().astype(bool).ravel())).decode()


def unpack_mask(text: str, h: int, w: int) -> Tensor:
    """`pack_mask`'s text → float mask [1, 1, H, W] of 0s and 1s."""
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), np.uint8))[: h * w]
    return torch.from_numpy(bits.reshape(1, 1, h, w).astype(np.float32))


def edit_record(kind: str, init: Tensor, keep: Tensor | None = None, **options) -> dict:
    """The `edit` settings of an image made from `init` uint8 [C, H, W] (and mask `keep`
    [H, W], 1 = keep); `options` are the edit's (strength, jump_length, resample, aug_level)."""
    if kind not in KINDS:
        raise UsageError(f"edit kind {kind!r} is unknown; choose one of: {', '.join(KINDS)}")
    record = {"kind": kind, "init_sha256": pixels_sha256(init), "init_shape": list(init.shape)}
    if keep is not None:
        record |= {"mask": pack_mask(keep), "mask_pixels": int((keep == 0).sum())}
    return record | {k: v for k, v in options.items() if v is not None}


def run_edit(pipe: Pipeline, edit: dict, init: Tensor, n: int, keep: Tensor | None = None,
             **options):  # fmt: skip
    """(uint8 images [n, C, H, W], settings, what each asked for) of edit `edit` (a record or
    its options) of `init` uint8 [C, H, W]; `options` as `edit_base.prepare` (callback too)."""
    kind = edit["kind"]
    if kind == "condition":
        samples = pipe.sample(n, images=init[None], masks=() if keep is None else keep,
                              aug_level=edit.get("aug_level"), **options)  # fmt: skip
        return pipe.to_images(samples.x), samples.settings, samples.asked
    pixels = uint8_to_pixels(init[None]).expand(n, *init.shape)  # [n, C, H, W]
    run = prepare(pipe, n, **options)
    if kind == "sdedit":
        images = sdedit_run(run, pixels, edit["strength"])
    else:
        images = repaint_run(run, pixels, keep, jump_length=edit.get("jump_length", 1),
                             resample=edit.get("resample", 1))  # fmt: skip
    return images, run.settings, run.asked


def remake(pipe: Pipeline, meta: dict, init: Tensor, **kwargs) -> Tensor:
    """The uint8 images [n, C, H, W] of a PNG's settings `meta` with an edit, made again from
    `init` uint8 [C, H, W] (the image the edit started from; its sha256 is checked) with the
    `Pipeline.sample` arguments `kwargs` of `provenance.sample_arguments`."""
    edit = meta["edit"]
    if edit.get("kind") not in KINDS or "init_sha256" not in edit:
        raise UsageError(
            f"the PNG's edit {edit.get('kind')!r} records no init image to re-make it from; "
            "re-make it in the web UI"
        )
    shape = tuple(edit["init_shape"])
    if tuple(init.shape) != shape or pixels_sha256(init) != edit["init_sha256"]:
        raise UsageError(
            f"`images` is not the image the edit started from ({list(init.shape)}, sha256 "
            f"{pixels_sha256(init)[:12]}… ≠ {list(shape)}, {edit['init_sha256'][:12]}…); pass "
            "that image (the web UI saves it as inputs/init.png beside the result)"
        )
    keep = unpack_mask(edit["mask"], *pipe.image_shape[1:]) if "mask" in edit else None
    options = {k: v for k, v in kwargs.items() if k in SAMPLE_OPTIONS or k == "batch_size"}
    return run_edit(pipe, edit, init, int(kwargs.get("n", 1)), keep, **options)[0]
