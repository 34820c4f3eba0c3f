"""A saved CLIP text encoder + tokenizer (Stable-Diffusion pipeline folder) as a conditioner.

The prompt's CLIP token states, padded to the tokenizer's max length and unmasked, go to the
U-Net's cross-attention through the "tokens" slot, as in Stable Diffusion (Rombach et al. 2022,
§3.3); the negative prompt's (default: the empty prompt's) states ride along as "null_tokens",
the null condition classifier-free guidance uses (core.types.null_cond).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import Tensor

from difflab.conditioning.base import CONDITIONERS, Conditioner, ConditionRequest, cycle
from difflab.core.errors import UsageError
from difflab.core.foreign import foreign_module, read_json, read_weights, require_file, weight_file
from difflab.core.types import Cond

STEMS = ("model", "pytorch_model")
TOKENIZER_FILES = ("vocab.json", "merges.txt")


@functools.lru_cache(maxsize=2)
def load_clip(path: str, allow_pickle: bool):
    """(tokenizer, CLIPTextModel in eval mode) of a pipeline folder, from local files only."""
    root = Path(path)
    if not (root / "tokenizer" / "tokenizer.json").is_file():  # else the slow files
        for name in TOKENIZER_FILES:
            require_file(root / "tokenizer", name, "CLIP tokenizer")
    config = read_json(root / "text_encoder", "config.json", "CLIP text encoder")
    weights = weight_file(root / "text_encoder", STEMS, allow_pickle)
    transformers = foreign_module("transformers")
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(root / "tokenizer"),
                                                           local_files_only=True)  # fmt: skip
    model = transformers.CLIPTextModel(transformers.CLIPTextConfig.from_dict(config))
    state = read_weights(weights)
    model.load_state_dict(state, strict=False)  # position_ids: a buffer some versions save
    missing = set(model.state_dict()) - set(state) - {"text_model.embeddings.position_ids"}
    if missing:
        raise UsageError(
            f"{weights} lacks {sorted(missing)[0]} (and {len(missing) - 1} more); it does not fit "
            "its config.json: restore the saved text_encoder folder"
        )
    return tokenizer, model.eval().requires_grad_(False)


@CONDITIONERS.register("diffusers_clip")
class DiffusersClip(Conditioner):
    """Prompts through the pipeline's CLIP text encoder (Stable Diffusion's conditioning)."""

    kind = "diffusers_clip"
    takes = ("prompts", "negative_prompts")
    needs_user_input = True
    summary = "is conditioned on text (a CLIP text encoder)"

    def __init__(self, *, path: str, dim: int, allow_pickle: bool = False):
        super().__init__(p_uncond=0.0)
        self.path, self.dim, self.allow_pickle = str(path), int(dim), bool(allow_pickle)

    def net_options(self) -> dict[str, int]:
        return {"cond_token_dim": self.dim}

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> Tensor:
        """CLIP last hidden states [B, L, D] of `prompts` (L = the tokenizer's max length)."""
        tokenizer, model = load_clip(self.path, self.allow_pickle)
        batch = tokenizer(list(prompts), padding="max_length", truncation=True,
                          max_length=tokenizer.model_max_length, return_tensors="pt")  # fmt: skip
        mask = batch["attention_mask"] if getattr(model.config, "use_attention_mask", 0) else None
        return model(batch["input_ids"], attention_mask=mask)[0].float()  # [B, L, D]

    def encode_each(self, prompts: list[str]) -> Tensor:
        """`encode` of each distinct prompt once, gathered per item: [n, L, D]."""
        unique = sorted(set(prompts))
        index = torch.tensor([unique.index(p) for p in prompts])  # [n]
        return self.encode(unique)[index]

    def build(self, request: ConditionRequest) -> tuple[Cond, dict[str, list]]:
        """{"tokens", "null_tokens"} [n, L, D]: prompts and negative prompts cycled ("" when none)."""
        if not request.prompts:
            raise UsageError("this model is conditioned on text; pass `prompts`")
        prompts = cycle(list(request.prompts), request.n)
        negative = cycle(list(request.negative_prompts) or [""], request.n)
        asked = {"prompts": prompts}
        if request.negative_prompts:
            asked["negative_prompts"] = negative
        return {
            "tokens": self.encode_each(prompts),
            "null_tokens": self.encode_each(negative),
        }, asked

    def from_labels(self, labels: Tensor, generator: torch.Generator | None = None) -> Cond:
        raise UsageError("a diffusers pipeline folder is for sampling; difflab does not train it")
