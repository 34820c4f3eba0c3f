"""Conditioning slots and their null value (the contract shared by conditioners and guidance).

A condition is a dict of batch-first tensors keyed by the U-Net's slots: "vector" [B, Dv],
"tokens" [B, L, Dt] with "tokens_mask" [B, L] (True = keep), "channels" [B, Cc, H, W].
The null ("unconditional") value of every slot is zeros, with an all-False token mask; a
model trained with condition dropout learns it as ∅ (Ho & Salimans 2022, §3.2).
A condition may also carry "labels" [B] int64 (class indices): the net never sees them
(`net_cond` drops them), classifier guidance and judged accuracy read them.
"""

from __future__ import annotations

from collections.abc import Sequence

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


CONDITIONERS = Registry("conditioner")


class Conditioner:
    """Turns class labels (training) or user requests (sampling) into a Cond for the net's slots."""

    kind = "none"

    def __init__(self, p_uncond: float = 0.1):
        if not 0.0 <= float(p_uncond) <= 1.0:
            raise UsageError(f"conditioner p_uncond must be in [0, 1], got {p_uncond!r}")
        self.p_uncond = float(p_uncond)

    def net_options(self) -> dict[str, int]:
        """Slot sizes for the net factory (cond_vector_dim, cond_token_dim, ...)."""
        raise NotImplementedError

    def from_labels(self, labels: Tensor, generator: torch.Generator | None = None) -> Cond:
        """The training condition of items with class `labels` [B]."""
        raise NotImplementedError

    def for_training(
        self, x0: Tensor, labels: Tensor | None, generator: torch.Generator | None = None
    ) -> Cond:
        """The training condition of a batch x0 [B, ...] with `labels` [B] (or None)."""
        return self.from_labels(labels, generator)


@CONDITIONERS.register("class")
class ClassConditioner(Conditioner):
    """A class label as a one-hot vector, projected and added to the noise embedding (ADM §3)."""

    kind = "class"

    def __init__(self, *, num_classes: int, p_uncond: float = 0.1):
        super().__init__(p_uncond)
        if not isinstance(num_classes, int) or num_classes < 2:
            raise UsageError(
                f"class conditioner num_classes must be an integer >= 2, got {num_classes!r}"
            )
        self.num_classes = num_classes

    def net_options(self) -> dict[str, int]:
        return {"cond_vector_dim": self.num_classes}

    def from_classes(self, labels: Tensor) -> Cond:
        """{"vector": one-hot [B, K], "labels": [B]}; a class outside 0..K−1 is a UsageError."""
        labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            bad = labels[(labels < 0) | (labels >= self.num_classes)][0].item()
            raise UsageError(
                f"class {bad} is outside this model's classes 0..{self.num_classes - 1}; "
                "pass a class in that range"
            )
        vector = torch.nn.functional.one_hot(labels, self.num_classes).float()  # [B, K]
        return {"vector": vector, "labels": labels}

    def from_labels(self, labels: Tensor, generator: torch.Generator | None = None) -> Cond:
        return self.from_classes(labels)


