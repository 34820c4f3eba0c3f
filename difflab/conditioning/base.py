"""Conditioning slots, their null value, and the Conditioner contract (shared with guidance).

A condition is a dict of batch-first tensors keyed by the U-Net's slots: "vector" [B, Dv],
"tokens" [B, L, Dt] with "tokens_mask" [B, L] (True = keep), "channels" [B, Cc, H, W].
The null ("unconditional") value of every slot is zeros, with an all-False token mask; a
model trained with condition dropout learns it as ∅ (Ho & Salimans 2022, §3.2).
A condition may also carry "labels" [B] int64 (class indices): the net never sees them
(`net_cond` drops them), classifier guidance and judged accuracy read them.

Each conditioner builds its slots from a `ConditionRequest` (`Conditioner.build`), declares the
request inputs it takes, and fills its config from the training data (`Conditioner.resolve`);
`condition` checks a request against the conditioner in one place, whatever the conditioner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from difflab.core.errors import UsageError
from difflab.core.registry import Registry
from difflab.core.types import NET_SLOTS, Cond, null_cond


def drop(cond: Cond, p: float, generator: torch.Generator) -> Cond:
    """Replace each sample's condition by the null one with probability p (Ho & Salimans 2022,
    Algorithm 1); the mask is drawn from `generator` even when p is 0 or 1 (resumable RNG)."""
    if not cond:
        return cond
    batch = len(next(iter(cond.values())))
    keep = torch.rand(batch, generator=generator) >= p  # [B] True = keep the condition
    null = null_cond(cond)
    out = dict(cond)
    for k in NET_SLOTS:
        if k in cond:
            mask = keep.reshape(-1, *([1] * (cond[k].ndim - 1)))
            out[k] = torch.where(mask, cond[k], null[k])
    return out


def cycle(items: Sequence, n: int) -> list:
    """items repeated in order to length n (sample i asks for items[i mod len])."""
    return [items[i % len(items)] for i in range(n)]


CONDITIONERS = Registry("conditioner")


@dataclass(frozen=True)
class Input:
    """A request input: what a model lacking it is missing, and who else may read it."""

    lacks: str  # "this model <lacks>"
    cond: str  # the conditioner that takes it (for the fix: train with model.cond = ...)
    guidance: str | None = None  # a guidance term that reads it by itself
    ckpt: str = ""  # that term's checkpoint, for the fix
    side: str | None = None  # the side-information key it rides along in (never a net slot)


INPUTS = {
    "classes": Input(
        "takes no class condition", "class", "classifier", "CLF.safetensors", "labels"
    ),
    "prompts": Input("has no text conditioning", "text", "text", "ENCODER.safetensors"),
    "images": Input("takes no image condition", "image"),
    "negative_prompts": Input("takes no negative prompt", "text"),
    "masks": Input("takes no inpainting mask", 'image", source = "masked'),
    "embeddings": Input("takes no image embeddings (not an unCLIP decoder)",
                        'embedding", clip = "clip.safetensors'),
}


@dataclass(frozen=True)
class ConditionRequest:
    """What the user asked n samples to be conditioned on; classes and prompts are cycled."""

    n: int
    classes: Sequence[int] = ()
    prompts: Sequence[str] = ()
    images: Tensor | None = None  # [n, C, h, w] model space (full size or 1/factor size)
    guided_by: Sequence[str] = ()  # names of the guidance terms
    image_shape: tuple[int, ...] = ()  # the samples' shape [C, H, W]
    negative_prompts: Sequence[str] = ()  # CFG's null condition per sample (cycled)
    masks: Tensor | None = None  # [n, 1, H, W] 1 = known pixel, 0 = to generate (inpainting)
    aug_level: float | None = None  # the image condition's augmentation level (None: default)
    aug_noise: bool = True  # False: the images already carry noise of aug_level (CDM truncated)
    seed: int = 0  # sample i's augmentation noise is drawn from seed + i
    embeddings: Tensor | None = None  # [n, D] image embeddings (unCLIP decoder; cycled)

    def given(self) -> list[str]:
        """The inputs the user gave, in INPUTS order."""
        return [f for f in INPUTS if getattr(self, f) is not None and len(getattr(self, f))]


class Conditioner:
    """Turns class labels (training) or a request (sampling) into a Cond for the net's slots."""

    kind = "none"  # the registry name (for display; behaviour comes from takes and build)
    takes: tuple[str, ...] = ()  # ConditionRequest inputs this conditioner turns into slots
    needs_user_input = False  # True: no condition without user input (no in-loop sampling)
    summary = "is unconditional"  # for messages: "... but the model <summary>; drop ..."

    def __init__(self, p_uncond: float = 0.1):
        if not 0.0 <= float(p_uncond) <= 1.0:
            raise UsageError(f"conditioner p_uncond must be in [0, 1], got {p_uncond!r}")
        self.p_uncond = float(p_uncond)

    @classmethod
    def resolve(cls, spec: dict, dataset, dataset_name: str) -> dict:
        """Fill the `cond` table `spec` from the training data (nothing to fill by default)."""
        return spec

    def net_options(self) -> dict[str, int]:
        """Slot sizes for the net factory (cond_vector_dim, cond_token_dim, ...)."""
        raise NotImplementedError

    def build(self, request: ConditionRequest) -> tuple[Cond, dict[str, list]]:
        """The condition of request.n samples and what each asked for (inputs in `takes` only)."""
        raise NotImplementedError

    def from_labels(self, labels: Tensor, generator: torch.Generator | None = None) -> Cond:
        """The training condition of items with class `labels` [B]."""
        raise NotImplementedError

    def for_training(
        self, x0: Tensor, labels: Tensor | None, generator: torch.Generator | None = None
    ) -> Cond:
        """The training condition of a batch x0 [B, ...] with `labels` [B] (or None)."""
        return self.from_labels(labels, generator)


