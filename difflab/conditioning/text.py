"""Text conditioning: a caption through a frozen text encoder into the "tokens" and "vector"
slots (GLIDE, Nichol et al. 2022 §2.3; Imagen, Saharia et al. 2022 §2.1)."""

from __future__ import annotations

import torch
from torch import Tensor

from difflab.conditioning.base import (
    CONDITIONERS,
    Conditioner,
    ConditionRequest,
    class_labels,
    cycle,
    require_labels,
)
from difflab.core.errors import UsageError
from difflab.core.types import NULL_PREFIX, Cond

PROMPT_CHUNK = 256  # prompts per text-encoder call


@CONDITIONERS.register("text")
class TextConditioner(Conditioner):
    """A caption through a frozen text encoder: token states for cross-attention plus the pooled
    vector added to the noise embedding (GLIDE, Nichol et al. 2022 §2.3; Imagen §2.1)."""

    kind = "text"
    takes = ("classes", "prompts", "negative_prompts")
    summary = "is conditioned on text"

    def __init__(self, *, encoder: str = "minilm", p_uncond: float = 0.1, dim: int = 0,
                 dataset: str = "default", class_names: list | None = None,
                 null_prompt: str | None = None, allow_pickle: bool = False):  # fmt: skip
        """`null_prompt`: CFG's null condition is this prompt's encoding (Stable Diffusion: "")
        instead of zeros; `allow_pickle`: the encoder folder's pickled weights may be read."""
        super().__init__(p_uncond)
        self.encoder_name, self.dim = encoder, int(dim)
        self.null_prompt, self.allow_pickle = null_prompt, bool(allow_pickle)
        self.dataset, self.class_names = dataset, list(class_names or [])
        self._caption_cache: Cond | None = None

    @classmethod
    def resolve(cls, spec: dict, dataset, dataset_name: str) -> dict:
        """The data's name and class names (to caption it) and the encoder's width."""
        require_labels(spec, dataset, dataset_name)
        spec.setdefault("dataset", dataset_name)
        spec.setdefault("class_names", list(dataset.class_names or range(dataset.num_classes)))
        spec["class_names"] = [str(c) for c in spec["class_names"]]
        if not spec.get("dim"):
            spec["dim"] = CONDITIONERS.build(spec).encoder.dim
        return spec

    @property
    def encoder(self):
        from difflab.conditioning.text_encoder import load_text_encoder

        return load_text_encoder(self.encoder_name, self.allow_pickle)

    def net_options(self) -> dict[str, int]:
        dim = self.dim or self.encoder.dim
        return {"cond_vector_dim": dim, "cond_token_dim": dim}

    def from_prompts(self, prompts: list[str]) -> Cond:
        """{"tokens" [B, L, D], "tokens_mask" [B, L], "vector" [B, D]} for user prompts, encoded
        PROMPT_CHUNK at a time (a caption table of ~7k emoji captions peaks at 1.5, not 4 GB)."""
        prompts = list(prompts)
        chunks = range(0, max(len(prompts), 1), PROMPT_CHUNK)
        parts = [self.encoder.encode(prompts[i : i + PROMPT_CHUNK]) for i in chunks]
        enc = {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
        return {"tokens": enc["tokens"], "tokens_mask": enc["tokens_mask"], "vector": enc["pooled"]}

    def encode_prompts(self, prompts: list[str]) -> Cond:
        """from_prompts encoding each distinct prompt once, gathered per sample: {key: [n, ...]}."""
        unique = sorted(set(prompts))
        table = self.from_prompts(unique)
        index = torch.tensor([unique.index(p) for p in prompts])  # [n]
        return {key: value[index] for key, value in table.items()}

    def captions(self) -> list[list[str]]:
        """Caption variants per class of the training data (difflab.captions)."""
        from difflab.conditioning.captions import captions

        if not self.class_names:
            raise UsageError(
                "text conditioning needs the training data's class names to caption it; "
                "use a labelled dataset (digits, fashion_mnist, emoji, a folder with class "
                "subfolders)"
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

    def build(self, request: ConditionRequest) -> tuple[Cond, dict[str, list]]:
        """The request's prompts cycled; without prompts, each class's first caption (classes
        cycled, or every class in turn). Classes always ride along as "labels"."""
        asked: dict[str, list] = {}
        if not request.prompts and self.null_prompt is not None and not self.class_names:
            raise UsageError("this model is conditioned on text; pass `prompts`")
        if not request.prompts and not self.class_names:
            self.captions()  # the "needs the training data's class names" UsageError
        if request.classes or not request.prompts:
            labels = class_labels(request, len(self.class_names))  # [n]
            asked["classes"] = labels.tolist()
        prompts = cycle(list(request.prompts), request.n) if request.prompts else None
        asked["prompts"] = prompts or self.class_prompts(labels)
        cond = self.encode_prompts(asked["prompts"])
        negative = list(request.negative_prompts) or (
            [] if self.null_prompt is None else [self.null_prompt]
        )
        if negative:  # CFG's null condition: the negative prompt's encoding
            negative = cycle(negative, request.n)
            cond |= {NULL_PREFIX + k: v for k, v in self.encode_prompts(negative).items()}
        if request.negative_prompts:
            asked["negative_prompts"] = negative
        if "classes" in asked:
            cond["labels"] = labels
        return cond, asked