@CONDITIONERS.register("text")
class TextConditioner(Conditioner):
    """A caption through a frozen text encoder: token states for cross-attention plus the pooled
    vector added to the noise embedding (GLIDE, Nichol et al. 2022 §2.3; Imagen §2.1)."""

    kind = "text"

    def __init__(self, *, encoder: str = "minilm", p_uncond: float = 0.1, dim: int = 0,
                 dataset: str = "default", class_names: list | None = None):  # fmt: skip
        super().__init__(p_uncond)
        self.encoder_name, self.dim = encoder, int(dim)
        self.dataset, self.class_names = dataset, list(class_names or [])
        self._caption_cache: Cond | None = None

    @property
    def encoder(self):
        from difflab.conditioning.text_encoder import load_text_encoder

        return load_text_encoder(self.encoder_name)

    def net_options(self) -> dict[str, int]:
        dim = self.dim or self.encoder.dim
        return {"cond_vector_dim": dim, "cond_token_dim": dim}

    def from_prompts(self, prompts: list[str]) -> Cond:
        """{"tokens" [B, L, D], "tokens_mask" [B, L], "vector" [B, D]} for user prompts."""
        enc = self.encoder.encode(list(prompts))
        return {"tokens": enc["tokens"], "tokens_mask": enc["tokens_mask"], "vector": enc["pooled"]}

    def captions(self) -> list[list[str]]:
        """Caption variants per class of the training data (difflab.captions)."""
        from difflab.conditioning.captions import captions

        if not self.class_names:
            raise UsageError(
                "text conditioning needs the training data's class names to caption it; "
                "use a labelled dataset (digits, fashion_mnist, a folder with class subfolders)"
            )
        return captions(self.dataset, self.class_names)

    def class_prompts(self, labels: Tensor, class_names: list[str] | None = None) -> list[str]:
        """The first caption template for each class in `labels` (for judged sampling)."""
        from difflab.conditioning.captions import captions

        table = captions(self.dataset, class_names) if class_names else self.captions()
        return [table[int(k)][0] for k in labels]

    def from_labels(self, labels: Tensor, generator: torch.Generator | None = None) -> Cond:
        """A random caption template per item, encoded once per (class, template) and cached."""
        if self._caption_cache is None:
            table = self.captions()
            flat = [c for per_class in table for c in per_class]
            enc = self.from_prompts(flat)
            K, T = len(table), len(table[0])
            self._caption_cache = {k: v.reshape(K, T, *v.shape[1:]) for k, v in enc.items()}
        cache = self._caption_cache
        T = cache["vector"].shape[1]
        pick = torch.randint(0, T, (len(labels),), generator=generator)  # [B] template index
        return {k: v[labels, pick] for k, v in cache.items()} | {"labels": labels}


def build_conditioner(spec: dict | None) -> Conditioner | None:
    """The conditioner of a model config's `cond` table ({} or None = unconditional)."""
    if not spec:
        return None
    return CONDITIONERS.build(spec)


def resolve_cond(spec: dict | None, dataset, dataset_name: str) -> dict:
    """Fill a `cond` table from the training data (class count, caption classes, encoder width),
    so the saved config builds the same net without the data; checks the data has labels."""
    if not spec:
        return {}
    spec = dict(spec)
    conditioner = CONDITIONERS.get(spec.get("name", ""))
    if getattr(conditioner, "kind", "") == "image":
        if dataset.kind != "image":
            raise UsageError(
                f"cond 'image' needs an image dataset but {dataset_name!r} holds points; "
                "use image data or drop cond"
            )
        spec["channels"] = dataset.shape[0]
        CONDITIONERS.build(spec)
        return spec
    if dataset.labels is None:
        raise UsageError(
            f"cond {spec['name']!r} needs class labels but dataset {dataset_name!r} has none; use a "
            "labelled dataset (digits, fashion_mnist, a folder with class subfolders) or drop cond"
        )
    if conditioner is ClassConditioner:
        spec.setdefault("num_classes", dataset.num_classes)
        if spec["num_classes"] < dataset.num_classes:
            raise UsageError(
                f"cond num_classes={spec['num_classes']} but the data has {dataset.num_classes} "
                "classes; raise num_classes or leave it out"
            )
    elif conditioner is TextConditioner:
        spec.setdefault("dataset", dataset_name)
        spec.setdefault("class_names", list(dataset.class_names or range(dataset.num_classes)))
        spec["class_names"] = [str(c) for c in spec["class_names"]]
        if not spec.get("dim"):
            spec["dim"] = CONDITIONERS.build(spec).encoder.dim
    CONDITIONERS.build(spec)  # options checked now, before any file is written
    return spec


def cycle(items: Sequence, n: int) -> list:
    """items repeated in order to length n (sample i asks for items[i mod len])."""
    return [items[i % len(items)] for i in range(n)]