class Unconditional(Conditioner):
    """The conditioner of a model without `cond`: builds no slots."""

    def __init__(self):
        super().__init__(p_uncond=0.0)

    def net_options(self) -> dict[str, int]:
        return {}

    def build(self, request: ConditionRequest) -> tuple[Cond, dict[str, list]]:
        return {}, {}


def condition(
    conditioner: Conditioner | None, request: ConditionRequest
) -> tuple[Cond, dict[str, list]]:
    """The condition of request.n samples and what each asked for ({"classes": [...], ...}).

    An input the conditioner does not take is accepted only when a guidance term reads it
    (classes ride along as "labels" for classifier guidance, prompts for text guidance)."""
    conditioner = conditioner or Unconditional()
    extra = [f for f in request.given() if f not in conditioner.takes]
    for field in extra:
        need = INPUTS[field]
        if need.guidance is None or need.guidance not in request.guided_by:
            fix = f"drop `{field}`"
            if need.guidance:
                fix += (f", add {need.guidance} guidance "
                        f"(`guidance=\"{need.guidance}:ckpt={need.ckpt}\"`)")  # fmt: skip
            raise UsageError(
                f"`{field}` given but this model {need.lacks}: the model {conditioner.summary}; "
                f'{fix} or train with model.cond = {{name = "{need.cond}"}}'
            )
    if request.aug_level and not hasattr(conditioner, "check_level"):
        raise UsageError(
            f"`aug_level` given but this model {conditioner.summary} (no augmented image "
            "condition); drop `aug_level`"
        )
    cond, asked = conditioner.build(request)
    for field in extra:
        asked[field] = cycle(list(getattr(request, field)), request.n)
        if INPUTS[field].side:
            cond[INPUTS[field].side] = torch.tensor(asked[field], dtype=torch.int64)  # [n]
    return cond, asked


def sampling_cond(
    conditioner: Conditioner | None,
    n: int,
    *,
    classes: list[int] = (),
    prompts: list[str] = (),
    guided_by: Sequence[str] = (),
    images: Tensor | None = None,
    shape: tuple[int, ...] = (),
    negative_prompts: Sequence[str] = (),
    masks: Tensor | None = None,
    aug_level: float | None = None,
    aug_noise: bool = True,
    seed: int = 0,
    embeddings: Tensor | None = None,
) -> tuple[Cond, dict[str, list]]:
    """`condition` of a ConditionRequest made of these arguments (the inference entry point)."""
    request = ConditionRequest(n, tuple(classes), tuple(prompts), images, tuple(guided_by),
                               tuple(shape), tuple(negative_prompts), masks, aug_level,
                               aug_noise, seed, embeddings)  # fmt: skip
    return condition(conditioner, request)


def class_labels(request: ConditionRequest, num_classes: int) -> Tensor:
    """Sample i's class [n]: the request's classes cycled, or i mod K so a grid shows every
    class; a class outside 0..K−1 is a UsageError."""
    pool = list(request.classes) or list(range(num_classes))
    bad = [k for k in pool if not 0 <= k < num_classes]
    if bad:
        raise UsageError(
            f"class {bad[0]} is outside this model's classes 0..{num_classes - 1}; "
            "pass a class in that range"
        )
    return torch.tensor(cycle(pool, request.n), dtype=torch.int64)  # [n]


def require_labels(spec: dict, dataset, dataset_name: str) -> None:
    """UsageError unless the training data has class labels (for `Conditioner.resolve`)."""
    if dataset.labels is None:
        raise UsageError(
            f"cond {spec['name']!r} needs class labels but dataset {dataset_name!r} has none; use a "
            "labelled dataset (digits, fashion_mnist, a folder with class subfolders) or drop cond"
        )


def conditioner_class(spec: dict | None) -> type[Conditioner]:
    """The class a model config's `cond` table names (Unconditional for {} or None)."""
    if not spec:
        return Unconditional
    if "name" not in spec:
        CONDITIONERS.build(spec)  # the registry's "has no 'name'" UsageError
    return CONDITIONERS.get(spec["name"])


def build_conditioner(spec: dict | None) -> Conditioner | None:
    """The conditioner of a model config's `cond` table ({} or None = unconditional)."""
    if not spec:
        return None
    return CONDITIONERS.build(spec)


def resolve_cond(spec: dict | None, dataset, dataset_name: str) -> dict:
    """Fill a `cond` table from the training data (each conditioner's `resolve`), so the saved
    config builds the same net without the data; options are checked before any file is written."""
    if not spec:
        return {}
    spec = conditioner_class(spec).resolve(dict(spec), dataset, dataset_name)
    CONDITIONERS.build(spec)
    return spec