def parse_classes(items: list[str] | None) -> list[int]:
    """CLI --class values (repeatable, or comma lists) → class indices; a non-integer is an error."""
    out = []
    for part in (p.strip() for item in items or [] for p in str(item).split(",")):
        try:
            out.append(int(part))
        except ValueError:
            raise UsageError(
                f"--class {part!r} is not a class index; pass integers, e.g. --class 3"
            ) from None
    return out


def sampling_cond(
    conditioner: Conditioner | None,
    n: int,
    *,
    classes: list[int] = (),
    prompts: list[str] = (),
    guided_by: Sequence[str] = (),
    images: Tensor | None = None,
    shape: tuple[int, ...] = (),
) -> tuple[Cond, dict[str, list]]:
    """The condition of n samples and what was asked for, per sample ({"classes": [...]} and/or
    {"prompts": [...]}): classes / prompts are cycled over the samples; with neither, a
    conditional model gets sample i → class i mod K so that a grid shows every class. An
    unconditional model takes classes for classifier guidance and prompts for text guidance
    (`guided_by` names the guidance terms). An image model takes `images` [n, C, h, w] (model
    space) for samples of `shape`."""
    kind = conditioner.kind if conditioner is not None else "none"
    if (images is not None) != (kind == "image"):
        raise UsageError(
            "this model is conditioned on images: pass --image FILE (full size or low resolution)"
            if kind == "image"
            else f"--image given but this model takes no image condition (cond: {kind}); drop it"
        )
    if kind == "image":
        if classes or prompts:
            raise UsageError("this model is conditioned on images only; drop --class/--prompt")
        return conditioner.from_images(images, tuple(shape)), {}
    if classes and kind == "none" and "classifier" not in guided_by:
        raise UsageError(
            "--class given but this model is unconditional; drop --class, add classifier "
            "guidance (--guidance classifier:ckpt=CLF.safetensors) or train with "
            'model.cond = {name = "class"}'
        )
    if prompts and kind != "text" and "text" not in guided_by:
        raise UsageError(
            f"--prompt given but this model has no text conditioning (cond: {kind}); drop "
            "--prompt, add text guidance (--guidance text:ckpt=ENCODER.safetensors) or train "
            'with model.cond = {name = "text"}'
        )
    if kind == "none":
        asked = {}
        if classes:
            asked["classes"] = cycle(classes, n)
        if prompts:
            asked["prompts"] = cycle(prompts, n)
        cond = {"labels": torch.tensor(asked["classes"])} if classes else {}
        return cond, asked
    if prompts and kind == "text":
        asked = cycle(prompts, n)
        return _encode_prompts(conditioner, asked), {"prompts": asked}
    num_classes = conditioner.num_classes if kind == "class" else len(conditioner.class_names)
    pool = list(classes) or list(range(num_classes))
    labels = torch.tensor(cycle(pool, n), dtype=torch.int64)  # [n]
    bad = [k for k in pool if not 0 <= k < num_classes]
    if bad:
        raise UsageError(
            f"class {bad[0]} is outside this model's classes 0..{num_classes - 1}; "
            "pass a class in that range"
        )
    if kind == "class":
        return conditioner.from_classes(labels), {"classes": labels.tolist()}
    asked = conditioner.class_prompts(labels)  # text model: the class's first caption
    cond = _encode_prompts(conditioner, asked) | {"labels": labels}
    return cond, {"classes": labels.tolist(), "prompts": asked}


def _encode_prompts(conditioner: TextConditioner, prompts: list[str]) -> Cond:
    """Encode each distinct prompt once and gather per sample: {key: [n, ...]}."""
    unique = sorted(set(prompts))
    table = conditioner.from_prompts(unique)
    index = torch.tensor([unique.index(p) for p in prompts])  # [n]
    return {key: value[index] for key, value in table.items()}
